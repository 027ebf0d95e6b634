"""Memory and time of exploring many Plans on a user's resnet18, as the app's engine does it.

torchvision's resnet18 (11.7 M weights, random init) is saved as a user's .safetensors file,
loaded through lightviz.io.loading (the upload path), and one Engine (the app shares one per
model) then evaluates N different Plans, each on the same generated inputs: compress_layers +
evaluate, i.e. what one slider change costs. After every Plan it prints the current resident
memory (VmRSS) and the engine's cached bytes; at the end the peak (ru_maxrss) and the median
time per Plan change.

What "bounded" means here: the per-layer cache is an LRU capped at `engine.CACHE_BYTES`
(512 MiB by default), so resident memory may rise while the cache fills (one fully compressed
resnet18 is ~47 MB of weights, plus masks when pruning) and must then stay flat: the last
Plans must not add a copy each.

Run: .venv/bin/python benchmarks/bench_memory.py [--plans 20] [--samples 8] [--size 224]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torchvision  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from lightviz.core.engine import CACHE_BYTES, Engine  # noqa: E402
from lightviz.core.specs import LayerConfig, Plan, PruneSpec, QuantSpec  # noqa: E402
from lightviz.io.datasets import generated_inputs
from lightviz.io.loading import load_user_model  # noqa: E402

MIB = 2**20


def rss_bytes() -> int:
    """Current resident set size of this process, from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def plans(layer_names: list[str], n: int) -> list[Plan]:
    """n distinct Plans, like a user moving sliders: global settings, then per-layer overrides."""
    settings = [
        (8, "symmetric", "channel", 0.0), (4, "symmetric", "channel", 0.0), (2, "symmetric", "channel", 0.0),
        (8, "asymmetric", "tensor", 0.0), (4, "asymmetric", "channel", 0.0), (6, "symmetric", "tensor", 0.0),
        (8, "symmetric", "group", 0.0), (4, "symmetric", "group", 0.0), (8, "symmetric", "channel", 0.5),
        (4, "symmetric", "channel", 0.5), (3, "asymmetric", "channel", 0.0), (5, "symmetric", "channel", 0.25),
    ]
    out = [Plan(default=LayerConfig(quant=QuantSpec(bits=b, scheme=s, granularity=g),
                                    prune=PruneSpec(sparsity=p))) for b, s, g, p in settings]
    base = out[1]  # 4-bit per channel, then one layer at a time set to 2 bits (the per-layer table)
    for name in layer_names:
        if len(out) >= n:
            break
        out.append(base.with_override(name, LayerConfig(quant=QuantSpec(bits=2))))
    return out[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    print(f"start: RSS {rss_bytes() / MIB:.0f} MiB (torch, torchvision imported)")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet18.safetensors"
        torch.manual_seed(0)
        save_file(torchvision.models.resnet18().state_dict(), str(path))
        start = time.perf_counter()
        bundle = load_user_model(path, arch="resnet18", input_shape=(3, args.size, args.size))
        load_s = time.perf_counter() - start
    data = generated_inputs(bundle.input_shape, n=args.samples)
    engine = Engine(bundle.model)
    n_weights = sum(layer.n_weights for layer in engine.layers)
    print(f"loaded {bundle.name} in {load_s:.2f} s: {n_weights / 1e6:.1f} M compressible weights, "
          f"{engine.float_size_bytes / MIB:.1f} MiB float; RSS {rss_bytes() / MIB:.0f} MiB")
    engine.evaluate(Plan(default=LayerConfig(quant=QuantSpec(bits=None))), data)  # float logits, warm-up
    baseline = rss_bytes()
    print(f"after float evaluation on {args.samples} inputs of {bundle.input_shape}: RSS {baseline / MIB:.0f} MiB; "
          f"cache bound {CACHE_BYTES / MIB:.0f} MiB\n")
    print(f"{'plan':>4} {'seconds':>8} {'RSS MiB':>8} {'+MiB':>6} {'cache MiB':>9} {'entries':>7}  plan")
    times, rss = [], []
    for i, plan in enumerate(plans([layer.name for layer in engine.layers], args.plans), 1):
        start = time.perf_counter()
        engine.compress_layers(plan)
        result = engine.evaluate(plan, data)
        times.append(time.perf_counter() - start)
        rss.append(rss_bytes())
        quant = plan.default.quant
        label = (f"{quant.bits}b {quant.scheme[:4]} {quant.granularity} sparsity {plan.default.prune.sparsity}"
                 + (f" + {plan.overrides[0][0]} at 2b" if plan.overrides else ""))
        print(f"{i:>4} {times[-1]:>8.2f} {rss[-1] / MIB:>8.0f} {(rss[-1] - baseline) / MIB:>6.0f} "
              f"{engine._cached_bytes / MIB:>9.0f} {len(engine._cache):>7}  {label} "
              f"(agreement {result.agreement:.2f})")
    half = len(rss) // 2
    print(f"\nmedian time per Plan change: {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}) over {len(times)} Plans")
    print(f"RSS: baseline {baseline / MIB:.0f} MiB, after the last Plan {rss[-1] / MIB:.0f} MiB "
          f"(+{(rss[-1] - baseline) / MIB:.0f}), peak (ru_maxrss) {peak_rss_bytes() / MIB:.0f} MiB")
    print(f"RSS growth over the second half ({half + 1}..{len(rss)}): {(rss[-1] - rss[half - 1]) / MIB:+.0f} MiB; "
          f"engine cache {engine._cached_bytes / MIB:.0f} MiB in {len(engine._cache)} entries "
          f"(bound {engine.cache_bytes / MIB:.0f} MiB), logits cache {len(engine._logits)} entries")
    grown = (rss[-1] - baseline) / MIB
    verdict = "within" if grown <= engine.cache_bytes / MIB + 128 else "BEYOND"
    print(f"growth over baseline {grown:.0f} MiB is {verdict} the cache bound (+128 MiB slack for the allocator)")


if __name__ == "__main__":
    main()
