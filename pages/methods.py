"""Methods: PTQ methods side by side on the current model, at the bit-widths and formats you pick."""

import streamlit as st

from lightviz.ui import methods, router, state

router.through_router("pages/methods.py")  # opened by URL before the app first ran

st.title("Methods side by side")
st.caption("Round-to-nearest against GPTQ, AdaRound, bias correction, cross-layer equalization, SmoothQuant, AWQ and "
           "Hadamard rotations: accuracy, size and per-layer error on the same model and data.")
if state.current_bundle().task == "causal_lm":
    st.info("PTQ methods and number formats cover the image classifiers' Conv and Linear layers. For a language "
            "model, use Explore's weight-only presets (groups, float16 scales) and Sensitivity per block.")
    st.stop()
if st.session_state.get("methods_applied"):
    st.success(st.session_state.pop("methods_applied"))
chosen = methods.comparison_form()
if chosen is not None:
    state.attempt(lambda: methods.run(chosen), "The comparison could not finish", "pick fewer methods or settings")
methods.results_section()
