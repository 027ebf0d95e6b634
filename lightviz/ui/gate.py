"""A big model's first evaluation waits for a click, so its sample count (or the model) can
still be changed before minutes of work start; after that every change evaluates at once
(and a change made while a run goes cancels the run: see state.progress_bar).

Big means weights x samples above BIG_COST: resnet18 on 32 generated inputs waits, on 8 it
does not; the digits samples never wait.
"""

from __future__ import annotations

import streamlit as st

from lightviz.ui import state
from lightviz.ui.text import plain

STARTED_KEY = "started_models"  # big models whose first evaluation the user asked for
BIG_COST = 1e8  # weights x samples above which a model's first evaluation waits for a click


def ready_to_evaluate() -> bool:
    """False until the user starts the first evaluation of a big model: until then the sample
    count and the model can still be changed without waiting for a run."""
    started = st.session_state.setdefault(STARTED_KEY, set())
    name = state.current_name()
    if name in started:
        return True
    engine, data = state.current_engine(), state.current_data()
    if sum(layer.n_weights for layer in engine.layers) * len(data) < BIG_COST \
            or engine.cached_logits(None, data) is not None:
        started.add(name)
        return True
    return False


def start_evaluation() -> None:
    """Button callback: the current model may evaluate from now on."""
    st.session_state.setdefault(STARTED_KEY, set()).add(state.current_name())


def require_started() -> None:
    """Stop the page before a big model's first evaluation, with a button to start it."""
    if ready_to_evaluate():
        return
    engine, data = state.current_engine(), state.current_data()
    weights = sum(layer.n_weights for layer in engine.layers)
    st.info(f"{plain(state.current_name())} is large ({weights / 1e6:.1f} M weights) and will run on {len(data):,} "
            f"{'inputs' if not data.labeled else 'samples'}: its first evaluation runs the float and the "
            "compressed model over all of them. Set **Evaluation samples** in the sidebar (or pick another "
            "model) first if you want fewer; changing a setting later cancels a run still going.",
            icon=":material/hourglass_top:")
    st.button("Evaluate now", type="primary", on_click=start_evaluation, icon=":material/play_arrow:")
    st.stop()
