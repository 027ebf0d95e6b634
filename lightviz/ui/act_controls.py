"""Explore's activation controls: quantize every layer's input, calibrated, in one expander.

The widgets are keyed `act_*` and written from the Plan before they render (the Plan stays
the single source of truth: a shared link, an applied mixed-precision plan or another page
may change `plan.activations`); a change writes a new Plan back.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from lightviz.core.activations import wa_label
from lightviz.core.specs import (
    RANGE_METHOD_HELP,
    RANGE_METHODS,
    SCHEMES,
    ActivationSpec,
)
from lightviz.core.task import wa_names
from lightviz.ui import state
from lightviz.ui.format import sentence_case

FLOAT = "float"
BITS_OPTIONS = list(range(2, 17)) + [FLOAT]  # as the weight bits slider: float last
KEYS = ("act_bits", "act_scheme", "act_range_method", "act_percentile", "act_calib_batches", "act_per_token")
SYNCED = "_act_synced"  # the activation spec the widgets were last written from


def _values(spec: ActivationSpec | None) -> dict:
    shown = spec or ActivationSpec()
    return {"act_bits": FLOAT if spec is None else spec.bits, "act_scheme": shown.scheme,
            "act_range_method": shown.range_method, "act_percentile": shown.percentile,
            "act_calib_batches": shown.calib_batches, "act_per_token": shown.per_token}


def _sync_widgets() -> None:
    ss, spec = st.session_state, state.current_plan().activations
    if ss.get(SYNCED, "never") != spec or any(key not in ss for key in KEYS):
        for key, value in _values(spec).items():
            ss[key] = value
        ss[SYNCED] = spec


def _on_change() -> None:
    ss = st.session_state
    plan = ss.plan
    try:
        spec = None if ss.act_bits == FLOAT else replace(
            plan.activations or ActivationSpec(), bits=int(ss.act_bits), scheme=ss.act_scheme,
            range_method=ss.act_range_method, percentile=float(ss.act_percentile),
            calib_batches=int(ss.act_calib_batches), per_token=bool(ss.get("act_per_token", False)))
    except ValueError as error:
        ss.widget_error = f"Activation setting refused: {error}"
        ss[SYNCED] = "refused"  # the widgets go back to the plan's values on the rerun
        return
    ss[SYNCED] = spec
    state.commit_plan(replace(plan, activations=spec), "activations")


def activation_controls() -> None:
    """An expander with activation bits (or float), scheme, range method and calibration batches."""
    _sync_widgets()
    plan = state.current_plan()
    names = wa_names(plan, state.current_engine().layers)  # an LM's float embeddings do not count
    spec = plan.activations
    title = f"Activations · {wa_label(plan, names)}" + ("" if spec else " (activations float)")
    with st.expander(title, expanded=spec is not None):
        bits, scheme, method, pct, batches = st.columns([3, 2.2, 2, 1.4, 1.6])
        bits.select_slider("Activation bits", BITS_OPTIONS, key="act_bits", on_change=_on_change,
                           help="Bits of every compressible layer's input, per tensor. 'float' keeps them float32.")
        off = spec is None
        scheme.radio("Activation scheme", SCHEMES, key="act_scheme", horizontal=True, on_change=_on_change,
                     disabled=off, help="asymmetric suits inputs after a ReLU (all >= 0): no code is spent on "
                                        "negatives")
        method.selectbox("Activation range", RANGE_METHODS, key="act_range_method", on_change=_on_change,
                         disabled=off, help=" · ".join(f"{m}: {h}" for m, h in RANGE_METHOD_HELP.items()))
        pct.number_input("Percentile", min_value=50.01, max_value=100.0, step=0.01, format="%.2f",
                         key="act_percentile", on_change=_on_change,
                         disabled=off or st.session_state.act_range_method != "percentile")
        batches.number_input("Calibration batches", min_value=1, max_value=100, step=1, key="act_calib_batches",
                             on_change=_on_change, disabled=off,
                             help=f"batches of {(spec or ActivationSpec()).batch_size} inputs the float model "
                                  "runs to fix each input's range")
        if state.current_bundle().task == "causal_lm":
            st.toggle("Per token (dynamic)", key="act_per_token", on_change=_on_change, disabled=off,
                      help="One scale per token, chosen as the model runs (LLM practice), instead of one range per "
                           "layer calibrated on the calibration text: outlier channels then stretch only their "
                           "own tokens' scales.")
        if off:
            st.caption("W/A notation: W = weight bits, A = activation bits (32 = float32). Pick activation bits "
                       "to quantize every layer's input with ranges calibrated on a few batches.")
            return
        if spec.per_token:
            st.caption(f"Every token's input vector gets its own {spec.bits}-bit {spec.scheme} range as the model "
                       f"runs; nothing is calibrated. {RANGE_METHOD_HELP[spec.range_method].capitalize()}.")
            return
        source = ("the digits training split (no test image sets a range)" if state.current_data().name ==
                  "digits-test" else "the first inputs of the evaluation data")
        st.caption(f"Ranges calibrated once on the float model over {spec.calib_samples} inputs of {source}; "
                   f"every weight setting reuses them. {sentence_case(RANGE_METHOD_HELP[spec.range_method])}.")
        if spec.range_method == "entropy":
            st.caption("Entropy (KL) calibration can clip inputs with few distinct values, such as raw pixels, "
                       "far too tightly: compare the methods on the Sensitivity page.")
