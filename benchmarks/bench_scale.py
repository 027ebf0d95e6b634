"""Scaling out: a sweep on Ray against the same sweep here, and Explore's prefix reuse on a big model.

1. Sweep: 24 uniform plans (bits 2, 3, 4, 8 x symmetric, asymmetric x tensor, channel, group)
   of torchvision's resnet18 (random init) on 64 generated 224x224 inputs, evaluated
   - here, one after another (`run_sweep`, torch's default threads), and
   - as Ray tasks on a local Ray instance with `--ray-cpus` CPUs (default 2: two workers, one
     torch thread each). Ray's start-up is timed apart; the sweep time includes its workers'
     first start, the model's trip through the object store and each worker's float pass.
   The rows must be identical. Printed: both times, their ratio, and the cost per plan, from
   which a paper estimate for bigger sweeps follows (see --estimate).
2. Explore: a one-layer change on resnet50 (random init, 16 inputs): after the page opens and a
   first change (timed apart: the reusing engine checks itself once against a full forward
   there), a run of cumulative one-layer changes (late to early layers), each evaluated by an
   engine that recomputes the
   whole model and by one that reuses the activations before the changed layer
   (`Engine(prefix_bytes=...)`). Each variant runs in its own process, so its peak resident
   memory (ru_maxrss) is its own; the kept activations are reported too.

Everything runs on `--device` (default auto: a CUDA GPU when there is one). Timings on a shared
machine are noisy: read the ratios, and note the load average printed with them.

Run: .venv/bin/python benchmarks/bench_scale.py [--part sweep|explore|all] [--ray-cpus 2]
     [--device auto] [--budget-mib 512] [--estimate-plans 200 --estimate-images 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads stall a shared CPU
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from lightviz.analysis.sweep import run_sweep, sweep_configs  # noqa: E402
from lightviz.core.device import describe, resolve_device  # noqa: E402
from lightviz.core.engine import Engine, uniform_plan  # noqa: E402
from lightviz.core.specs import LayerConfig, QuantSpec  # noqa: E402
from lightviz.io import zoo  # noqa: E402
from lightviz.io.datasets import generated_inputs  # noqa: E402

EXPLORE_LAYERS = ["fc", "layer4.2.conv3", "layer4.0.conv1", "layer3.3.conv2", "layer2.1.conv1", "layer1.0.conv1",
                  "conv1"]  # late to early: what each change leaves to recompute grows
WARM_UP_LAYER = "layer4.2.conv2"


def load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def sweep_part(args: argparse.Namespace) -> None:
    from lightviz.analysis.ray_backend import RayBackend

    bundle = zoo.load_model("resnet18")
    data = generated_inputs(bundle.input_shape, n=64)
    plans = sweep_configs([2, 3, 4, 8], ["symmetric", "asymmetric"], ["tensor", "channel", "group"], [0.0])
    assert len(plans) == 24
    print(f"sweep: resnet18, {len(plans)} plans, {len(data)} inputs, on {describe(resolve_device(args.device))}; "
          f"{load()}")
    start, cpu = time.perf_counter(), time.process_time()
    local = run_sweep(Engine(bundle.model, device=args.device), data, plans)
    local_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    print(f"  here ({torch.get_num_threads()} torch threads): {local_s:7.1f} s  ({local_s / len(plans):.2f} s per plan, "
          f"float pass included; {cpu_s / len(plans):.2f} CPU-s per plan)")
    start = time.perf_counter()
    with RayBackend(num_cpus=args.ray_cpus, device=args.device) as backend:
        ray_start_s = time.perf_counter() - start
        start = time.perf_counter()
        remote = run_sweep(Engine(bundle.model, device=args.device), data, plans, backend=backend)
        ray_s = time.perf_counter() - start
        workers = backend.workers
    same = remote.equals(local)
    print(f"  Ray, {workers} local workers:  {ray_s:7.1f} s  (+ {ray_start_s:.1f} s to start Ray); "
          f"ratio Ray / here = {ray_s / local_s:.2f}; rows identical: {same}; {load()}")
    if not same:
        pd.testing.assert_frame_equal(remote, local, check_exact=True)
    worker_s = ray_s * workers / len(plans)  # worker-seconds per plan on Ray (wall time x workers)
    per_image_plan = cpu_s / len(plans) / len(data)  # CPU time: less sensitive to other load than wall time
    print(f"  per plan: {local_s / len(plans):.2f} s here, {worker_s:.2f} worker-s on Ray; "
          f"{per_image_plan * 1000:.1f} CPU-ms per image and plan (compression + forward, float pass shared)")
    total = per_image_plan * args.estimate_images * args.estimate_plans
    print(f"  paper estimate, {args.estimate_plans} plans on {args.estimate_images:,} images: {total / 3600:,.0f} "
          f"CPU-hours; at one worker per core, perfect scaling: "
          + ", ".join(f"{n} node{'s' if n > 1 else ''} x {args.node_cpus} cores {total / (n * args.node_cpus) / 3600:.1f} h"
                      for n in (1, 4, 16, 64)))


def explore_variant(args: argparse.Namespace) -> dict:
    """One engine (reuse or not) through the cumulative one-layer changes; JSON-able numbers."""
    bundle = zoo.load_model("resnet50")
    data = generated_inputs(bundle.input_shape, n=16)
    budget = args.budget_mib * 2**20 if args.variant == "reuse" else 0
    engine = Engine(bundle.model, device=args.device, prefix_bytes=budget)
    plan = uniform_plan(8)
    start = time.perf_counter()
    engine.evaluate(plan, data)  # the page as it opens: float and compressed passes
    first = time.perf_counter() - start
    plan = plan.with_override(WARM_UP_LAYER, LayerConfig(quant=QuantSpec(bits=6)))
    start = time.perf_counter()
    engine.evaluate(plan, data)  # the first change (with reuse: a one-time bit-exact check of the resumed run)
    warm_up = time.perf_counter() - start
    changes = []
    for name in EXPLORE_LAYERS:
        plan = plan.with_override(name, LayerConfig(quant=QuantSpec(bits=4)))
        start = time.perf_counter()
        evaluation = engine.evaluate(plan, data)
        seconds = time.perf_counter() - start
        info = engine.run_info(plan, data)
        changes.append({"layer": name, "seconds": seconds, "agreement": evaluation.agreement,
                        "layers_run": info.layers_run if info else len(engine.layers),
                        "held_bytes": info.held_bytes if info else 0})
    cuda_peak = torch.cuda.max_memory_allocated() if engine.device.type == "cuda" else None
    return {"first": first, "warm_up": warm_up, "changes": changes, "layers": len(engine.layers),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cuda_peak": cuda_peak}


def explore_part(args: argparse.Namespace) -> None:
    print(f"explore: resnet50, 16 inputs, cumulative one-layer changes to 4 bits (8-bit base), on "
          f"{describe(resolve_device(args.device))}, kept activations limited to {args.budget_mib} MiB; {load()}")
    found = {}
    for variant in ("full", "reuse"):
        done = subprocess.run([sys.executable, __file__, "--variant", variant, "--device", args.device,
                               "--budget-mib", str(args.budget_mib)], capture_output=True, text=True, check=True)
        found[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    full, reuse = found["full"], found["reuse"]
    print(f"  opening the page (float + compressed passes): full {full['first']:.2f} s, reuse {reuse['first']:.2f} s "
          "(reuse: + a one-time check of the traced graph against a full forward)")
    print(f"  first change ({WARM_UP_LAYER}): full {full['warm_up']:.2f} s, reuse {reuse['warm_up']:.2f} s "
          "(reuse: + a one-time check of a resumed run against a full forward); not counted below")
    print(f"  {'changed layer':16s} {'recomputed':>10s} {'full s':>8s} {'reuse s':>8s} {'ratio':>6s} {'kept MiB':>9s}")
    ratios = []
    for a, b in zip(full["changes"], reuse["changes"]):
        assert a["agreement"] == b["agreement"], "reuse must not change a number"
        ratios.append(b["seconds"] / a["seconds"])
        print(f"  {a['layer']:16s} {b['layers_run']:>4d} of {reuse['layers']:<3d} {a['seconds']:8.2f} "
              f"{b['seconds']:8.2f} {ratios[-1]:6.2f} {b['held_bytes'] / 2**20:9.1f}")
    print(f"  mean ratio reuse / full over these changes: {sum(ratios) / len(ratios):.2f}; "
          f"peak RSS full {full['peak_rss'] / 2**20:,.0f} MiB, reuse {reuse['peak_rss'] / 2**20:,.0f} MiB"
          + (f"; CUDA peak full {full['cuda_peak'] / 2**20:,.0f} MiB, reuse {reuse['cuda_peak'] / 2**20:,.0f} MiB"
             if full["cuda_peak"] is not None else "") + f"; {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("sweep", "explore", "all"), default="all")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--budget-mib", type=int, default=512)
    parser.add_argument("--estimate-plans", type=int, default=200)
    parser.add_argument("--estimate-images", type=int, default=50_000)
    parser.add_argument("--node-cpus", type=int, default=16, help="workers per node in the paper estimate")
    parser.add_argument("--variant", choices=("full", "reuse"), help=argparse.SUPPRESS)  # one explore process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(explore_variant(args)))
        return
    if args.part in ("sweep", "all"):
        sweep_part(args)
    if args.part in ("explore", "all"):
        explore_part(args)


if __name__ == "__main__":
    main()
