"""The shareable link: what the URL holds, and reading a session back from it.

| parameter | holds                                                                          |
|-----------|--------------------------------------------------------------------------------|
| `model`   | the model's name: a sample, a torchvision architecture ('resnet18@pretrained'   |
|           | with pretrained weights), a fine-tuned or distilled model, an uploaded one      |
| `plan`    | the Plan, compressed (`plan_to_token`)                                          |
| `n`       | evaluation samples, when not the model's default                                |
| `data`    | uploaded evaluation data, 'upload:<file name>#<digest>', when not the default   |
|           | (opens only in the session that uploaded it: uploads are private)              |
| `a`       | plan A of an A/B comparison, when one is pinned (`plan_to_token`)                 |

Every plan change pushes a new URL, so the browser's Back button goes to the previous plan
(the app reads the URL back on history navigation). A link restores all it can and says
plainly what it could not (an upload this server does not hold, weights not downloaded
here); what is missing is remembered, and uploading it applies the rest of the link.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import streamlit as st

from lightviz.analysis.explore import interactive_cost_error
from lightviz.core.specs import Plan, plan_from_token, plan_to_token
from lightviz.io import pretrained, zoo
from lightviz.ui import data_registry, history, registry
from lightviz.ui.resources import load_engine

PARAMS = ("model", "plan", "n", "data", "a")
DEFAULT_MODEL = "digits-cnn"
USER_DATA_KEY = "user_data"  # {model name: EvalData the user uploaded for it}
DATA_TOKEN_KEY = "user_data_tokens"  # {model name: its uploaded data's link token (data_registry)}
EVAL_SIZE_KEY = "eval_sizes"  # {model name: samples to evaluate on; absent: all, or the default count}
PINNED_KEY = "pinned"  # (model name, Plan) pinned as plan A of the A/B comparison, or None


def params(model: str, plan: Plan, n: int | None, data: str | None, pinned: Plan | None = None) -> dict[str, str]:
    """The URL's query parameters for a session's state."""
    out = {"model": model, "plan": plan_to_token(plan)}
    if n is not None:
        out["n"] = str(n)
    if data is not None:
        out["data"] = data
    if pinned is not None:
        out["a"] = plan_to_token(pinned)
    return out


@dataclass
class Restored:
    """What a link restores: the model to show, the plan (None: the default), the sample count,
    the uploaded data to use, plan A of a comparison, one message per thing it could not
    restore, and what to apply once a missing model or data set is uploaded (`pending`)."""

    model: str
    plan: Plan | None = None
    pinned: Plan | None = None
    n: int | None = None
    data: str | None = None
    messages: list[str] = field(default_factory=list)
    pending: dict | None = None


def restore(query: Mapping[str, str], default_model: str, known: Callable[[str], bool],
            check: Callable[[str, Plan], None], fallback: Callable[[str], str | None]) -> Restored:
    """Read a link.

    Args:
        query: the URL's query parameters.
        default_model: what to show when the link names no usable model.
        known: whether this server can load a model name now.
        check: raises ValueError when a plan does not fit a model (or costs too much).
        fallback: the closest model this server has for a missing one (a fine-tuned model's
            original, a pretrained model's random-weight architecture), or None.
    """
    name = query.get("model") or default_model
    restored = Restored(model=name)
    if not known(name):
        restored.model = fallback(name) or default_model
        restored.messages.append(missing_model(name, restored.model))
        restored.pending = {key: query[key] for key in PARAMS if key in query}
    token = query.get("plan")
    if token:
        try:
            plan = plan_from_token(token)
            try:
                check(restored.model, plan)
            except ValueError:
                if not plan.overrides or restored.model == name:
                    raise
                plan = Plan(default=plan.default, global_prune=plan.global_prune, fold_bn=plan.fold_bn,
                            activations=plan.activations)  # overrides of layers this model lacks
                check(restored.model, plan)
                restored.messages.append(f"Its per-layer overrides name layers {restored.model} does not have; "
                                         "the global settings are shown.")
            restored.plan = plan
        except ValueError as error:
            restored.messages.append(f"The link's plan could not be used ({error}); showing the default plan.")
    token = query.get("a")
    if token and restored.model == name:
        try:
            pinned = plan_from_token(token)
            check(restored.model, pinned)
            restored.pinned = pinned
        except ValueError as error:
            restored.messages.append(f"The link's plan A could not be used ({error}); nothing is pinned.")
    if restored.model == name:
        restored.n = _samples(query.get("n"), restored.messages)
        token = query.get("data")
        if token and data_registry.get(token) is not None:
            restored.data = token
        elif token:
            restored.messages.append(missing_data(token))
            restored.pending = {key: query[key] for key in PARAMS if key in query}
    return restored


def _samples(text: str | None, messages: list[str]) -> int | None:
    if text is None:
        return None
    if text.isdigit() and 1 <= int(text) <= 10**7:
        return int(text)
    messages.append(f"The link's evaluation sample count {text!r} is not a whole number from 1 to 10,000,000; "
                    "using the default count.")
    return None


def missing_model(name: str, shown: str) -> str:
    """One plain sentence: which model the link used, why it is not here, what to do. Names
    come from the link, anyone's input: the message is shown through `text.plain` (state.py)."""
    if name.startswith(registry.UPLOAD_PREFIX):
        return (f"This link used an uploaded model ({registry.label(name).rpartition(' · ')[0]}) that this "
                "browser session has not uploaded: uploads stay private to the session that made them, and last "
                f"only while a server runs. Showing {shown}; upload the same file again (sidebar: Your own model "
                "and data) and the rest of the link is applied.")
    if registry.SEPARATOR in name or registry.DISTILLED in name:
        return (f"This link used {registry.label(name)}, which this server does not have. Showing {shown}; "
                "upload that model's .safetensors download (sidebar: Your own model and data) to restore it.")
    if name.endswith("@pretrained"):
        return (f"This link used {name.split('@')[0]} with pretrained weights, which are not downloaded on "
                f"this server. Showing {shown} with random weights; download them in the sidebar (Pretrained "
                "weights) to restore the link.")
    return f"The link names an unknown model ‘{name}’; showing {shown}."


def missing_data(token: str) -> str:
    name = data_registry.file_name(token)
    return (f"This link used an uploaded data set ({name}) that this browser session has not uploaded (uploads "
            f"stay private to the session that made them); showing the model's default data. Upload {name} again "
            "(sidebar: Your own model and data) to restore it.")


# --- the session <-> its URL ---------------------------------------------------------------


def apply(query: dict, record: bool = True) -> None:
    """Make the session what the link says, as far as this server can; say what it could not.
    The plan it replaces is an Undo step (`record`; not for a session that starts from the link)."""
    ss = st.session_state
    restored = restore(query, DEFAULT_MODEL, known_model, check_for, fallback_model)
    if restored.model != ss.model_name:
        ss.model_name, ss.selected_layer = restored.model, None
        ss.editor_generation += 1
    plan = restored.plan or Plan()
    if record:
        history.record(ss.model_name, ss.plan, plan)
    if plan.overrides != ss.plan.overrides:
        ss.editor_generation += 1
    ss.plan = plan
    ss[PINNED_KEY] = None if restored.pinned is None else (ss.model_name, restored.pinned)
    ss.setdefault(EVAL_SIZE_KEY, {})[ss.model_name] = restored.n
    uploaded, tokens = ss.setdefault(USER_DATA_KEY, {}), ss.setdefault(DATA_TOKEN_KEY, {})
    if restored.data is not None:
        uploaded[ss.model_name], tokens[ss.model_name] = data_registry.get(restored.data), restored.data
    elif "data" not in query:
        uploaded.pop(ss.model_name, None)
        tokens.pop(ss.model_name, None)
    if restored.messages:
        ss.link_error = " ".join(restored.messages)
    ss.pending_link = restored.pending
    sync_url()


def known_model(name: str) -> bool:
    if pretrained.is_pretrained_name(name):
        return pretrained.cached_file(pretrained.arch_of(name)) is not None
    return (name in zoo.list_models() or name in zoo.list_language_models() or name in zoo.list_torchvision_models()
            or registry.visible(name) and registry.get(name) is not None)


def fallback_model(name: str) -> str | None:
    """The closest model this server has for a link's missing one."""
    candidate = registry.original(name) or (pretrained.arch_of(name) if pretrained.is_pretrained_name(name) else None)
    return candidate if candidate and known_model(candidate) else None


def check_for(name: str, plan: Plan) -> None:
    engine = load_engine(name)
    engine.check_plan(plan)
    reason = interactive_cost_error(engine, plan)
    if reason:
        raise ValueError(reason)


def link_params() -> dict[str, str]:
    ss = st.session_state
    pinned = ss.get(PINNED_KEY)
    return params(ss.model_name, ss.plan, ss.get(EVAL_SIZE_KEY, {}).get(ss.model_name),
                  ss.get(DATA_TOKEN_KEY, {}).get(ss.model_name),
                  pinned[1] if pinned and pinned[0] == ss.model_name else None)


def sync_url() -> None:
    """Put the session's model, plan, sample count, data and plan A in the URL (one browser history step)."""
    wanted = link_params()
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


def is_history_navigation() -> bool:
    """Whether this run comes from the browser's Back or Forward button."""
    try:
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
    except ImportError:  # a Streamlit without it: Back then keeps the current plan
        return False
    ctx = get_script_run_ctx()
    return bool(getattr(ctx, "is_history_navigation", False))
