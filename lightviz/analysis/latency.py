"""Measured speed: onnxruntime (CPU) latency of the float export and of the plan's QDQ export,
with torch eager float for reference, and what onnxruntime made of the graph.

Timing protocol: every engine gets `warmup` untimed runs, then the engines take turns (float,
plan, torch, float, plan, torch, ...) so that a busy machine slows them alike; each row is the
median of its runs. A time budget caps the runs of slow models (never fewer than MIN_RUNS).
The simulated accuracy is lightviz's; this module only measures time.

>>> from torch import nn
>>> from lightviz.core.engine import Engine, uniform_plan
>>> bench = benchmark(Engine(nn.Sequential(nn.Flatten(), nn.Linear(64, 10))), uniform_plan(8),
...                   input_shape=(1, 8, 8), batches=(1,), runs=3, warmup=1, threads=1)
>>> sorted(bench.speedups()), bench.threads
([1], 1)
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from lightviz.analysis.cost import cost_table, cost_totals, layer_macs
from lightviz.core.activations import float_plan, wa_label
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import Plan
from lightviz.io import onnx_runtime
from lightviz.io.onnx_export import export_onnx

BATCHES = (1, 32)
MIN_RUNS = 3
ENGINES = ("onnxruntime float", "onnxruntime plan", "torch eager float")
WIDENED = "onnxruntime plan, weights widened at load"  # weight-only plans: session.disable_quant_qdq
INTEGER_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat",
                   "DynamicQuantizeMatMul", "MatMulNBits", "QLinearAdd")
FLOAT_KERNELS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose")


@dataclass(frozen=True)
class LatencyRow:
    """One engine at one batch size: the median and spread of its timed runs, in milliseconds."""

    engine: str
    batch: int
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int
    q1_ms: float = float("nan")  # quartiles: the spread without the odd run a busy machine slows
    q3_ms: float = float("nan")

    @property
    def ms_per_sample(self) -> float:
        return self.median_ms / self.batch


@dataclass(frozen=True, eq=False)
class Benchmark:
    """Latency rows, the runtime's kernels, the cost table and what they teach."""

    rows: tuple[LatencyRow, ...]
    threads: int
    warmup: int
    wa: str
    runtime_ops: dict[str, int]  # op types of the plan graph after onnxruntime's optimizations
    float_runtime_ops: dict[str, int]
    costs: pd.DataFrame  # analysis.cost.COLUMNS
    totals: dict
    onnx_bytes: int
    float_onnx_bytes: int
    notes: tuple[str, ...]
    load_average: tuple[float, float, float]
    seconds: float
    versions: dict = field(default_factory=dict)

    def latency(self, engine: str, batch: int) -> LatencyRow:
        return next(row for row in self.rows if row.engine == engine and row.batch == batch)

    def speedups(self) -> dict[int, float]:
        """{batch: onnxruntime float median / plan median} (above 1: the plan is faster)."""
        batches = sorted({row.batch for row in self.rows})
        return {b: self.latency(ENGINES[0], b).median_ms / max(self.latency(ENGINES[1], b).median_ms, 1e-9)
                for b in batches}

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"engine": r.engine, "batch": r.batch, "median_ms": r.median_ms, "q1_ms": r.q1_ms,
                              "q3_ms": r.q3_ms, "min_ms": r.min_ms, "max_ms": r.max_ms,
                              "ms_per_sample": r.ms_per_sample, "runs": r.runs} for r in self.rows])

    def to_dict(self) -> dict:
        return {"wa": self.wa, "threads": self.threads, "warmup": self.warmup,
                "latency": self.frame().to_dict("records"),
                "speedup": {str(b): s for b, s in self.speedups().items()},
                "runtime_ops": self.runtime_ops, "float_runtime_ops": self.float_runtime_ops,
                "onnx_bytes": self.onnx_bytes, "float_onnx_bytes": self.float_onnx_bytes,
                **self.totals, "layers": self.costs.to_dict("records"), "notes": list(self.notes),
                "load_average": list(self.load_average), "seconds": self.seconds, **self.versions}


def benchmark(engine: Engine, plan: Plan, data: EvalData | None = None, input_shape: tuple[int, ...] | None = None,
              batches: tuple[int, ...] = BATCHES, runs: int = 10, warmup: int = 2, threads: int | None = None,
              budget_s: float = 60.0, macs: dict[str, int] | None = None) -> Benchmark:
    """Time the float and the plan's ONNX exports in onnxruntime and the float model in torch.

    Args:
        data: inputs to time on (its first rows, repeated to fill a batch) and to calibrate
            activations; else zeros of `input_shape`.
        batches: batch sizes to time.
        runs: timed runs per engine and batch (fewer when `budget_s` runs out, at least MIN_RUNS).
        threads: intra-op threads for onnxruntime and torch (default: one per CPU core).
        budget_s: time budget per batch size for the timed runs.
    """
    start = time.perf_counter()
    _check_counts(batches, runs, warmup, budget_s)
    shape = tuple(data.input_shape) if data is not None else tuple(input_shape or ())
    threads = threads or os.cpu_count() or 1
    float_export = export_onnx(engine, float_plan(True), input_shape=shape)
    plan_export = export_onnx(engine, plan, data, input_shape=shape)
    float_session, float_ops = _session_and_ops(float_export.model, threads)
    plan_session, plan_ops = _session_and_ops(plan_export.model, threads)
    sessions = {ENGINES[0]: float_session, ENGINES[1]: plan_session}
    if plan.activations is None and any(item.weight != "float32" for item in plan_export.layers):
        sessions[WIDENED] = onnx_runtime.session(plan_export.model, threads, fuse_qdq=False)
    rows = []
    for batch in batches:
        x = _inputs(data, shape, batch)
        feed = {"input": x.numpy()}
        names = [*sessions, ENGINES[2]]
        engines = [*(lambda s=s, feed=feed: s.run(None, feed) for s in sessions.values()),
                   lambda x=x: _torch_run(engine.model, x)]
        with _torch_threads(threads):
            times = _interleaved(engines, runs, warmup, budget_s)
        rows += [_row(name, batch, samples) for name, samples in zip(names, times)]
    costs = cost_table(engine, plan, shape, macs if macs is not None else layer_macs(
        engine.model, shape, [layer.name for layer in engine.layers]))
    totals = cost_totals(costs)
    bench = Benchmark(tuple(rows), threads, warmup, wa_label(plan, [layer.name for layer in engine.layers]),
                      plan_ops, float_ops, costs, totals, len(plan_export.to_bytes()), len(float_export.to_bytes()),
                      (), tuple(round(v, 2) for v in os.getloadavg()), 0.0, _versions())
    notes = speed_notes(engine, plan, bench)
    return Benchmark(**{**bench.__dict__, "notes": tuple(notes), "seconds": time.perf_counter() - start})


def plan_latency(engine: Engine, plan: Plan, data: EvalData | None = None, input_shape: tuple[int, ...] | None = None,
                 batch: int = 1, runs: int = 10, warmup: int = 2, threads: int | None = None,
                 budget_s: float = 10.0) -> LatencyRow:
    """onnxruntime latency of one plan's export alone (Trade-offs' latency axis)."""
    _check_counts((batch,), runs, warmup, budget_s)
    shape = tuple(data.input_shape) if data is not None else tuple(input_shape or ())
    threads = threads or os.cpu_count() or 1
    session = onnx_runtime.session(export_onnx(engine, plan, data, input_shape=shape).model, threads)
    feed = {"input": _inputs(data, shape, batch).numpy()}
    [samples] = _interleaved([lambda: session.run(None, feed)], runs, warmup, budget_s)
    return _row(ENGINES[1], batch, samples)


def runtime_kernels(ops: dict[str, int]) -> tuple[int, int]:
    """(integer compute kernels, float compute kernels) among optimized op counts."""
    return sum(ops.get(op, 0) for op in INTEGER_KERNELS), sum(ops.get(op, 0) for op in FLOAT_KERNELS)


def speed_notes(engine: Engine, plan: Plan, bench: Benchmark) -> list[str]:
    """Why the plan is (or is not) faster on this runtime: one sentence per reason."""
    results = engine.compress_layers(plan)
    notes = []
    integer, floating = runtime_kernels(bench.runtime_ops)
    best = max(bench.speedups().values()) if bench.rows else 1.0
    if best < 1.1:
        notes.append(f"No speed-up on this runtime (best {best:.2f}x): smaller is not automatically faster.")
    small = [row for row in bench.rows if row.engine == ENGINES[0] and row.median_ms < 0.5]
    if small:
        notes.append(f"The float model takes {small[0].median_ms:.3g} ms at batch {small[0].batch}: at this scale "
                     "fixed costs per call (and a busy machine) weigh as much as the arithmetic, so differences of a "
                     "few hundredths of a millisecond are noise.")
    if plan.activations is None and any(r.quant.bits for r in results.values()):
        widened = [row for row in bench.rows if row.engine == WIDENED]
        extra = ""
        if widened:
            row = widened[-1]
            extra = (f" With the session option session.disable_quant_qdq=1 it widens them once, when the model "
                     f"loads, and then runs like the float export: {row.median_ms:.3g} ms against "
                     f"{bench.latency(ENGINES[0], row.batch).median_ms:.3g} ms at batch {row.batch}.")
        notes.append("Weights only: onnxruntime keeps a DequantizeLinear before every integer weight and runs float "
                     "kernels, so the file is smaller but each run does the same float work plus the "
                     "dequantization." + extra)
    if plan.activations is not None:
        notes.append(f"{integer} of {integer + floating} compute layers ran as integer kernels (QLinearConv, QGemm, "
                     "...). onnxruntime fuses a layer into integer arithmetic only when its input, its weight and "
                     "its output are quantized (DQ -> op -> Q); a layer whose output stays float (into a residual "
                     "Add, a pooling head or the logits) runs in float.")
    if any(r.quant.bits and r.quant.bits < 8 for r in results.values()):
        notes.append("Weights below 8 bits are stored in INT4/int8 containers and widened at run time: this CPU "
                     "runtime has no kernels that compute on 4-bit or narrower codes.")
    if any(r.quant.bits and r.quant.bits > 8 for r in results.values()):
        notes.append("Codes wider than 8 bits (INT16) have no integer kernels here either: they run in float.")
    if any(r.mask is not None and r.prune.method != "filter" for r in results.values()):
        notes.append("Zeros from unstructured or n:m pruning are multiplied like any other weight: dense CPU kernels "
                     f"do not skip them ({bench.totals['macs']:,} MACs run; a zero-skipping kernel would run "
                     f"{bench.totals['sparse_macs']:,}).")
    if any(r.mask is not None and r.prune.method == "filter" for r in results.values()):
        notes.append("Pruned filters are still computed while they are masked; `export --physical` removes them "
                     "(and the next layer's matching inputs) for a smaller dense model that does run faster.")
    return notes


# --- helpers ----------------------------------------------------------------------------------


def _check_counts(batches: tuple[int, ...], runs: int, warmup: int, budget_s: float) -> None:
    if not batches or any(not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 4096 for b in batches):
        raise ValueError(f"batch sizes must be integers from 1 to 4096; got {batches!r}")
    if not isinstance(runs, int) or not MIN_RUNS <= runs <= 10_000:
        raise ValueError(f"runs must be an integer from {MIN_RUNS} to 10000; got {runs!r}")
    if not isinstance(warmup, int) or not 0 <= warmup <= 1000:
        raise ValueError(f"warmup must be an integer from 0 to 1000; got {warmup!r}")
    if not budget_s > 0:
        raise ValueError(f"the time budget must be positive; got {budget_s!r}")


def _inputs(data: EvalData | None, shape: tuple[int, ...], batch: int) -> torch.Tensor:
    if data is None:
        return torch.zeros(batch, *shape)
    x = data.x[:batch]
    if len(x) < batch:
        x = x.repeat((-(-batch // len(x)),) + (1,) * (x.dim() - 1))[:batch]
    return x.contiguous().float()


def _torch_run(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        model(x)


class _torch_threads:
    """Run torch with `threads` intra-op threads, then restore the previous count."""

    def __init__(self, threads: int) -> None:
        self.threads, self.before = threads, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.before)


def _interleaved(engines: list, runs: int, warmup: int, budget_s: float) -> list[list[float]]:
    """Seconds of each timed run, per engine; engines take turns run by run."""
    for fn in engines:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in engines]
    start = time.perf_counter()
    for done in range(runs):
        if done >= MIN_RUNS and time.perf_counter() - start > budget_s:
            break
        for fn, samples in zip(engines, times):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return times


def _row(engine: str, batch: int, samples: list[float]) -> LatencyRow:
    ms = np.array(samples) * 1000
    q1, q3 = np.percentile(ms, [25, 75])
    return LatencyRow(engine, batch, float(np.median(ms)), float(ms.min()), float(ms.max()), len(samples),
                      float(q1), float(q3))


def _session_and_ops(model, threads: int):
    """A timing session, and the op counts of the graph onnxruntime optimized (fused) for it."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # its note on saving NCHWc graphs is for deployment, not for us
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "optimized.onnx")
        session = onnx_runtime.session(model, threads, optimized_path=path)
        import onnx

        ops = Counter(node.op_type for node in onnx.load(path, load_external_data=False).graph.node)
    return session, dict(sorted(ops.items()))


def _versions() -> dict:
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "torch": torch.__version__.split("+")[0], "cpu_count": os.cpu_count()}
