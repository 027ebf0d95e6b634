"""Models made while the app runs (fine-tuned weights), loadable by name like the samples.

`state.load_bundle(name)` asks here first, so once registered a fine-tuned model is an
ordinary model to the rest of the app: its engine, evaluation data and caches are keyed by
its name. Names hold a hash of the weights ("digits-cnn+ft-1a2b3c4d"), so one name always
means one set of weights and sharing the cached engine between sessions is safe. Each
session lists only the names it registered (`session_names`). The registry is bounded: the
oldest models are forgotten first (a session that still shows one keeps working from
Streamlit's resource cache until it restarts).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import replace

import torch

from lightviz.io.zoo import ModelBundle

LIMIT = 32
SEPARATOR = "+ft-"
UPLOAD_PREFIX = "upload:"
SESSION_KEY = "session_models"  # st.session_state key: the names this session registered, for its picker
_models: OrderedDict[str, ModelBundle] = OrderedDict()
_lock = threading.Lock()


def register(base: ModelBundle, model: torch.nn.Module, description: str) -> str:
    """Register `model` (derived from `base`) and return its name."""
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


def _digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:8]


def _store(name: str, bundle: ModelBundle) -> None:
    with _lock:
        _models[name] = bundle
        _models.move_to_end(name)
        while len(_models) > LIMIT:
            _models.popitem(last=False)


def get(name: str) -> ModelBundle | None:
    """The registered bundle called `name`, or None."""
    with _lock:
        return _models.get(name)


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
