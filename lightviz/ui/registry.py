"""Models made while the app runs (fine-tuned weights), loadable by name like the samples.

`state.load_bundle(name)` asks here first, so once registered a fine-tuned model is an
ordinary model to the rest of the app: its engine, evaluation data and caches are keyed by
its name. Names hold a hash of the weights ("digits-cnn+ft-1a2b3c4d"), so one name always
means one set of weights. A registered model is private to the sessions that registered it
(`visible`): its name is in their st.session_state[SESSION_KEY], and a link naming it opens
nowhere else, so nobody can open another person's upload by guessing or sharing its URL. The
registry is bounded in entries and bytes: the oldest models are forgotten first, and a session
that still shows one is told to upload it again.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import streamlit as st
import torch

from lightviz.core.bounded import BoundedCache
from lightviz.core.size import state_bytes
from lightviz.io.zoo import ModelBundle

LIMIT = 32
LIMIT_BYTES = 2 * 2**30  # weights of the registered models, all sessions together
SEPARATOR = "+ft-"
UPLOAD_PREFIX = "upload:"
SESSION_KEY = "session_models"  # st.session_state key: the names this session registered, for its picker
_models: BoundedCache[ModelBundle] = BoundedCache(LIMIT, LIMIT_BYTES,
                                                  weigh=lambda bundle: state_bytes(bundle.model.state_dict()))


def register(base: ModelBundle, model: torch.nn.Module, description: str) -> str:
    """Register `model` (derived from `base`) for the current session and return its name."""
    name = f"{base_name(base.name)}{SEPARATOR}{_digest(model)}"
    bundle = replace(base, name=name, model=model.eval(), description=description,
                     note="fine-tuned in this app: latent float weights in the deployed form (BatchNorm folded)")
    _store(name, bundle)
    return name


def register_upload(bundle: ModelBundle) -> str:
    """Register a model the user uploaded ('user:resnet18.pth+ft-…' style names are avoided:
    uploads are named 'upload:<file name>#<weights hash>') and return its name."""
    name = f"{UPLOAD_PREFIX}{bundle.name}#{_digest(bundle.model)}"
    _store(name, replace(bundle, name=name))
    return name


def disown(name: str | None) -> None:
    """Take `name` out of the current session's models (a registration whose model failed)."""
    names = st.session_state.get(SESSION_KEY, [])
    while name in names:
        names.remove(name)


def _digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:8]


def _store(name: str, bundle: ModelBundle) -> None:
    """Keep `bundle` under `name` and make it visible to the current session (only)."""
    _models.get(name, lambda: bundle)  # the same name is the same weights: keep the first
    names = st.session_state.setdefault(SESSION_KEY, [])
    if name not in names:
        names.append(name)


def get(name: str) -> ModelBundle | None:
    """The registered bundle called `name`, or None (never registered, or forgotten)."""
    return _models.peek(name)


def visible(name: str) -> bool:
    """Whether the current session may open `name`: any sample or torchvision name, and the
    registered names this session registered itself."""
    return not is_derived(name) or name in st.session_state.get(SESSION_KEY, [])


def base_name(name: str) -> str:
    """The model a registered name was derived from ('digits-cnn+ft-1a2b3c4d' -> 'digits-cnn').

    >>> base_name("digits-cnn+ft-1a2b3c4d"), base_name("digits-cnn")
    ('digits-cnn', 'digits-cnn')
    """
    return name.split(SEPARATOR, 1)[0]


def is_derived(name: str) -> bool:
    """Whether `name` is a registered model's name (not a sample or torchvision name)."""
    return SEPARATOR in name or name.startswith(UPLOAD_PREFIX)


def label(name: str) -> str:
    """How a picker shows a registered name: 'digits-cnn · fine-tuned 1a2b3c4d'."""
    if name.startswith(UPLOAD_PREFIX):
        return f"{name[len(UPLOAD_PREFIX):].rpartition('#')[0]} · uploaded"
    base, _, digest = name.partition(SEPARATOR)
    return f"{base} · fine-tuned {digest}"
