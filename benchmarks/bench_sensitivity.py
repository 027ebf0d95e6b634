"""Speed of per-layer sensitivity, and what reusing the activations before each layer buys.

Full sensitivity of digits-cnn on its 450 test images: every layer x bits {2, 3, 4, 6, 8}
(20 single-layer plans), from a cold engine each round. Budget: under 3 seconds.

- reuse: `sensitivity(...)`: one float pass caches the values live at each layer
  (lightviz/core/prefix.py); each plan runs only the network's tail from its layer.
- full forward: `sensitivity(..., reuse=False)`: each plan is compressed into a model copy
  and run from the input (what Engine.evaluate does).
- and, isolating the forward passes alone, the tail runner's `run_from` against `run_full`
  (the same traced graph from the input) over the same 20 weights.

Results must be identical with and without reuse. Machines are noisy: read the ratios.

One torch thread by default: on a shared CPU torch's thread pool stalls under contention and
the numbers swing by 3x between runs; `--threads 0` keeps torch's default.

Run: .venv/bin/python benchmarks/bench_sensitivity.py [--threads N] [--model NAME]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from lightviz.analysis.sensitivity import sensitivity, settings, single_layer_plan  # noqa: E402
from lightviz.core.activations import float_plan  # noqa: E402
from lightviz.core.engine import Engine  # noqa: E402
from lightviz.core.prefix import PrefixCache  # noqa: E402
from lightviz.core.specs import Plan  # noqa: E402
from lightviz.io import zoo  # noqa: E402
from lightviz.io.datasets import eval_data_for

BITS = [2, 3, 4, 6, 8]
ROUNDS = 3
BUDGET_S = 3.0
NUMBERS = ["accuracy", "accuracy_drop", "agreement", "kl", "size_bytes"]


def timed_sensitivity(model, data, reuse: bool):
    times, df = [], None
    for _ in range(ROUNDS):
        engine = Engine(model)  # cold per-layer cache; the float logits are part of the work
        start = time.perf_counter()
        df = sensitivity(engine, data, bits=BITS, reuse=reuse)
        times.append(time.perf_counter() - start)
    return statistics.median(times), df


def timed_forwards(model, data):
    """(tails, full) seconds for the 20 forward passes alone, on one traced graph."""
    engine = Engine(model)
    names = [layer.name for layer in engine.layers]
    cache = PrefixCache(engine.compress(float_plan()), data.x, names)
    weights = [(name, engine.compress_layer(single_layer_plan(Plan(), name, config), name).weight_hat)
               for name in names for _, _, config in settings(Plan(), BITS)]
    out = {}
    for label, run in (("tails", cache.run_from), ("full", cache.run_full)):
        times = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for name, weight in weights:
                run(name, {"weight": weight})
            times.append(time.perf_counter() - start)
        out[label] = statistics.median(times)
    return out["tails"], out["full"], len(weights)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)")
    parser.add_argument("--model", default="digits-cnn")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = zoo.load_model(args.model)
    data = eval_data_for(bundle)
    model = bundle.model
    Engine(model).evaluate(float_plan(), data)  # warm up torch's kernels once, outside the timings

    reuse_s, reused = timed_sensitivity(model, data, reuse=True)
    full_s, full = timed_sensitivity(model, data, reuse=False)
    tails_s, whole_s, n = timed_forwards(model, data)
    identical = reused[NUMBERS].equals(full[NUMBERS])
    layers = reused["layer"].nunique()

    print(f"{args.model}: {layers} layers x bits {BITS} = {len(reused)} single-layer plans on {len(data)} inputs, "
          f"torch threads {torch.get_num_threads()}, median of {ROUNDS}")
    print(f"  sensitivity, reusing activations : {reuse_s:6.2f} s   (budget {BUDGET_S:.0f} s: "
          f"{'ok' if reuse_s < BUDGET_S else 'OVER'})")
    print(f"  sensitivity, full forwards       : {full_s:6.2f} s")
    print(f"  speedup from reuse               : {full_s / reuse_s:6.2f}x   (results identical: {identical})")
    print(f"  forward passes alone ({n}): tails {tails_s:.3f} s vs full graph {whole_s:.3f} s "
          f"= {whole_s / tails_s:.2f}x")
    return 0 if identical and reuse_s < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
