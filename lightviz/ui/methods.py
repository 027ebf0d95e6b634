"""The Methods page: PTQ methods side by side on the current model (analysis.methods).

Session key (set here only): `methods_results` {model: {"result", "data", "label"}}.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from lightviz.analysis.methods import compare_methods
from lightviz.core.methods.spec import METHOD_HELP, PRESETS
from lightviz.core.specs import NUMBER_FORMATS, LayerConfig
from lightviz.plots import methods as plots
from lightviz.ui import charts, state
from lightviz.ui.format import bytes_text, percent

BITS_CHOICES = [2, 3, 4, 6, 8]
DEFAULT_METHODS = ["gptq", "bias_correction", "equalize"]
MAX_RUNS = 40  # methods x settings per comparison


def _results() -> dict:
    return st.session_state.setdefault("methods_results", {})


def comparison_form() -> dict | None:
    """Methods, bit-widths and formats; returns them when Compare was pressed."""
    plan = state.current_plan()
    with st.form("methods_form", border=True):
        methods_col, bits_col, formats_col = st.columns([3.4, 2.2, 2.4])
        methods = methods_col.multiselect("Methods (round-to-nearest is always the baseline)",
                                          [m for m in PRESETS if m != "nearest"], default=DEFAULT_METHODS,
                                          key="methods_pick",
                                          help=" · ".join(f"{m}: {h}" for m, h in METHOD_HELP.items()))
        bits = bits_col.pills("Integer bits", BITS_CHOICES, selection_mode="multi", default=[4, 3, 2],
                              key="methods_bits")
        formats = formats_col.multiselect("Number formats", list(NUMBER_FORMATS[1:]), default=[],
                                          key="methods_formats")
        quant, method = plan.default.quant, plan.default.method
        st.caption(f"Every layer gets the setting and the method, with the current plan's {quant.scheme} scheme, "
                   f"per-{quant.granularity} granularity and {quant.range_method} range (no pruning, no overrides). "
                   f"Methods calibrate on {method.calib_samples} inputs (Explore's method settings); AdaRound "
                   f"runs {method.iterations:,} steps per layer, which takes minutes on big models.")
        pressed = st.form_submit_button("Compare methods", type="primary")
    if not pressed:
        return None
    runs = (len(methods) + 1) * (len(bits) + len(formats))
    if not bits and not formats:
        st.error("Pick at least one bit-width or number format, then compare again.")
        return None
    if runs > MAX_RUNS:
        st.error(f"That is {runs} evaluations; pick at most {MAX_RUNS} (fewer methods or settings).")
        return None
    return {"methods": methods, "bits": sorted(bits, reverse=True), "formats": formats}


def run(chosen: dict) -> None:
    """Run the comparison with a progress bar and keep it for this model."""
    engine, plan, data = state.current_engine(), state.current_plan(), state.current_data()
    bar = st.progress(0.0, text="starting…")
    result = compare_methods(engine, data, chosen["methods"], chosen["bits"], chosen["formats"], base=plan,
                             method_settings=plan.default.method,
                             progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=text))
    bar.empty()
    _results()[state.current_name()] = {"result": result, "data": data.description}


def results_section() -> None:
    """Table, charts and per-layer errors of the last comparison on this model."""
    found = _results().get(state.current_name())
    if found is None:
        st.info("Pick methods and bit-widths and press **Compare methods**: each one compresses every layer of "
                "the current model and the page shows accuracy, size and per-layer error side by side.")
        return
    result = found["result"]
    rows = result.rows
    column = plots.score_column(rows)
    st.caption(f"On {found['data']}. Float model: "
               f"{'accuracy ' + percent(result.float_accuracy) if result.float_accuracy is not None else 'no labels'}"
               f", {bytes_text(result.float_size_bytes)}.")
    st.dataframe(summary_table(rows, column), hide_index=True, width="stretch")
    left, right = st.columns(2)
    charts.show(plots.methods_accuracy_figure(rows, result.float_accuracy), left, key="methods_accuracy")
    charts.show(plots.methods_tradeoff_figure(rows, result.float_accuracy, result.float_size_bytes), right,
                key="methods_tradeoff")
    settings = list(dict.fromkeys(rows["setting"]))
    pick, value = st.columns([2, 3])
    setting = pick.selectbox("Per-layer error at", settings, key="methods_layer_setting")
    what = value.radio("Error of", ["layer output", "weights"], horizontal=True, key="methods_layer_value",
                       help="Output: each layer alone on the inputs it sees in the float model (what GPTQ and "
                            "AdaRound minimize). Weights: the SQNR of the weights themselves.")
    charts.show(plots.methods_layer_figure(result.layers, setting,
                                               "output_sqnr_db" if what == "layer output" else "weight_sqnr_db"),
                    key="methods_layers")
    with st.expander("What each method did, per layer"):
        st.dataframe(result.layers[result.layers["setting"] == setting], hide_index=True, width="stretch")
    use, download = st.columns([2, 3])
    best = rows.sort_values([column, "kl"], ascending=[False, True]).iloc[0]
    use.button(f"Use {best['method']} at {best['setting']} in Explore", on_click=_use, args=(best,),
               help="Makes it the current plan's default method and setting.")
    download.download_button("Download the comparison as CSV", rows.to_csv(index=False).encode(),
                             file_name=f"lightviz-methods-{state.current_name()}.csv", mime="text/csv",
                             icon=":material/download:", key="methods_csv")


def summary_table(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Methods (rows) x settings: the score in %, the change against nearest in points."""
    table = rows.pivot(index="method", columns="setting", values=column) * 100
    table = table.loc[list(dict.fromkeys(rows["method"])), list(dict.fromkeys(rows["setting"]))]
    nearest = table.loc["nearest"]
    out = pd.DataFrame({"method": table.index})
    for setting in table.columns:
        out[f"{setting} {column} %"] = table[setting].round(2).to_numpy()
        out[f"{setting} vs nearest (pp)"] = (table[setting] - nearest[setting]).round(2).to_numpy()
    seconds = rows.groupby("method", sort=False)["seconds"].sum()
    out["seconds"] = seconds.reindex(table.index).round(2).to_numpy()
    return out


def _use(row: pd.Series) -> None:
    plan = state.current_plan()
    quant = plan.default.quant
    if row["format"] != "int":
        quant = replace(replace(quant, format="int", bits=quant.bits or 8), format=row["format"])
    else:
        quant = replace(quant, format="int", bits=int(row["bits"]))
    default = LayerConfig(quant=quant, prune=plan.default.prune,
                          method=replace(plan.default.method, name=row["method"]))
    state.set_plan(replace(plan, default=default, overrides=()))
    st.session_state.methods_applied = f"{row['method']} at {row['setting']} is now the plan's default."
