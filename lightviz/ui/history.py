"""Undo and Redo of plan changes, per model, kept in the session.

Every plan change goes through `state.commit_plan`, which records here the plan it replaced.
Changes from the same control within COALESCE_S seconds are one step, so six quick key
presses on Bits undo at once. A new change clears Redo. (Browser Back restores the previous
plan through the URL instead: see `links`.)
"""

from __future__ import annotations

import time

import streamlit as st

from lightviz.core.specs import Plan

UNDO_KEY, REDO_KEY, LAST_KEY = "undo_stack", "redo_stack", "_last_plan_change"
LIMIT = 100
COALESCE_S = 1.5


def _stack(key: str, model: str) -> list[Plan]:
    return st.session_state.setdefault(key, {}).setdefault(model, [])


def record(model: str, before: Plan, after: Plan, source: str | None = None) -> None:
    """Remember `before` as the step Undo goes back to (unless it only repeats the last change)."""
    if before == after:
        return
    undo, now = _stack(UNDO_KEY, model), time.monotonic()
    last = st.session_state.get(LAST_KEY)
    if not (source and last and last[0] == (model, source) and now - last[1] < COALESCE_S and undo):
        undo.append(before)
        del undo[:-LIMIT]
    st.session_state[LAST_KEY] = ((model, source), now)
    _stack(REDO_KEY, model).clear()


def step(model: str, current: Plan, backwards: bool) -> Plan | None:
    """Move one step back (Undo) or forward (Redo): the plan to make current, or None."""
    source, target = (UNDO_KEY, REDO_KEY) if backwards else (REDO_KEY, UNDO_KEY)
    stack = _stack(source, model)
    if not stack:
        return None
    _stack(target, model).append(current)
    st.session_state[LAST_KEY] = None  # the next change is a step of its own
    return stack.pop()


def available(model: str) -> tuple[int, int]:
    """(undo steps, redo steps) for `model`."""
    return len(_stack(UNDO_KEY, model)), len(_stack(REDO_KEY, model))
