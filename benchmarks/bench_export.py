"""Export speed and measured onnxruntime latency, as ratios measured in one run.

1. Export time of torchvision resnet18 (random init): the first ONNX export of a model (torch.onnx
   traces it; budget < 10 s), a second plan of the same model (the traced graph is reused), and
   the packed file. Each export is checked (onnxruntime agreement, packed read-back) outside
   the timing.
2. Latency, float export against the W8A8 export (int8 per-channel weights, uint8 inputs), for
   resnet18 and digits-cnn at batch 1 and 32: onnxruntime CPU, the engines taking turns run by
   run, median of the runs; torch eager float for reference. The speed-up column is the ratio.

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_export.py [threads]
(machines are noisy: read the ratios, and the load average printed with them)
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle threads sleep
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from lightviz.analysis.latency import ENGINES, benchmark  # noqa: E402
from lightviz.core.engine import Engine, uniform_plan  # noqa: E402
from lightviz.core.specs import ActivationSpec  # noqa: E402
from lightviz.io.datasets import eval_data_for  # noqa: E402
from lightviz.io.onnx_export import export_onnx  # noqa: E402
from lightviz.io.onnx_runtime import runtime_check  # noqa: E402
from lightviz.io.packed import load_packed, packed_bytes  # noqa: E402
from lightviz.io.zoo import load_model  # noqa: E402

W8A8 = replace(uniform_plan(8), activations=ActivationSpec(bits=8))
BUDGET_S = 10.0


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def bench_export_time() -> None:
    bundle = load_model("resnet18")
    engine = Engine(bundle.model)
    data = eval_data_for(bundle, 8)
    first, t_first = timed(export_onnx, engine, uniform_plan(8), data, model_name="resnet18")
    second, t_second = timed(export_onnx, engine, W8A8, data, model_name="resnet18")
    packed, t_packed = timed(packed_bytes, engine, uniform_plan(4), "resnet18")
    check = runtime_check(engine, W8A8, data, second)
    read_back = load_packed(packed)
    print(f"export, torchvision resnet18 (random init, 11.7 M weights), load average {os.getloadavg()[0]:.2f}")
    print(f"  ONNX W8, first export (torch.onnx traces)  {t_first:6.2f} s  (budget < {BUDGET_S:.0f} s: "
          f"{'ok' if t_first < BUDGET_S else 'OVER'}), {len(first.to_bytes()) / 2**20:.1f} MiB")
    print(f"  ONNX W8A8, same model, graph reused         {t_second:6.2f} s  ({t_second / t_first:.2f}x the first), "
          f"onnxruntime agreement {check.agreement:.0%} on {check.n_samples} inputs, "
          f"max logit difference {check.max_logit_diff:.3g}")
    print(f"  packed W4 (.safetensors)                    {t_packed:6.2f} s  ({t_packed / t_first:.2f}x), "
          f"{read_back.size_bytes:,} B + {read_back.header_bytes:,} B header")


def bench_latency(name: str, threads: int, runs: int) -> None:
    bundle = load_model(name)
    engine = Engine(bundle.model)
    data = eval_data_for(bundle, 32)
    bench = benchmark(engine, W8A8, data, batches=(1, 32), runs=runs, warmup=2, threads=threads, budget_s=90)
    print(f"latency, {name}, W8A8 vs float, onnxruntime CPU {threads} threads (torch {torch.__version__.split('+')[0]} "
          f"eager for reference), load average {bench.load_average[0]:.2f}")
    print(f"  {'batch':>5}  {'ORT float':>11}  {'ORT W8A8':>11}  {'speed-up':>8}  {'torch float':>11}  runs")
    for batch, speedup in bench.speedups().items():
        rows = [bench.latency(engine_name, batch) for engine_name in ENGINES]
        print(f"  {batch:>5}  {rows[0].median_ms:9.3f}ms  {rows[1].median_ms:9.3f}ms  {speedup:7.2f}x  "
              f"{rows[2].median_ms:9.3f}ms  {rows[0].runs}")
    ops = bench.runtime_ops
    print(f"  onnxruntime kernels: QLinearConv {ops.get('QLinearConv', 0)}, float Conv/FusedConv "
          f"{ops.get('Conv', 0) + ops.get('FusedConv', 0)}, QGemm {ops.get('QGemm', 0)}, Gemm {ops.get('Gemm', 0)}")


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else (os.cpu_count() or 1)
    bench_export_time()
    bench_latency("digits-cnn", threads, runs=30)
    bench_latency("resnet18", threads, runs=5)


if __name__ == "__main__":
    main()
