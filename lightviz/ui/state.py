"""Streamlit session state, initialized in one place; cached loaders; the Plan in the URL.

The Plan in `st.session_state["plan"]` is the single source of truth for what the user
chose. Global widgets are keyed by the spec field they set (WIDGET_KEYS); their values are
written from the Plan before they render and read back into a new Plan when they change.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace

import streamlit as st

from lightviz.analysis import explore as analysis
from lightviz.analysis.editing import apply_layer_edits
from lightviz.analysis.sweep import plan_row
from lightviz.core.engine import Engine
from lightviz.core.specs import (
    Plan,
    PruneSpec,
    QuantSpec,
    plan_from_token,
    plan_to_token,
)
from lightviz.io import datasets, zoo
from lightviz.ui import registry

DEFAULT_MODEL = "digits-cnn"
USER_DATA_KEY = "user_data"  # {model name: EvalData the user uploaded for it}
EVAL_SIZE_KEY = "eval_sizes"  # {model name: samples to evaluate on; absent: all, or the default count}
PROGRESS_DELAY_S = 0.3  # evaluations faster than this show no progress bar
HISTORY_LIMIT = 200

# widget key -> (where in the plan, field)
WIDGET_KEYS = {
    "bits": ("quant", "bits"),
    "scheme": ("quant", "scheme"),
    "granularity": ("quant", "granularity"),
    "group_size": ("quant", "group_size"),
    "range_method": ("quant", "range_method"),
    "percentile": ("quant", "percentile"),
    "sparsity": ("prune", "sparsity"),
    "prune_method": ("prune", "method"),
    "global_prune": ("plan", "global_prune"),
    "fold_bn": ("plan", "fold_bn"),
}
FLOAT_BITS_LABEL = "float"  # the bits widget shows "float" for bits=None


# --- cached resources (shared by all sessions; never mutated) ------------------------------


@st.cache_resource(show_spinner="Loading model…")
def load_bundle(name: str) -> zoo.ModelBundle:
    return registry.get(name) or zoo.load_model(name)  # registry: models fine-tuned in this app


@st.cache_resource(show_spinner=False)
def load_engine(name: str) -> Engine:
    return Engine(load_bundle(name).model)


@st.cache_resource(show_spinner=False, max_entries=32)
def load_eval_data(name: str, n: int | None = None) -> datasets.EvalData:
    """The model's default data (data.eval_data_for), `n` samples of it; one object per (name, n)."""
    return datasets.eval_data_for(load_bundle(name), n)


# --- session state -----------------------------------------------------------------------


def through_router(page_file: str) -> None:
    """Send a page that Streamlit runs on its own through app.py's router.

    Before app.py has run once in a fresh server, Streamlit treats pages/ as a legacy
    multipage folder: a link to /tradeoffs runs pages/tradeoffs.py alone, without the
    router, the sidebar or the session state. Then run app.py (which comes back here).
    """
    if "plan" not in st.session_state:
        st.session_state.return_to = page_file
        st.switch_page("app.py", query_params=dict(st.query_params))


def return_to_page() -> None:
    """In app.py, after st.navigation: finish a detour made by `through_router`."""
    target = st.session_state.pop("return_to", None)
    if target:
        st.switch_page(target, query_params=dict(st.query_params))


def init_state() -> None:
    """Set every session key once per session, from the URL when it holds a shared link."""
    ss = st.session_state
    if "plan" in ss:
        _restore_widgets(ss.plan)
        if st.query_params.get("model") != ss.model_name or st.query_params.get("plan") != plan_to_token(ss.plan):
            sync_url()  # page switches drop the query parameters; the link always shares the plan
        return
    ss.model_name = DEFAULT_MODEL
    ss.plan = Plan()
    ss.history = []  # rows of plans tried (see record_history)
    ss.selected_layer = None
    ss.link_error = None
    ss.editor_generation = 0  # bumped whenever the plan's overrides change outside the table
    params = st.query_params
    if "model" in params:
        name = params["model"]
        if name in zoo.list_models() or name in zoo.list_torchvision_models() or registry.get(name):
            ss.model_name = name
        else:
            ss.link_error = f"The link names an unknown model {name!r}; showing {DEFAULT_MODEL}."
    if "plan" in params:
        try:
            plan = plan_from_token(params["plan"])
            load_engine(ss.model_name).check_plan(plan)
            ss.plan = checked(plan)
        except ValueError as error:
            ss.link_error = f"The link's plan could not be used ({error}); showing the default plan."
    write_widgets(ss.plan)


def current_plan() -> Plan:
    return st.session_state.plan


def current_name() -> str:
    return st.session_state.model_name


def current_bundle() -> zoo.ModelBundle:
    return load_bundle(current_name())


def current_engine() -> Engine:
    return load_engine(current_name())


def full_data() -> datasets.EvalData:
    """The data uploaded for the current model in this session, else its default data."""
    uploaded = st.session_state.get(USER_DATA_KEY, {}).get(current_name())
    return uploaded if uploaded is not None else load_eval_data(current_name())


def current_data() -> datasets.EvalData:
    """What the current model is evaluated on: `full_data()`, cut to the chosen size.

    The same object comes back while nothing changes, so the engine's logits cache hits.
    """
    name, n = current_name(), eval_size()
    uploaded = st.session_state.get(USER_DATA_KEY, {}).get(name)
    if uploaded is None:
        return load_eval_data(name, n)
    subsets = st.session_state.setdefault("user_data_subsets", {})  # {model name: (full, n, subset)}
    kept = subsets.get(name)
    if kept is None or kept[0] is not uploaded or kept[1] != n:
        kept = subsets[name] = (uploaded, n, datasets.subset(uploaded, n))
    return kept[2]


def eval_size() -> int | None:
    """Samples the current model is evaluated on; None: all of its data (generated: the default)."""
    return st.session_state.get(EVAL_SIZE_KEY, {}).get(current_name())


def set_eval_size(n: int | None) -> None:
    st.session_state.setdefault(EVAL_SIZE_KEY, {})[current_name()] = n


@contextmanager
def progress_bar(delay_s: float | None = None):
    """A progress callback (fraction, text) for Engine.evaluate, shown here once work takes longer
    than `delay_s` (default PROGRESS_DELAY_S). Each update also lets Streamlit stop a run the user
    has made obsolete."""
    delay_s = PROGRESS_DELAY_S if delay_s is None else delay_s
    slot, start, shown = st.empty(), time.perf_counter(), False

    def report(fraction: float, text: str) -> None:
        nonlocal shown
        if shown or time.perf_counter() - start > delay_s:
            slot.progress(min(max(fraction, 0.0), 1.0), text=text)
            shown = True
    try:
        yield report
    finally:
        slot.empty()


def set_plan(plan: Plan) -> None:
    """Make `plan` current: widgets follow it and the URL shares it.

    Call from a widget callback or before the global widgets render.
    """
    if plan.overrides != st.session_state.plan.overrides:
        st.session_state.editor_generation += 1
    st.session_state.plan = plan
    write_widgets(plan)
    sync_url()


def set_model(name: str, keep_plan: bool = False) -> None:
    """Switch model; the plan keeps its global settings and drops per-layer overrides
    (all of it with keep_plan, for a model of the same architecture, e.g. fine-tuned weights)."""
    st.session_state.model_name = name
    if not keep_plan:
        st.session_state.plan = replace(st.session_state.plan, overrides=())
    st.session_state.selected_layer = None
    st.session_state.editor_generation += 1
    sync_url()


def sync_url() -> None:
    st.query_params["model"] = st.session_state.model_name
    st.query_params["plan"] = plan_to_token(st.session_state.plan)


# --- global widgets <-> plan -------------------------------------------------------------


def write_widgets(plan: Plan) -> None:
    """Put the plan's default values into the widgets' session keys."""
    for key, value in _widget_values(plan).items():
        st.session_state[key] = value


def _restore_widgets(plan: Plan) -> None:
    """Give back the plan's values to widget keys Streamlit dropped.

    Streamlit forgets the state of a widget that did not render in the last run (a hidden
    group-size input, every global control while another page shows), so those keys come
    back from the Plan, the single source of truth.
    """
    missing = [key for key in WIDGET_KEYS if key not in st.session_state]
    if missing:
        values = _widget_values(plan)
        for key in missing:
            st.session_state[key] = values[key]


def _widget_values(plan: Plan) -> dict:
    values = {}
    for key, (where, name) in WIDGET_KEYS.items():
        source = {"quant": plan.default.quant, "prune": plan.default.prune, "plan": plan}[where]
        value = getattr(source, name)
        values[key] = FLOAT_BITS_LABEL if key == "bits" and value is None else value
    return values


def plan_from_widgets() -> Plan:
    """A new Plan from the widgets' values, keeping per-layer overrides. Raises ValueError."""
    ss, plan = st.session_state, st.session_state.plan
    values = {key: ss.get(key) for key in WIDGET_KEYS}
    bits = None if values["bits"] == FLOAT_BITS_LABEL else int(values["bits"])
    quant = QuantSpec(bits=bits, scheme=values["scheme"], granularity=values["granularity"],
                      group_size=int(values["group_size"]), range_method=values["range_method"],
                      percentile=float(values["percentile"]), format=plan.default.quant.format)
    prune = PruneSpec(sparsity=float(values["sparsity"]), method=values["prune_method"], m=plan.default.prune.m)
    default = replace(plan.default, quant=quant, prune=prune)
    return replace(plan, default=default, global_prune=bool(values["global_prune"]),
                   fold_bn=bool(values["fold_bn"]))


def checked(plan: Plan) -> Plan:
    """`plan`, or ValueError when the current model cannot compute it interactively."""
    reason = analysis.interactive_cost_error(current_engine(), plan)
    if reason:
        raise ValueError(f"{reason}. The previous setting is kept")
    return plan


def on_widget_change() -> None:
    """Widget callback: rebuild the plan from the widgets, or keep the old one and explain."""
    try:
        st.session_state.plan = checked(plan_from_widgets())
        st.session_state.pop("widget_error", None)
    except ValueError as error:
        st.session_state.widget_error = str(error)
        write_widgets(st.session_state.plan)
    sync_url()


def record_history(row: dict) -> None:
    """Remember a configuration the user tried (one row per distinct plan and model)."""
    history = st.session_state.history
    if history and _history_key(history[-1]) == _history_key(row):
        return
    history.append(row)
    del history[:-HISTORY_LIMIT]


def _history_key(row: dict) -> tuple:
    return row.get("model"), row.get("data"), row.get("plan")


# --- per-layer overrides (the layer table) -------------------------------------------------

LAYER_EDITOR_KEY = "layer_editor"


def absorb_layer_edits(names: list[str]) -> None:
    """Turn the layer table's pending edits into per-layer overrides of the plan.

    Called as the table's on_change callback and once after it renders (edits seeded without
    a callback). Absorbed edits bump `editor_generation`, which gives the table a new identity
    so it starts clean from the plan (otherwise the browser would resend stale edits).
    """
    ss = st.session_state
    edits = ss.get(LAYER_EDITOR_KEY) or {}
    edited_rows = edits.get("edited_rows") or {}
    if not edited_rows:
        return
    try:
        plan = checked(apply_layer_edits(ss.plan, names, edited_rows))
        ss.pop("editor_error", None)
    except ValueError as error:
        ss.editor_error = str(error)
        plan = ss.plan
    ss.plan = plan
    ss.editor_generation += 1
    sync_url()


def reset_overrides() -> None:
    """Drop every per-layer override (button callback)."""
    st.session_state.plan = replace(st.session_state.plan, overrides=())
    st.session_state.editor_generation += 1
    st.session_state.pop("editor_error", None)
    sync_url()


def select_layer(name: str | None) -> None:
    st.session_state.selected_layer = name


def show_messages() -> None:
    """Show pending messages once: a shared link that could not be used, a refused value."""
    ss = st.session_state
    if ss.get("link_error"):
        st.warning(ss.link_error)
        ss.link_error = None
    for key in ("widget_error", "editor_error", "model_error"):
        if ss.get(key):
            st.error(ss.pop(key))


# --- derived results (cheap on repeat: the engine caches layers and logits) -----------------


@st.cache_data(max_entries=64, show_spinner=False)
def _layer_table(name: str, plan_json: str, data_key: str, _data: datasets.EvalData):
    return load_engine(name).layer_table(Plan.from_json(plan_json), _data)


def current_layer_table(plan: Plan | None = None):
    """engine.layer_table of the plan (default: the current one), cached per model, plan and data
    (PTQ methods calibrate on the data)."""
    data = current_data()
    return _layer_table(current_name(), (plan or current_plan()).to_json(), f"{data.name}|{data.description}", data)


def current_evaluation(plan: Plan | None = None):
    """engine.evaluate of the plan (default: the current one) on the model's evaluation data,
    with a progress bar here while it takes long."""
    with progress_bar() as progress:
        return current_engine().evaluate(plan or current_plan(), current_data(), progress)


def float_logits():
    """The float model's logits on the evaluation data, with a progress bar here while it takes long."""
    with progress_bar() as progress:
        return current_engine().logits(None, current_data(), lambda done, total: progress(
            done / total, f"Running the float model: {done:,} of {total:,} samples"))


def attempt(compute, what: str, hint: str):
    """compute(), or None after showing st.error with what failed and what to do (never a traceback)."""
    try:
        return compute()
    except ValueError as error:
        st.error(f"{what}: {error}. What to do: {hint}.")
    except Exception as error:  # noqa: BLE001 - the app keeps running, the user learns what happened
        st.error(f"{what} ({type(error).__name__}: {error}). What to do: {hint}.")
    return None


def record_evaluation(plan: Plan) -> None:
    """Add the plan to the session's history (Trade-offs draws it), once per distinct plan."""
    history, name, data = st.session_state.history, current_name(), current_data()
    if history and _history_key(history[-1]) == (name, data.description, plan.to_json()):
        return
    record_history({"model": name, "data": data.description, **plan_row(current_engine(), data, plan)})
