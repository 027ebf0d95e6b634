"""Trade-offs' sections: the sweep form, accuracy against size, error against bits, CSV export."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lightviz.analysis import explore as analysis
from lightviz.analysis import sweep
from lightviz.analysis.sweep import plan_label
from lightviz.core.specs import GRANULARITIES, PRUNE_METHODS, SCHEMES, Plan
from lightviz.core.task import embeddings_float, task_of, with_float_embeddings
from lightviz.plots import tradeoffs as plots
from lightviz.ui import charts, compute, deploy, state
from lightviz.ui import compare as compare_ui
from lightviz.ui import finetune as finetune_ui

MAX_CONFIGS = 200
SPARSITY_OPTIONS = [0.0, 0.25, 0.5, 0.75, 0.9]
DEFAULTS = {"bits": [2, 3, 4, 8], "schemes": ["symmetric", "asymmetric"], "granularities": ["tensor", "channel"],
            "sparsities": [0.0, 0.5], "prune_method": "unstructured"}
LM_DEFAULTS = {"bits": [2, 3, 4, 8], "schemes": ["symmetric", "asymmetric"], "granularities": ["channel", "group"],
               "sparsities": [0.0], "prune_method": "unstructured"}  # weight-only, as LMs are quantized
CHART_KEY = "tradeoff_chart"


def _settings() -> dict:
    if state.current_bundle().task == "causal_lm":
        return st.session_state.setdefault("sweep_settings_lm", dict(LM_DEFAULTS))
    return st.session_state.setdefault("sweep_settings", dict(DEFAULTS))


def sweep_form() -> dict | None:
    """The sweep's lists; returns them when Run was pressed, else None."""
    last = _settings()
    with st.form("sweep_form", border=True):
        chosen = {"bits": st.pills("Bits", list(range(1, 17)), selection_mode="multi", default=last["bits"],
                                   key="sweep_bits")}
        schemes, grans = st.columns(2)  # two rows of two: every pill readable on a 1280-pixel screen
        sparsities, method = st.columns(2)
        chosen |= {
            "schemes": schemes.pills("Scheme", SCHEMES, selection_mode="multi", default=last["schemes"],
                                     key="sweep_schemes"),
            "granularities": grans.pills("Granularity", GRANULARITIES, selection_mode="multi",
                                         default=last["granularities"], key="sweep_granularities"),
            "sparsities": sparsities.pills("Sparsity", SPARSITY_OPTIONS, selection_mode="multi",
                                           default=last["sparsities"], format_func=lambda s: f"{s:.0%}",
                                           key="sweep_sparsities"),
            "prune_method": method.selectbox("Pruning", PRUNE_METHODS,
                                             index=PRUNE_METHODS.index(last["prune_method"]), key="sweep_prune"),
        }
        n = len(chosen["bits"]) * len(chosen["schemes"]) * len(chosen["granularities"]) * len(chosen["sparsities"])
        st.caption("Every combination is one uniform plan on top of the current plan's range method, group size "
                   "and BatchNorm folding. Sweep results stay until you run another sweep for this model.")
        pressed = st.form_submit_button("Run sweep", type="primary")
    if not pressed:
        return None
    if n == 0:
        st.error("Pick at least one value in each list (bits, scheme, granularity, sparsity), then run again.")
        return None
    if n > MAX_CONFIGS:
        st.error(f"That is {n} configurations; pick at most {MAX_CONFIGS} (fewer values in a list).")
        return None
    st.session_state["sweep_settings_lm" if state.current_bundle().task == "causal_lm" else "sweep_settings"] = chosen
    return chosen


def run(chosen: dict) -> None:
    """Evaluate every configuration with a progress bar; keep the results in the session."""
    engine, data, base = state.current_engine(), state.current_data(), state.current_plan()
    plans = sweep.sweep_configs(sorted(chosen["bits"]), chosen["schemes"], chosen["granularities"],
                                sorted(chosen["sparsities"]), chosen["prune_method"], base=base)
    if embeddings_float(base, engine.layers):  # a language model keeps its embeddings float in every plan
        plans = list(dict.fromkeys(with_float_embeddings(plan, engine.layers) for plan in plans))
    for plan in plans:
        reason = analysis.interactive_cost_error(engine, plan)
        if reason:
            raise ValueError(f"{plan_label(plan)}: {reason}")
    n, where = len(plans), compute.backend()
    on = compute.backend_caption(where)
    bar = st.progress(0.0, text=f"0 of {n} configurations{on}")

    def detail(i: int, fraction: float, text: str) -> None:  # inside one configuration: large models
        bar.progress((i + fraction) / n, text=f"Configuration {i + 1} of {n}: {text}")

    results = sweep.run_sweep(engine, data, plans, detail=detail, backend=where,
                              progress=lambda i, total: bar.progress(i / total, text=f"{i} of {total} "
                                                                                    f"configurations done{on}"))
    curves = analysis.sqnr_vs_bits(engine, base, chosen["bits"])
    bar.empty()
    quant = base.default.quant
    st.session_state.setdefault("sweeps", {})[state.current_name()] = {
        "results": results, "curves": curves, "data": data.description,
        "curve_settings": f"{quant.scheme}, per {quant.granularity}, {quant.range_method} range, no pruning"}


def current_sweep() -> dict | None:
    """The last sweep of the current model, when it ran on the data in use now."""
    found = st.session_state.get("sweeps", {}).get(state.current_name())
    return found if found and found["data"] == state.current_data().description else None


def _on_point_select() -> None:
    points = (st.session_state.get(CHART_KEY) or {}).get("selection", {}).get("points", [])
    sources = st.session_state.get("tradeoff_sources", {})
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) == 2 and data[0] in sources:
            row = sources[data[0]].loc[int(data[1])]
            plan = Plan.from_json(row["plan"])
            state.set_plan(plan)
            st.session_state.made_current = plan_label(plan)
            return


def tradeoff_chart() -> None:
    """Accuracy (agreement without labels) against size: sweep, frontier, float, current, history."""
    data, plan = state.current_data(), state.current_plan()
    lm = task_of(data).is_lm
    y = sweep.chart_column(data)
    evaluation = state.current_evaluation(plan)
    found = current_sweep()
    results = found["results"] if found else None
    history = pd.DataFrame(st.session_state.history)
    if len(history):
        same = (history["model"] == state.current_name()) & (history["data"] == data.description)
        history = history[same].reset_index(drop=True)
    st.session_state.tradeoff_sources = {"sweep": results if results is not None else pd.DataFrame(),
                                         "history": history}
    float_y = evaluation.chart_value(y, floating=True)  # the original float model's, when fine-tuned
    current_y = evaluation.chart_value(y)
    axis = st.radio("x axis", ["size", "measured latency"], horizontal=True, key="tradeoff_x",
                    help="size: what a packed file holds. measured latency: each plan exported to ONNX and timed "
                         "in onnxruntime on this machine, on request")
    if axis == "size":
        fig = plots.tradeoff_figure(
            results, y, sweep.pareto_front(results, y=y) if results is not None and len(results) else None,
            (state.current_baseline(plan).size_bytes, float_y), (evaluation.size_bytes, current_y, plan_label(plan)),
            history if len(history) else None)
        fig = finetune_ui.add_to_tradeoffs(fig, y)  # fine-tuned results (pages/finetune.py)
        fig = compare_ui.add_to_tradeoffs(fig, y)  # plan A, when one is pinned (pages/compare.py)
    else:
        engine = state.current_engine()
        shown = [plan.to_json(), *(results["plan"] if results is not None else []), *history.get("plan", [])]
        deploy.latency_axis_controls(engine, data, shown)
        timed, timed_history = deploy.with_latency(results, data), deploy.with_latency(history, data)
        st.session_state.tradeoff_sources = {"sweep": timed if timed is not None else pd.DataFrame(),
                                             "history": timed_history}
        float_ms, current_ms = deploy.cached_latency(deploy.float_plan_json(), data), \
            deploy.cached_latency(plan.to_json(), data)
        front = sweep.pareto_front(timed, x="latency_ms", y=y) if timed is not None and len(timed) else None
        fig = plots.tradeoff_figure(timed, y, front, (float_ms if float_ms is not None else float("nan"), float_y),
                                    None if current_ms is None else (current_ms, current_y, plan_label(plan)),
                                    timed_history if len(timed_history) else None, x="latency_ms")
    charts.show(fig, key=CHART_KEY, on_select=_on_point_select, selection_mode="points")
    if st.session_state.get("made_current"):
        done, link = st.columns([3, 1], vertical_alignment="center")
        done.success(f"Current plan is now: {st.session_state.pop('made_current')}")
        link.page_link("pages/explore.py", label="See it in Explore", icon=":material/arrow_forward:")
    if lm:
        st.caption("Perplexity on the evaluation text (log scale): lower is better, so the frontier runs along the "
                   "bottom. Every plan keeps the embeddings and LM head as the current plan does.")
    elif not data.labeled:
        st.caption("No labels for this model's inputs: the y axis is agreement with the float model.")
    if results is None:
        st.info("Run a sweep to fill the chart; the float model, the current plan and what you tried in "
                "Explore are shown already.")


def results_section() -> None:
    """Error against bits per layer, the sweep as a table, and its CSV."""
    found = current_sweep()
    if not found:
        return
    charts.show(plots.sqnr_bits_figure(found["curves"], found["curve_settings"]), key="sqnr_bits_chart")
    results = found["results"]
    with st.expander(f"Sweep results ({len(results)} configurations)"):
        st.dataframe(results.drop(columns=["plan"]), hide_index=True, width="stretch")
    st.download_button("Download sweep as CSV", results.to_csv(index=False).encode(),
                       file_name=f"lightviz-sweep-{state.current_name()}.csv", mime="text/csv",
                       icon=":material/download:")
