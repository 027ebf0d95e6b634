"""Speed of the PTQ methods, and of gradient-scored against measured sensitivity.

1. Every method at 4 bits per channel, every layer, from a cold engine:
   - digits-mobilenet: its 450 test images; methods calibrate on 128 images of the training split;
   - torchvision resnet18 (random init): 64 generated inputs, which also calibrate.
   Seconds to compress all layers (the method's cost), then accuracy (or agreement) and KL.
   AdaRound runs `--adaround-steps` per layer on resnet18 (default 50: its 500-step default
   would take about 10x as long; the time is per step, so the line says what 500 would cost).
2. Gradient-scored against measured sensitivity on resnet18, the same 64 inputs, every layer x
   {int4, int8, fp8_e4m3, mxfp4}: seconds of each, their ratio and Spearman rank correlation.

Budgets: GPTQ on resnet18 under 60 s; gradient sensitivity at least 3x faster than measured.
Machines are noisy: the load average is printed next to the numbers, and next to each wall time
the process's CPU seconds (all threads), which load from other processes does not inflate: on an
idle 2-core machine the wall time lies between half of it and all of it.

Run: .venv/bin/python benchmarks/bench_methods.py [--skip-adaround] [--adaround-steps N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightviz.analysis.gradsens import gradient_sensitivity, rank_correlation  # noqa: E402
from lightviz.analysis.sensitivity import sensitivity  # noqa: E402
from lightviz.core.engine import Engine  # noqa: E402
from lightviz.core.methods.spec import METHODS, MethodSpec  # noqa: E402
from lightviz.core.specs import LayerConfig, Plan, QuantSpec  # noqa: E402
from lightviz.io import zoo  # noqa: E402
from lightviz.io.datasets import eval_data_for  # noqa: E402

GPTQ_BUDGET_S = 60.0
GRADIENT_SPEEDUP = 3.0
FORMATS = ["fp8_e4m3", "mxfp4"]
BITS = [4, 8]


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def time_methods(name: str, n: int | None, calib: int, adaround_steps: int, skip_adaround: bool) -> dict:
    bundle = zoo.load_model(name)
    data = eval_data_for(bundle, n)
    out = {}
    print(f"\n{name}: {len(data)} evaluation inputs, {calib} calibration inputs ({load()})")
    for method in METHODS:
        if method == "adaround" and skip_adaround:
            continue
        steps = adaround_steps if method == "adaround" else 500
        spec = MethodSpec(method, calib_samples=calib, iterations=steps)
        plan = Plan(default=LayerConfig(quant=QuantSpec(bits=4), method=spec))
        engine = Engine(bundle.model)  # cold: nothing cached
        started, cpu = time.perf_counter(), time.process_time()
        engine.compress_layers(plan, calibration=data)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        ev = engine.evaluate(plan, data)
        score = f"accuracy {ev.accuracy:.2%}" if ev.accuracy is not None else f"agreement {ev.agreement:.2%}"
        extra = f" ({steps} steps/layer)" if method == "adaround" else ""
        print(f"  {method:16s} {seconds:8.2f} s (CPU {cpu:7.2f} s){extra}   {score}, KL {ev.kl:.4g}   [{load()}]", flush=True)
        out[method] = seconds, cpu
    return out


def sensitivity_speed() -> tuple[float, float, float]:
    bundle = zoo.load_model("resnet18")
    data = eval_data_for(bundle, 64)
    print(f"\nresnet18 sensitivity, every layer x {BITS} bits + {FORMATS}, 64 inputs ({load()})")
    started, cpu = time.perf_counter(), time.process_time()
    scored = gradient_sensitivity(Engine(bundle.model), data, bits=BITS, formats=FORMATS)
    gradient_s, gradient_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"  gradient-scored  {gradient_s:8.2f} s (CPU {gradient_cpu:7.2f} s)  ({scored.attrs['passes']} backward passes: "
          f"{scored.attrs['fisher_seconds']:.1f} s)   [{load()}]", flush=True)
    started, cpu = time.perf_counter(), time.process_time()
    measured = sensitivity(Engine(bundle.model), data, bits=BITS, formats=FORMATS)
    measured_s, measured_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"  measured         {measured_s:8.2f} s (CPU {measured_cpu:7.2f} s)  ({len(measured)} layer settings, "
          f"{'tails reused' if measured.attrs['reuse'] else 'full forwards'})   [{load()}]")
    rho = rank_correlation(measured, scored)
    print(f"  gradient is {measured_s / gradient_s:.1f}x faster (CPU: {measured_cpu / gradient_cpu:.1f}x); "
          f"Spearman rank correlation {rho:.3f}")
    return gradient_s, measured_s, rho


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-adaround", action="store_true")
    parser.add_argument("--adaround-steps", type=int, default=50, help="AdaRound steps per layer on resnet18")
    parser.add_argument("--skip-digits", action="store_true", help="resnet18 only")
    args = parser.parse_args()
    if not args.skip_digits:
        time_methods("digits-mobilenet", None, 128, 500, args.skip_adaround)
    resnet = time_methods("resnet18", 64, 64, args.adaround_steps, args.skip_adaround)
    gradient_s, measured_s, _ = sensitivity_speed()
    gptq_s, gptq_cpu = resnet["gptq"]
    ok = gptq_s < GPTQ_BUDGET_S and measured_s / gradient_s >= GRADIENT_SPEEDUP
    print(f"\nbudgets: GPTQ on resnet18 {gptq_s:.1f} s, CPU {gptq_cpu:.1f} s (< {GPTQ_BUDGET_S:.0f} s), gradient "
          f"{measured_s / gradient_s:.1f}x faster than measured (>= {GRADIENT_SPEEDUP:.0f}x): "
          f"{'met' if ok else 'NOT met'} [{load()}]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
