"""Compare: plan A (pinned) and plan B (the current plan) side by side."""

import streamlit as st

from lightviz.ui import compare, router, state

router.through_router("pages/compare.py")  # opened by URL before the app first ran

st.title("Compare A and B")
comparison = compare.comparison()
if comparison is None:
    st.stop()
compare.header(comparison)
compare.headline(comparison)
st.subheader("Per layer")
compare.layers(comparison)
st.subheader("Weights of one layer under A and B")
state.attempt(lambda: compare.histogram(comparison), "The histogram could not be drawn", "pick another layer")
st.subheader("Accuracy against size")
compare.tradeoffs(comparison)
