"""Speed of quantization-aware fine-tuning, with float training as the reference, in one run.

Fine-tune digits-cnn for 10 epochs on the digits training split (1347 images, batch 64),
int2 symmetric per channel, distilled from the float model: the issue's case. Budget: under
30 s of wall clock on 2 CPU cores. The reference is the same loop on the same deployed model
with every layer kept float (no fake quantization), so the ratio is the cost of QAT itself.

Three thread settings, each in a fresh process (OpenMP reads its settings at start-up):
- 2 threads, OpenMP's default wait policy (threads spin while they wait for each other);
- 2 threads, OMP_WAIT_POLICY=PASSIVE (waiting threads sleep);
- 1 thread.
These tensors are tiny, so a second thread gains little; on cores shared with other work a
spinning thread that waits for a descheduled peer costs far more than it gains (CPU time,
printed next to the wall clock, shows it). The budget counts any setting using at most 2 cores.

Run: .venv/bin/python benchmarks/bench_finetune.py   (machines are noisy: read the ratios)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EPOCHS = 10
BUDGET_S = 30.0
SETTINGS = [("2 threads, spin-wait (default)", 2, None), ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, "PASSIVE"),
            ("1 thread", 1, None)]


def measure(threads: int) -> dict:
    """In this process: warm up, then time QAT and the float reference (wall and CPU seconds)."""
    import torch

    from lightviz.core.engine import uniform_plan
    from lightviz.core.specs import LayerConfig, Plan
    from lightviz.io.datasets import digits_split
    from lightviz.io.zoo import load_model
    from lightviz.recover.finetune import finetune

    torch.set_num_threads(threads)
    train, test = digits_split()
    model = load_model("digits-cnn").model
    plans = {"qat": uniform_plan(2, "symmetric", "channel"), "float": Plan(default=LayerConfig(keep_float=True))}
    finetune(model, plans["qat"], train, test, epochs=1)  # warm-up: imports, allocator, caches
    out = {}
    for key, plan in plans.items():
        wall, cpu = time.perf_counter(), time.process_time()
        result = finetune(model, plan, train, test, epochs=EPOCHS, teacher=model)
        out[key] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                    "before": result.accuracy_before, "after": result.accuracy_after, "float": result.float_accuracy}
    return out


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(measure(int(sys.argv[2]))))
        return 0
    print(f"digits-cnn, {EPOCHS} epochs on 1347 training images, batch 64, int2 sym/channel, distilled from the "
          f"float model; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    best = float("inf")
    for label, threads, policy in SETTINGS:
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        child = subprocess.run([sys.executable, __file__, "--child", str(threads)], env=env, cwd=ROOT,
                               capture_output=True, text=True, check=True)
        numbers = json.loads(child.stdout.strip().splitlines()[-1])
        qat, ref = numbers["qat"], numbers["float"]
        best = min(best, qat["wall"])
        print(f"{label:36s} QAT {qat['wall']:5.1f} s wall ({qat['cpu']:5.1f} s CPU) | float training "
              f"{ref['wall']:5.1f} s wall ({ref['cpu']:5.1f} s CPU) | QAT / float {qat['wall'] / ref['wall']:.2f}x")
    print(f"accuracy {qat['before']:.2%} -> {qat['after']:.2%} after fine-tuning (float {qat['float']:.2%})")
    verdict = "within" if best < BUDGET_S else "OVER"
    print(f"budget: {EPOCHS} epochs in < {BUDGET_S:.0f} s on 2 cores: best {best:.1f} s, {verdict} budget")
    return 0 if best < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
