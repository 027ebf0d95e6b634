"""Explore's number format and PTQ method controls (the plan's default; the layer table overrides).

Widgets are keyed `num_format`, `method_*` and written from the Plan before they render (the
Plan stays the single source of truth: a shared link, an applied plan or another page may
change it); a change writes a new Plan back, or keeps the old one and says why.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from lightviz.core.methods.spec import METHOD_HELP, PRESETS, MethodSpec
from lightviz.core.specs import FORMAT_BITS, FORMAT_BLOCKS, FORMAT_HELP, NUMBER_FORMATS, QuantSpec
from lightviz.ui import state

KEYS = {"num_format": None, "method_name": "name", "method_calib": "calib_samples", "method_damp": "damp",
        "method_act_order": "act_order", "method_alpha": "alpha", "method_iterations": "iterations"}
SYNCED = "_method_synced"  # the (format, method) the widgets were last written from


def method_choices(current: str) -> list[str]:
    """The method presets, plus `current` when it is another valid combination (from a link)."""
    return list(PRESETS) + ([current] if current not in PRESETS else [])


def method_help(name: str) -> str:
    """One line per step of a method name."""
    return " + ".join(METHOD_HELP[step].split(":")[0] if "+" in name else METHOD_HELP[step]
                      for step in name.split("+"))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _sync_widgets() -> None:
    ss, default = st.session_state, state.current_plan().default
    current = (default.quant.format, default.method)
    if ss.get(SYNCED, "never") != current or any(key not in ss for key in KEYS):
        wanted = {"num_format": default.quant.format,
                  **{key: getattr(default.method, field) for key, field in KEYS.items() if field is not None}}
        for key, value in wanted.items():  # written only where they differ (see state.write_widgets)
            if ss.get(key) != value:
                ss[key] = value
        ss[SYNCED] = current


def _on_change() -> None:
    ss = st.session_state
    plan = ss.plan
    try:
        quant = plan.default.quant
        if ss.num_format != quant.format:  # from a format back to int keeps its bits; int -> format sets them
            quant = QuantSpec(**{**_fields(quant), "format": ss.num_format, "bits": quant.bits})
        method = MethodSpec(name=ss.method_name, calib_samples=int(ss.method_calib), damp=float(ss.method_damp),
                            act_order=bool(ss.method_act_order), alpha=float(ss.method_alpha),
                            iterations=int(ss.method_iterations), seed=plan.default.method.seed)
        new = state.checked(plan.with_default(replace(plan.default, quant=quant, method=method)))
        ss.pop("widget_error", None)
    except ValueError as error:
        ss.widget_error = f"Format or method refused: {error}"
        ss[SYNCED] = "refused"  # the widgets go back to the plan's values on the rerun
        return
    state.commit_plan(new, "format_method")  # one Undo step; overrides keep their pinned fields
    state.write_widgets(new)  # bits, scheme and granularity follow what the format fixes


def _fields(quant: QuantSpec) -> dict:
    return {name: getattr(quant, name) for name in ("bits", "scheme", "granularity", "group_size", "range_method",
                                                     "percentile", "format")}


def format_and_method_controls() -> None:
    """Number format and method of every layer (the layer table overrides them per layer)."""
    _sync_widgets()
    plan = state.current_plan()
    default = plan.default
    fmt_col, method_col, note_col = st.columns([2.2, 2.6, 5.2])
    fmt_col.selectbox("Number format", NUMBER_FORMATS, key="num_format", on_change=_on_change,
                      help=" · ".join(f"{name}: {text}" for name, text in FORMAT_HELP.items()))
    method_col.selectbox("Method", method_choices(default.method.name), key="method_name", on_change=_on_change,
                         help="How weights are rounded. " + " · ".join(f"{m}: {h}" for m, h in METHOD_HELP.items()))
    fmt = default.quant.format
    lines = [_sentence(FORMAT_HELP[fmt])]
    if fmt != "int":
        fixed = "bits, scheme" + (", granularity" if fmt in FORMAT_BLOCKS else "")
        lines.append(f"{fmt} stores {FORMAT_BITS[fmt]} bits per weight; it sets {fixed}.")
    lines.append(_sentence(method_help(default.method.name)))
    note_col.caption(" ".join(lines))
    method = default.method
    with st.expander(f"Method settings · {method.name}", expanded=False):
        calib, damp, order, alpha, steps = st.columns([1.6, 1.3, 1.5, 1.3, 1.6])
        calib.number_input("Calibration inputs", min_value=1, max_value=4096, step=16, key="method_calib",
                           on_change=_on_change, help="The first inputs of the calibration set that data-driven "
                                                      "methods (gptq, adaround, bias correction, smoothquant, awq) "
                                                      "run through the model, in one batch.")
        damp.number_input("GPTQ damp", min_value=0.0, max_value=1.0, step=0.005, format="%.3f", key="method_damp",
                          on_change=_on_change, help="Added to the Hessian's diagonal, as a fraction of its mean.")
        order.toggle("GPTQ act-order", key="method_act_order", on_change=_on_change,
                     help="Round columns by decreasing Hessian diagonal (the inputs with the most energy first).")
        alpha.number_input("SmoothQuant α", min_value=0.0, max_value=1.0, step=0.05, format="%.2f",
                           key="method_alpha", on_change=_on_change,
                           help="How much of the input's range moves into the weights.")
        steps.number_input("AdaRound steps", min_value=1, max_value=100_000, step=100, key="method_iterations",
                           on_change=_on_change, help="Adam steps per layer (AIMET uses 10,000; fewer is faster).")
        data = state.current_data()
        source = ("the digits training split" if data.name == "digits-test" else "the first evaluation inputs")
        st.caption(f"Data-driven methods calibrate on {method.calib_samples} inputs of {source}, with float "
                   "activations; the layer table says, per layer, what ran or why a step does not apply. "
                   "Compare methods side by side on the Methods page.")
