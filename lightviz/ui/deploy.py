"""Explore's Deploy section: the plan as files (ONNX, packed, plan JSON) and its measured speed;
and the latency cache Trade-offs' latency axis reads.

Everything above this section is lightviz's simulation; this section leaves it: the files are
what a runtime executes and what a disk holds, the times are measured on this machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from lightviz.core.activations import float_plan, wa_label
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import Plan
from lightviz.plots import deploy as plots
from lightviz.ui import charts, report, state
from lightviz.ui.format import bytes_text, human_bytes, percent

if TYPE_CHECKING:  # onnx, onnxruntime and the exporter load only when a file is built or a time measured
    from lightviz.analysis.latency import Benchmark

FILES_KEY, SPEED_KEY, LATENCY_KEY = "deploy_files", "speed_results", "latency_cache"
KEEP_FILES, KEEP_SPEED, KEEP_LATENCY = 2, 8, 500  # session memory: built files are megabytes
BATCH_OPTIONS = [1, 8, 32, 64]
NO_SPEEDUP = 1.1


@dataclass(frozen=True, eq=False)
class BuiltFiles:
    """The plan's ONNX and packed files (or why one could not be built)."""

    onnx: bytes | None
    onnx_text: str
    packed: bytes | None
    packed_text: str


def deploy_section(engine: Engine, plan: Plan, data: EvalData, model_name: str) -> None:
    """Download buttons for the plan's files, then the speed panel."""
    st.caption("Everything above is simulated. Here the plan leaves lightviz: as an ONNX model that a runtime "
               "executes, as a packed file that holds exactly the size shown, and as latency measured on this "
               "machine.")
    if plan.uses_methods or plan.uses_formats:
        st.info("Exported files hold integer round-to-nearest weights on uniform grids: set Number format to int "
                "and Method to nearest to build them and measure their speed.", icon=":material/info:")
        return
    files_panel(engine, plan, data, model_name)
    st.markdown("#### Measured speed")
    speed_panel(engine, plan, data)


# --- files ------------------------------------------------------------------------------------


def _file_column(column, title: str, what: str, built: tuple | None, file_name: str, key: str,
                 about: str) -> None:
    """One built file's column: its download (or why it could not be built) and what it holds.
    `built` is (bytes or None, text) once the files were built, else None."""
    with column:
        st.markdown(f"**{title}**")
        if built is not None and built[0] is not None:
            st.download_button(f"Download {what} · {human_bytes(len(built[0]))}", built[0], file_name,
                               "application/octet-stream", key=key, icon=":material/download:")
        elif built is not None:
            st.error(_plain(built[1]))
        st.caption(built[1] if built is not None and built[0] is not None else about)


def files_panel(engine: Engine, plan: Plan, data: EvalData, model_name: str) -> None:
    key = (state.current_name(), plan.to_json(), data.description)
    built = _cached(FILES_KEY).get(key)
    if built is None and st.button("Build the ONNX and packed files", key="deploy_build", icon=":material/build:",
                                   help="Export this plan (a few seconds for a big model), check the ONNX file in "
                                        "onnxruntime and the packed file by reading it back"):
        with st.spinner("Exporting and checking…"):
            built = _build(engine, plan, data, model_name)
        _store(FILES_KEY, key, built, KEEP_FILES)
    stem = f"{_safe(model_name)}-{wa_label(plan, [layer.name for layer in engine.layers])}"
    onnx_col, packed_col, plan_col = st.columns(3)
    _file_column(onnx_col, "ONNX model (QDQ)", "ONNX", built and (built.onnx, built.onnx_text), f"{stem}.onnx",
                 "download_onnx", "Integer weights with DequantizeLinear (per tensor, per channel, or blocked per "
                 "group), QuantizeLinear/DequantizeLinear on quantized inputs; onnxruntime, OpenVINO and TensorRT "
                 "read it.")
    _file_column(packed_col, "Packed lightviz file (.safetensors)", "packed",
                 built and (built.packed, built.packed_text), f"{stem}.safetensors", "download_packed",
                 "Codes packed b bits each, scales, zero-points, the pruning index and float biases: the size "
                 "above plus a small header. `lightviz.load_packed` rebuilds every weight bit-exactly.")
    with plan_col:
        st.markdown("**Plan JSON**")
        st.download_button("Download plan JSON", plan.to_json(indent=2) + "\n", f"{stem}.json", "application/json",
                           key="download_plan", icon=":material/download:")
        st.caption("The recipe: global settings and per-layer overrides. Reload it with "
                   "`python -m lightviz evaluate --plan plan.json` or `export --plan plan.json`.")


def _build(engine: Engine, plan: Plan, data: EvalData, model_name: str) -> BuiltFiles:
    from lightviz.io import packed as packing
    from lightviz.io.onnx_export import export_onnx
    from lightviz.io.onnx_runtime import runtime_check

    onnx_bytes = packed_bytes = None
    try:
        export = export_onnx(engine, plan, data, model_name=model_name)
        check = runtime_check(engine, plan, data, export)
        onnx_bytes = export.to_bytes()
        kinds = sorted({row.weight for row in export.layers})
        inputs = sorted({row.input for row in export.layers})
        onnx_text = (f"Weights as {', '.join(kinds)} with DequantizeLinear; inputs {', '.join(inputs)}; opset "
                     f"{export.opset}. Checked in onnxruntime: the same top-1 class as lightviz on "
                     f"{percent(check.agreement)} of {check.n_samples} inputs, max logit difference "
                     f"{check.max_logit_diff:.3g}.")
    except (ValueError, RuntimeError) as error:
        onnx_text = f"The ONNX file could not be built: {error}"
    try:
        packed_bytes = packing.packed_bytes(engine, plan, model_name, data)
        packed = packing.load_packed(packed_bytes)
        packed_text = (f"{bytes_text(packed.size_bytes)} of packed tensors (exactly the size above) + "
                       f"{bytes_text(packed.header_bytes)} of header; read back and checked. Load it with "
                       "`lightviz.load_packed(path)`.")
    except (ValueError, RuntimeError) as error:
        packed_text = f"The packed file could not be built: {error}"
    return BuiltFiles(onnx_bytes, onnx_text, packed_bytes, packed_text)


# --- speed ------------------------------------------------------------------------------------


def speed_panel(engine: Engine, plan: Plan, data: EvalData) -> None:
    cores = os.cpu_count() or 1
    batches_col, runs_col, threads_col, button_col = st.columns([2.2, 2.2, 1.3, 1.6], vertical_alignment="bottom")
    large = data.x[0].numel() > 4096  # e.g. 3x224x224 images: a batch of 32 takes seconds per run
    batches = batches_col.pills("Batch sizes", BATCH_OPTIONS, selection_mode="multi",
                                default=[1, 8] if large else [1, 32], key="speed_batches")
    runs = runs_col.slider("Timed runs (median)", 3, 30, 10, key="speed_runs",
                           help="each engine runs this many times after 2 warm-up runs, taking turns with the others")
    threads = int(threads_col.number_input("Threads", 1, max(cores, 1), cores, key="speed_threads",
                                           help="intra-op threads of onnxruntime and torch"))
    batches = tuple(sorted(batches or [1]))
    key = (state.current_name(), plan.to_json(), data.description, batches, runs, threads)
    if button_col.button("Measure speed", key="speed_measure", type="primary", icon=":material/speed:"):
        from lightviz.analysis import latency

        with st.spinner(f"Timing the float and the plan's exports in onnxruntime, batches {batches}…"):
            bench = latency.benchmark(engine, plan, data, batches=batches, runs=runs, threads=threads,
                                      budget_s=20.0)
        _store(SPEED_KEY, key, bench, KEEP_SPEED)
        _remember_latency(plan, data, bench, threads)
    bench = _cached(SPEED_KEY).get(key)
    if bench is None:
        st.caption("Measure speed exports the float model and this plan, runs both in onnxruntime on this "
                   "machine's CPU (and the float model in torch), and explains what the runtime made of them.")
        return
    show_benchmark(bench)


def show_benchmark(bench: Benchmark) -> None:
    from lightviz.analysis.latency import runtime_kernels

    speedups = bench.speedups()
    columns = st.columns(len(speedups) + 1)
    for column, (batch, speedup) in zip(columns, speedups.items()):
        column.metric(f"Speed-up at batch {batch}", f"{speedup:.2f}×",
                      help="onnxruntime float export's median time / the plan's (above 1: the plan is faster)")
    columns[-1].metric("ONNX size", human_bytes(bench.onnx_bytes),
                       delta=f"{bench.onnx_bytes / bench.float_onnx_bytes - 1:+.0%} vs float",
                       delta_color="inverse", help=f"float export {human_bytes(bench.float_onnx_bytes)}")
    charts.show(plots.latency_figure(bench.frame(), bench.threads, bench.wa), key="latency_chart")
    lesson = "\n".join(f"- {note}" for note in bench.notes if not note.startswith("No speed-up"))
    faster = {b: s for b, s in speedups.items() if s >= NO_SPEEDUP}
    each = ", ".join(f"{s:.2f}× at batch {b}" for b, s in speedups.items())
    if not faster:
        st.info(f"**No speed-up on this runtime** ({each}): a smaller model is not automatically a faster one. "
                f"Why:\n\n{lesson}", icon=":material/school:")
    elif len(faster) < len(speedups):
        st.info(f"**Faster at some batch sizes only** ({each}). Why:\n\n{lesson}", icon=":material/school:")
    else:
        st.success(f"**Faster at every batch size measured** ({each}).\n\n{lesson}", icon=":material/speed:")
    integer, floating = runtime_kernels(bench.runtime_ops)
    st.caption(f"onnxruntime ran {integer} integer and {floating} float compute kernels: "
               + ", ".join(f"{op} ×{n}" for op, n in bench.runtime_ops.items())
               + f". {bench.threads} threads, load average {bench.load_average[0]} while measuring; "
               "the engines take turns run by run, so other work on the machine slows them alike.")
    totals = bench.totals
    with st.expander(f"Cost per layer: {_compact(totals['macs'])} MACs per input, "
                     f"{_compact(totals['bit_operations'])} bit-operations "
                     f"({totals['bit_operation_reduction']:.1f}× fewer than float32)"):
        charts.show(plots.cost_figure(bench.costs), key="cost_chart")
        st.dataframe(bench.costs, hide_index=True, width="stretch")


# --- the latency cache (Trade-offs reads it) --------------------------------------------------


def latency_key(plan_json: str, data: EvalData, batch: int, threads: int) -> tuple:
    return state.current_name(), data.description, plan_json, batch, threads


def cached_latency(plan_json: str, data: EvalData, batch: int = 1, threads: int | None = None) -> float | None:
    """The plan's measured onnxruntime median (ms) when it was measured in this session, else None."""
    return _cached(LATENCY_KEY).get(latency_key(plan_json, data, batch, threads or os.cpu_count() or 1))


def measure_latency(engine: Engine, plan_json: str, data: EvalData, batch: int = 1, runs: int = 5) -> float:
    """Measure (or reuse) one plan's onnxruntime latency; the float model's plan is `float_plan()`."""
    threads = os.cpu_count() or 1
    found = cached_latency(plan_json, data, batch, threads)
    if found is None:
        from lightviz.analysis import latency

        row = latency.plan_latency(engine, Plan.from_json(plan_json), data, batch=batch, runs=runs, threads=threads)
        found = row.median_ms
        _store(LATENCY_KEY, latency_key(plan_json, data, batch, threads), found, KEEP_LATENCY)
    return found


def with_latency(frame, data: EvalData):
    """`frame` (rows with a "plan" column) with a latency_ms column, only the rows measured so far."""
    if frame is None or not len(frame):
        return frame
    values = [cached_latency(plan_json, data) for plan_json in frame["plan"]]
    return frame.assign(latency_ms=values).dropna(subset=["latency_ms"])


def unmeasured(plan_jsons: list[str], data: EvalData) -> list[str]:
    """The distinct plans (JSON) without a latency yet, in order."""
    return [p for p in dict.fromkeys(plan_jsons) if cached_latency(p, data) is None]


def latency_axis_controls(engine: Engine, data: EvalData, plan_jsons: list[str]) -> None:
    """Say what the latency axis shows, and measure the plans still missing (on request)."""
    missing = unmeasured([float_plan_json(), *plan_jsons], data)
    info, button = st.columns([4, 1.3], vertical_alignment="center")
    info.caption("Latency is measured, not estimated: each plan is exported and timed in onnxruntime on this "
                 f"machine's CPU (batch 1, median of 5 runs, {os.cpu_count() or 1} threads), once per plan and "
                 "kept for this session. Points not measured yet are not drawn.")
    if missing and button.button(f"Measure {len(missing)} plan{'s' if len(missing) > 1 else ''}",
                                 key="measure_latency", icon=":material/speed:"):
        bar = st.progress(0.0, text=f"0 of {len(missing)} plans timed")
        for i, plan_json in enumerate(missing):
            measure_latency(engine, plan_json, data)
            bar.progress((i + 1) / len(missing), text=f"{i + 1} of {len(missing)} plans timed")
        bar.empty()
        st.rerun()  # draw the chart and this control again with every point measured
    elif not missing:
        button.caption("All shown plans are measured.")


def float_plan_json() -> str:
    return float_plan(True).to_json()


def _remember_latency(plan: Plan, data: EvalData, bench: Benchmark, threads: int) -> None:
    for row in bench.rows:
        source = {"onnxruntime plan": plan.to_json(), "onnxruntime float": float_plan_json()}.get(row.engine)
        if source is not None:
            _store(LATENCY_KEY, latency_key(source, data, row.batch, threads), row.median_ms, KEEP_LATENCY)
    batch = min(row.batch for row in bench.rows)  # the report's summary: the smallest batch measured
    st.session_state.setdefault(report.SPEED_KEY, {})[state.current_name()] = {
        "float_ms": bench.latency("onnxruntime float", batch).median_ms,
        "compressed_ms": bench.latency("onnxruntime plan", batch).median_ms,
        "runtime": f"onnxruntime on this CPU, {threads} thread{'s' if threads != 1 else ''}", "batch": batch,
        "plan": plan.to_json(), "data": data.description}


# --- helpers ----------------------------------------------------------------------------------


def _cached(name: str) -> dict:
    return st.session_state.setdefault(name, {})


def _store(name: str, key: tuple, value, keep: int) -> None:
    kept = _cached(name)
    kept.pop(key, None)
    kept[key] = value
    while len(kept) > keep:
        kept.pop(next(iter(kept)))


def _compact(n: float) -> str:
    """599680 -> '600k', 38379520 -> '38.4M': three significant digits.

    >>> _compact(599680), _compact(38379520), _compact(512)
    ('600k', '38.4M', '512')
    """
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def _plain(text: str) -> str:
    """Text that may hold names from a user's model, with Markdown's special characters escaped."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~$-])", r"\\\1", text)


def _safe(name: str) -> str:
    """A file-name-safe stem of a model name (user file names included)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "model"
