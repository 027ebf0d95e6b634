"""Explore: set the plan globally or per layer, and see what it does to the weights and the model."""

import streamlit as st

from lightviz.ui import act_controls, controls, deploy, explore, gate, lm, method_controls, router, state

router.through_router("pages/explore.py")  # opened by URL before the app first ran

HINT = "change the setting you just made, or reset overrides"

st.title("Explore")
controls.undo_redo()
controls.global_controls()
if lm.is_lm():
    lm.lm_controls()
else:  # number formats and PTQ methods: for the image classifiers (language models: presets above)
    method_controls.format_and_method_controls()
act_controls.activation_controls()
gate.require_started()  # a big model's first evaluation waits for a click
engine, data, bundle = state.current_engine(), state.current_data(), state.current_bundle()
state.absorb_layer_edits([layer.name for layer in engine.layers])  # the numbers come first: table edits too
plan = state.current_plan()
results = state.attempt(lambda: (state.current_evaluation(plan), state.current_baseline(plan)),
                        "This plan could not be evaluated", HINT)
if not results:
    st.stop()
controls.metrics_row(*results, plan)
explore.reuse_caption(engine, plan, data)

st.subheader("Layers")
table = state.attempt(lambda: explore.layer_editor(engine), "The layer table could not be built", HINT)
if table is None:
    st.stop()
plan = state.current_plan()
explore.layer_charts(table)
st.subheader("Weights of one layer")
state.attempt(lambda: explore.histogram_section(engine, plan, table), "The histogram could not be drawn",
              "pick another layer or channel")
st.subheader("What changed")
if lm.is_lm():
    lm.generation_section()
    st.subheader("Activation outliers")
    lm.outliers_section()
else:
    state.attempt(lambda: explore.flips_section(engine, plan, data, bundle.class_names),
                  "The changed predictions could not be listed", HINT)
    st.subheader("Deploy")
    state.attempt(lambda: deploy.deploy_section(engine, plan, data, bundle.name), "The deploy section failed",
                  "try another plan, or the CLI: python -m lightviz export")
state.record_evaluation(plan)  # for Trade-offs' history; after the page so it never delays it
