"""Streamlit session state, initialized in one place; cached loaders; the Plan in the URL.

The Plan in `st.session_state["plan"]` is the single source of truth for what the user
chose. Global widgets are keyed by the spec field they set (WIDGET_KEYS); their values are
read back into a new Plan when they change, and written from the Plan only where they differ
from it (a plan set elsewhere: a link, Undo, a point picked on Trade-offs). Writing a widget's
key makes Streamlit push that value to the browser, so re-seeding every widget on every run
would reset a slider the user is still moving (key presses lost while a rerun computes).

Every plan change goes through `commit_plan`: it records the step for Undo (history.py),
gives the layer table a new identity when overrides changed, and pushes the new URL (links.py).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace

import streamlit as st

from lightviz.analysis import baseline as baselines
from lightviz.analysis import explore as analysis
from lightviz.analysis.editing import apply_layer_edits
from lightviz.analysis.sweep import plan_row
from lightviz.core.engine import Engine
from lightviz.core.specs import Plan, PruneSpec, QuantSpec
from lightviz.core.task import Task, task_of, with_float_embeddings
from lightviz.io import datasets, zoo
from lightviz.ui import data_registry, history, links, registry
from lightviz.ui.links import (  # noqa: F401 (state's names for them)
    DATA_TOKEN_KEY,
    DEFAULT_MODEL,
    EVAL_SIZE_KEY,
    PINNED_KEY,
    USER_DATA_KEY,
    sync_url,
)
from lightviz.ui.resources import load_bundle, load_engine, load_eval_data  # noqa: F401 (state's names)
from lightviz.ui.text import plain

SAVED_OVERRIDES_KEY = "model_overrides"  # {model name: (overrides, pinned)} left when switching away
SEQ_LEN_KEY = "seq_lens"  # {language model name: tokens per evaluation sequence; absent: the default}
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
    "scale_dtype": ("quant", "scale_dtype"),  # shown for language models (ui/lm.py)
}
FLOAT_BITS_LABEL = "float"  # the bits widget shows "float" for bits=None


# --- session state -----------------------------------------------------------------------


def init_state() -> None:
    """Set every session key once per session, from the URL when it holds a shared link; later,
    read the URL back when the browser's Back or Forward button changed it."""
    ss = st.session_state
    if "plan" in ss:
        _restore_widgets(ss.plan)
        query = st.query_params.to_dict()
        if query.get("plan") and query != links.link_params() and links.is_history_navigation():
            links.apply(query)  # Back / Forward: the URL holds the plan to go back to
        elif query != links.link_params():
            sync_url()  # page switches drop the query parameters; the link always shares the plan
        return
    ss.model_name = DEFAULT_MODEL
    ss.plan = Plan()
    ss.history = []  # rows of plans tried (see record_history)
    ss.selected_layer = None
    ss.link_error = None
    ss.editor_generation = 0  # bumped whenever the plan's overrides change outside the table
    ss[PINNED_KEY] = None
    query = st.query_params.to_dict()
    if any(key in query for key in links.PARAMS):
        links.apply(query, record=False)
    if "plan" not in query and load_bundle(ss.model_name).task == "causal_lm":
        ss.plan = with_float_embeddings(ss.plan, load_engine(ss.model_name).layers)  # as LM tools do
        sync_url()
    write_widgets(ss.plan)


def current_plan() -> Plan:
    return st.session_state.plan


def current_name() -> str:
    return st.session_state.model_name


def current_bundle() -> zoo.ModelBundle:
    return load_bundle(current_name())


def current_engine() -> Engine:
    return load_engine(current_name())


def current_task() -> Task:
    """What the current model is measured by: classification (accuracy) or causal LM (perplexity)."""
    return task_of(current_data())


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
        seq_len = st.session_state.get(SEQ_LEN_KEY, {}).get(name)
        return load_eval_data(name, n, seq_len) if seq_len else load_eval_data(name, n)
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
    sync_url()


def use_uploaded_data(data: datasets.EvalData | None, token: str | None = None) -> None:
    """Evaluate the current model on uploaded `data` (None: its default data again), all of it."""
    ss, name, n = st.session_state, current_name(), None
    if data is None:
        ss.setdefault(USER_DATA_KEY, {}).pop(name, None)
        ss.setdefault(DATA_TOKEN_KEY, {}).pop(name, None)
    else:
        data_registry.register(token, data)
        ss.setdefault(USER_DATA_KEY, {})[name], ss.setdefault(DATA_TOKEN_KEY, {})[name] = data, token
        pending = ss.get("pending_link") or {}
        if pending.get("data") == token:  # the link's missing data is here now: its sample count too
            ss.pending_link = None
            n = int(pending["n"]) if str(pending.get("n", "")).isdigit() else None
    set_eval_size(n)


def data_token() -> str | None:
    """The link token of the current model's uploaded data, None for its default data."""
    return st.session_state.get(DATA_TOKEN_KEY, {}).get(current_name())


@contextmanager
def progress_bar(delay_s: float | None = None):
    """A progress callback (fraction, text) for Engine.evaluate, shown here once work takes longer
    than `delay_s` (default PROGRESS_DELAY_S). Every update (after each layer, each batch) touches
    the page, which is where Streamlit stops a run the user has made obsolete by a newer change:
    a running evaluation is cancelled when its result is no longer wanted."""
    delay_s = PROGRESS_DELAY_S if delay_s is None else delay_s
    slot, start, shown = st.empty(), time.perf_counter(), False

    def report(fraction: float, text: str) -> None:
        nonlocal shown
        if shown or time.perf_counter() - start > delay_s:
            slot.progress(min(max(fraction, 0.0), 1.0), text=plain(text))
            shown = True
        else:  # any element call is where Streamlit stops a run whose result is no longer wanted
            slot.empty()
    try:
        yield report
    finally:
        slot.empty()


def commit_plan(plan: Plan, source: str | None = None, record: bool = True) -> None:
    """Make `plan` current: one Undo step (changes from the same `source` control within a
    moment are one step), a new table identity when overrides changed, a new URL."""
    ss = st.session_state
    if record:
        history.record(ss.model_name, ss.plan, plan, source)
    if plan.overrides != ss.plan.overrides:
        ss.editor_generation += 1
    ss.plan = plan
    sync_url()


def set_plan(plan: Plan) -> None:
    """Make `plan` current and put its values into the widgets (a plan chosen elsewhere).

    Call from a widget callback or before the global widgets render.
    """
    commit_plan(plan)
    write_widgets(plan)


def undo() -> None:
    """Button callback: back to the plan before the last change."""
    previous = history.step(current_name(), current_plan(), backwards=True)
    if previous is not None:
        commit_plan(previous, record=False)
        write_widgets(previous)


def redo() -> None:
    """Button callback: forward again to the plan Undo left."""
    following = history.step(current_name(), current_plan(), backwards=False)
    if following is not None:
        commit_plan(following, record=False)
        write_widgets(following)


def set_model(name: str, keep_plan: bool = False) -> None:
    """Switch model. The plan keeps its global settings; per-layer overrides stay when the new
    model has those layers (all of the plan with keep_plan: same architecture, e.g. fine-tuned
    weights). Otherwise they are kept aside for the old model and come back with it, and a
    message says so; overrides left earlier for the new model come back now."""
    ss = st.session_state
    old, plan = ss.model_name, ss.plan
    saved = ss.setdefault(SAVED_OVERRIDES_KEY, {})
    saved[old] = (plan.default, plan.overrides, plan.pinned)  # what this model had, for coming back
    if not keep_plan:
        layers = set(load_engine(name).by_name)
        if plan.overrides and not all(layer in layers for layer, _ in plan.overrides):
            ss.model_note = (f"{old}'s {_count(plan.overrides)} ({', '.join(n for n, _ in plan.overrides)}) "
                             f"do not fit {name}'s layers: they are kept for {old} and come back when you switch "
                             "back to it.")
            plan = replace(plan, overrides=(), pinned=())
        default, overrides, pinned = saved.get(name, (plan.default, (), ()))
        if not plan.overrides and overrides:  # rebased: pinned fields kept, the rest from today's default
            back = Plan(default=default, overrides=overrides, pinned=pinned).with_default(plan.default)
            plan = replace(plan, overrides=back.overrides, pinned=back.pinned)
            ss.model_info = f"Your {_count(plan.overrides)} for {name} are back."
        elif not plan.overrides and load_bundle(name).task == "causal_lm":  # as LM tools do: embeddings float
            plan = with_float_embeddings(plan, load_engine(name).layers)
    ss.model_name, ss.plan, ss.selected_layer = name, plan, None
    ss.editor_generation += 1
    pending = ss.get("pending_link")
    if pending and pending.get("model") == name:  # a link waited for this upload: apply the rest of it
        ss.pending_link = None
        links.apply(pending)
    write_widgets(ss.plan)
    sync_url()


def pinned_plan() -> Plan | None:
    """Plan A of the comparison, when one is pinned for the current model."""
    pinned = st.session_state.get(PINNED_KEY)
    return pinned[1] if pinned and pinned[0] == current_name() else None


def set_pinned(plan: Plan | None) -> None:
    """Pin `plan` as plan A for the current model (None unpins); the link shares it."""
    st.session_state[PINNED_KEY] = None if plan is None else (current_name(), plan)
    sync_url()


def _count(overrides) -> str:
    return f"{len(overrides)} layer override{'s' if len(overrides) != 1 else ''}"


# --- global widgets <-> plan -------------------------------------------------------------


def write_widgets(plan: Plan) -> None:
    """Put the plan's default values into the widgets' session keys, only where they differ:
    a key written in a run is pushed to the browser and replaces what the user is doing there."""
    for key, value in _widget_values(plan).items():
        if key not in st.session_state or st.session_state[key] != value:
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
                      percentile=float(values["percentile"]), scale_dtype=values["scale_dtype"] or "float32",
                      format=plan.default.quant.format)
    prune = PruneSpec(sparsity=float(values["sparsity"]), method=values["prune_method"], m=plan.default.prune.m)
    default = replace(plan.default, quant=quant, prune=prune)
    return replace(plan.with_default(default), global_prune=bool(values["global_prune"]),
                   fold_bn=bool(values["fold_bn"]))  # overrides keep their pinned fields only


def checked(plan: Plan) -> Plan:
    """`plan`, or ValueError when the current model cannot compute it interactively."""
    reason = analysis.interactive_cost_error(current_engine(), plan)
    if reason:
        raise ValueError(f"{reason}. The previous setting is kept")
    return plan


def on_widget_change(source: str | None = None) -> None:
    """Widget callback: rebuild the plan from the widgets, or keep the old one and explain
    (then, and only then, the widgets are put back to the plan's values)."""
    try:
        plan = checked(plan_from_widgets())
        st.session_state.pop("widget_error", None)
    except ValueError as error:
        st.session_state.widget_error = str(error)
        write_widgets(st.session_state.plan)
        return
    commit_plan(plan, source)


def record_history(row: dict) -> None:
    """Remember a configuration the user tried (one row per distinct plan and model)."""
    rows = st.session_state.history
    if rows and _history_key(rows[-1]) == _history_key(row):
        return
    rows.append(row)
    del rows[:-HISTORY_LIMIT]


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
    commit_plan(plan, "layer table")
    ss.editor_generation += 1  # even when nothing changed: the table drops the absorbed edits


def reset_overrides() -> None:
    """Drop every per-layer override (button callback)."""
    commit_plan(replace(st.session_state.plan, overrides=(), pinned=()))
    st.session_state.pop("editor_error", None)


def select_layer(name: str | None) -> None:
    st.session_state.selected_layer = name


def show_messages() -> None:
    """Show pending messages once: a shared link that could not be used, a refused value."""
    ss = st.session_state
    if ss.get("link_error"):
        st.warning(plain(ss.link_error), icon=":material/link_off:")
        ss.link_error = None
    if ss.get("model_note"):
        st.warning(plain(ss.pop("model_note")), icon=":material/layers:")
    if ss.get("model_info"):
        st.info(plain(ss.pop("model_info")), icon=":material/layers:")
    for key in ("editor_error", "model_error"):  # widget_error: shown at the controls (controls.py)
        if ss.get(key):
            st.error(plain(ss.pop(key)))


# --- derived results (cheap on repeat: the engine caches layers and logits) -----------------


@st.cache_data(max_entries=64, show_spinner=False)
def _layer_table(name: str, plan_json: str, data_key: str, _data: datasets.EvalData):
    return load_engine(name).layer_table(Plan.from_json(plan_json), _data)


def current_layer_table(plan: Plan | None = None):
    """engine.layer_table of the plan (default: the current one), cached per model, plan and data
    (PTQ methods calibrate on the data)."""
    data = current_data()
    return _layer_table(current_name(), (plan or current_plan()).to_json(), f"{data.name}|{data.description}", data)


def reference_name() -> str | None:
    """The original float model a fine-tuned current model is compared with; None otherwise
    (the current model is its own float baseline)."""
    original = registry.original(current_name())
    return original if original and links.known_model(original) else None


def reference_engine() -> Engine:
    """The engine whose float model is the baseline: the original for a fine-tuned model."""
    name = reference_name()
    return load_engine(name) if name else current_engine()


def current_evaluation(plan: Plan | None = None):
    """engine.evaluate of the plan (default: the current one) on the model's evaluation data,
    with a progress bar here while it takes long. For a fine-tuned model, float accuracy,
    agreement and KL are against the original float model (`reference_name`)."""
    plan, data = plan or current_plan(), current_data()
    with progress_bar() as progress:
        evaluation = current_engine().evaluate(plan, data, progress)
    if reference_name() is None:
        return evaluation
    return baselines.rebase(evaluation, reference_logits(), current_engine().logits(plan, data), data.y,
                            reference_engine().float_size_bytes)


@st.cache_data(max_entries=64, show_spinner=False)
def _baseline(name: str, fold_bn: bool) -> baselines.Baseline:
    return baselines.baseline(load_engine(name), Plan(fold_bn=fold_bn))


def current_baseline(plan: Plan | None = None) -> baselines.Baseline:
    """The float model the plan's sizes compare with (as the plan folds BatchNorm)."""
    return _baseline(reference_name() or current_name(), (plan or current_plan()).fold_bn)


def float_logits():
    """The current model's float logits on the evaluation data (progress bar while it takes long)."""
    with progress_bar() as progress:
        return current_engine().logits(None, current_data(), lambda done, total: progress(
            done / total, f"Running the float model: {done:,} of {total:,} samples"))


def reference_logits():
    """The float baseline's logits on the evaluation data: the original model's for a fine-tuned one."""
    if reference_name() is None:
        return float_logits()
    with progress_bar() as progress:
        return reference_engine().logits(None, current_data(), lambda done, total: progress(
            done / total, f"Running the original float model: {done:,} of {total:,} samples"))


def attempt(compute, what: str, hint: str):
    """compute(), or None after showing st.error with what failed and what to do (never a traceback)."""
    try:
        return compute()
    except ValueError as error:
        st.error(plain(f"{what}: {error}. What to do: {hint}."))
    except Exception as error:  # noqa: BLE001 - the app keeps running, the user learns what happened
        st.error(plain(f"{what} ({type(error).__name__}: {error}). What to do: {hint}."))
    return None


def record_evaluation(plan: Plan) -> None:
    """Add the plan to the session's history (Trade-offs draws it), once per distinct plan."""
    rows, name, data = st.session_state.history, current_name(), current_data()
    if rows and _history_key(rows[-1]) == (name, data.description, plan.to_json()):
        return
    row = plan_row(current_engine(), data, plan)
    if reference_name() is not None:  # a fine-tuned model: numbers against its original
        row |= {key: value for key, value in current_evaluation(plan).to_dict().items() if key in row}
    record_history({"model": name, "data": data.description, **row})
