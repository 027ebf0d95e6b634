"""Trade-offs: accuracy against size for a sweep of plans, the Pareto frontier, and what you tried."""

import streamlit as st

from lightviz.ui import gate, router, state, tradeoffs

router.through_router("pages/tradeoffs.py")  # opened by URL before the app first ran

st.title("Trade-offs")
chosen = tradeoffs.sweep_form()
gate.require_started()  # a big model's first evaluation waits for a click
if chosen is not None:
    state.attempt(lambda: tradeoffs.run(chosen), "The sweep could not finish", "pick fewer or other values")
tradeoffs.tradeoff_chart()
tradeoffs.results_section()
