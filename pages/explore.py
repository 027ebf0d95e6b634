"""Explore: set the plan globally or per layer, and see what it does to the weights and the model."""

import streamlit as st

from lightviz.ui import act_controls, controls, explore, method_controls, state

state.through_router("pages/explore.py")  # opened by URL before the app first ran

HINT = "change the setting you just made, or reset overrides"

st.title("Explore")
controls.global_controls()
method_controls.format_and_method_controls()
act_controls.activation_controls()
metrics_box = st.container()
engine, data, bundle = state.current_engine(), state.current_data(), state.current_bundle()

st.subheader("Layers")
plan = state.attempt(lambda: explore.layer_editor(engine), "The layer table could not be built", HINT)
with metrics_box:  # the progress bar of a long evaluation, then the numbers, show at the top
    results = plan and state.attempt(lambda: (state.current_evaluation(plan), state.current_layer_table(plan)),
                                     "This plan could not be evaluated", HINT)
    if not results:
        st.stop()
    evaluation, table = results
    controls.metrics_row(evaluation)

explore.layer_charts(table)
st.subheader("Weights of one layer")
state.attempt(lambda: explore.histogram_section(engine, plan, table), "The histogram could not be drawn",
              "pick another layer or channel")
st.subheader("What changed")
state.attempt(lambda: explore.flips_section(engine, plan, data, bundle.class_names),
              "The changed predictions could not be listed", HINT)
state.record_evaluation(plan)  # for Trade-offs' history; after the page so it never delays it
