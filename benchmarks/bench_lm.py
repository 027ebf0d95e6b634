"""Language models: time from a setting change to a new perplexity, and memory across many plans.

1. **tiny-gpt** (the shipped sample), 8 sequences x 256 tokens of the held-out text: with a
   4-bit group-128 plan evaluated once (the app's state), change *one* layer's bits (the
   per-layer table) and time `Engine.evaluate` to the new perplexity, for every layer in turn.
   Budget: under 0.5 s each. Reference in the same run: the same plan evaluated by a fresh engine
   (every layer compressed, float logits computed), i.e. what a change costs without caches.
2. **A random-init GPT-2-size model** (12 blocks, width 768, 50,257-token vocabulary: 124 M
   parameters; built from its config, nothing downloaded), 8 x 256 tokens: 20 whole-plan changes
   (bits, granularity, group size, scale type), each timed, with resident memory after each. The
   per-layer cache (512 MiB) and the logits cache (1 GiB: an LM's logits are sequences x tokens x
   vocabulary, 411 MB here) are LRUs bounded in bytes, so memory may rise while they fill and
   must then stay flat.

Run: .venv/bin/python benchmarks/bench_lm.py [--plans 20] [--sequences 8] [--seq-len 256] [--skip-big]
Note the load average it prints: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_memory import MIB, peak_rss_bytes, rss_bytes  # noqa: E402

from lightviz.core.engine import LOGITS_CACHE_BYTES, Engine  # noqa: E402
from lightviz.core.evaldata import subset  # noqa: E402
from lightviz.core.specs import LayerConfig, Plan, QuantSpec  # noqa: E402
from lightviz.core.task import with_float_embeddings  # noqa: E402
from lightviz.io.hf import ByteTokenizer, lm_bundle, random_causal_lm  # noqa: E402
from lightviz.io.text import sample_text_data  # noqa: E402
from lightviz.io.zoo import load_model  # noqa: E402

W4G128 = QuantSpec(bits=4, scheme="asymmetric", granularity="group", group_size=128, scale_dtype="float16")


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs"


def one_layer_changes(sequences: int, seq_len: int) -> None:
    bundle = load_model("tiny-gpt")
    data = subset(sample_text_data(bundle, seq_len), sequences)
    engine = Engine(bundle.model)
    base = with_float_embeddings(Plan(default=LayerConfig(quant=W4G128)), engine.layers)
    engine.evaluate(base, data)  # the app's state before the change
    names = [layer.name for layer in engine.layers if not base.config_for(layer.name).keep_float]
    times, cpu, perplexities = [], [], []
    for name in names:
        plan = base.with_override(name, LayerConfig(quant=QuantSpec(bits=8, granularity="channel")))
        start, start_cpu = time.perf_counter(), time.process_time()
        perplexities.append(engine.evaluate(plan, data).perplexity)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    cold = []
    for _ in range(3):
        start = time.perf_counter()
        Engine(bundle.model).evaluate(base, data)
        cold.append(time.perf_counter() - start)
    median, reference = statistics.median(times), statistics.median(cold)
    print(f"tiny-gpt, {sequences} sequences x {seq_len} tokens ({load()}):")
    print(f"  one layer 4-bit g128 -> 8-bit, new perplexity: median {median * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
          f"over {len(times)} layers (budget 500 ms: {'met' if max(times) < 0.5 else 'MISSED'})")
    print(f"  CPU time of a change (all threads): median {statistics.median(cpu) * 1000:.0f} ms "
          "(on a busy machine wall time is CPU time stretched by the load)")
    print(f"  reference, a fresh engine (all layers + float logits): median {reference * 1000:.0f} ms; "
          f"ratio {median / reference:.2f}")
    print(f"  perplexities seen: {min(perplexities):.4f} .. {max(perplexities):.4f}")


def big_model_plans(n_plans: int, sequences: int, seq_len: int) -> None:
    print(f"\nrandom-init GPT-2-size model ({load()}); start RSS {rss_bytes() / MIB:.0f} MiB")
    start = time.perf_counter()
    model = random_causal_lm("gpt2", vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    bundle = lm_bundle(model, ByteTokenizer(), "gpt2-size-random", "user", "random GPT-2 size", "")
    params = sum(p.numel() for p in model.parameters())
    print(f"  built in {time.perf_counter() - start:.1f} s: {params / 1e6:.1f} M parameters; RSS {rss_bytes() / MIB:.0f} MiB")
    data = subset(sample_text_data(bundle, seq_len), sequences)  # bytes are valid GPT-2 token ids
    engine = Engine(model)
    float_plan = Plan(default=LayerConfig(keep_float=True))
    start = time.perf_counter()
    engine.evaluate(float_plan, data)
    print(f"  float evaluation ({sequences} x {seq_len} tokens): {time.perf_counter() - start:.1f} s; "
          f"RSS {rss_bytes() / MIB:.0f} MiB; cache bounds {engine.cache_bytes / MIB:.0f} MiB layers, "
          f"{LOGITS_CACHE_BYTES / MIB:.0f} MiB logits")
    baseline = rss_bytes()
    settings = [(bits, gran, group, scale) for bits in (8, 4, 3, 2, 6)
                for gran, group, scale in (("channel", 128, "float32"), ("group", 128, "float16"),
                                           ("group", 64, "float16"), ("group", 32, "bfloat16"))]
    times, cpu, rss = [], [], []
    print(f"  {'plan':>4} {'seconds':>8} {'CPU s':>6} {'RSS MiB':>8} {'+MiB':>6} {'perplexity':>11}  setting")
    for i, (bits, gran, group, scale) in enumerate(settings[:n_plans], 1):
        quant = QuantSpec(bits=bits, scheme="asymmetric", granularity=gran, group_size=group, scale_dtype=scale)
        plan = with_float_embeddings(Plan(default=LayerConfig(quant=quant)), engine.layers)
        start, start_cpu = time.perf_counter(), time.process_time()
        result = engine.evaluate(plan, data)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        rss.append(rss_bytes())
        print(f"  {i:>4} {times[-1]:>8.2f} {cpu[-1]:>6.1f} {rss[-1] / MIB:>8.0f} {(rss[-1] - baseline) / MIB:>6.0f} "
              f"{result.perplexity:>11.1f}  {quant.label}")
    half = len(rss) // 2
    print(f"  median whole-plan change {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
          f"CPU time median {statistics.median(cpu):.1f} s ({load()})")
    print(f"  RSS: after float {baseline / MIB:.0f} MiB, last {rss[-1] / MIB:.0f} MiB, peak {peak_rss_bytes() / MIB:.0f} MiB; "
          f"growth over the second half {(rss[-1] - rss[half - 1]) / MIB:+.0f} MiB; layer cache "
          f"{engine._cached_bytes / MIB:.0f} MiB in {len(engine._cache)} entries, logits cache {len(engine._logits)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--skip-big", action="store_true", help="only the tiny-gpt part")
    args = parser.parse_args()
    one_layer_changes(args.sequences, args.seq_len)
    if not args.skip_big:
        big_model_plans(args.plans, args.sequences, args.seq_len)


if __name__ == "__main__":
    main()
