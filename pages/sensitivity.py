"""Sensitivity: where precision matters, per layer; mixed precision from it; range methods compared."""

import streamlit as st

from lightviz.ui import router, sensitivity, state

router.through_router("pages/sensitivity.py")  # opened by URL before the app first ran

st.title("Sensitivity")
chosen = sensitivity.sensitivity_form()
if chosen is not None:
    state.attempt(lambda: sensitivity.run(chosen), "The sensitivity could not finish", "pick fewer settings")
sensitivity.heatmap_section()
st.header("Mixed precision")
sensitivity.mixed_section()
st.header("Range methods compared")
sensitivity.ranges_section()
