"""Models made while the app runs (fine-tuned weights), loadable by name like the samples.

`state.load_bundle(name)` asks here first, so once registered a fine-tuned model is an
ordinary model to the rest of the app: its engine, evaluation data and caches are keyed by
its name. Names hold a hash of the weights ("digits-cnn+ft-1a2b3c4d"), so one name always
means one set of weights. Who may open a registered model (`visible`):
- an upload ('upload:<file>#<hash>') is private to the sessions that uploaded it: its name is in
  their st.session_state[SESSION_KEY], and a link naming it opens nowhere else, so nobody can
  open another person's file by guessing or sharing its URL (uploading the same file again
  restores such a link);
- fine-tuned and distilled models of a shipped sample ("+ft-", "+kd-") are shared on purpose:
  sharing a link to one is the point, and they hold nothing of a user's: the app trained them
  from a shipped sample on the bundled digits data. They are also written to a small store on
  disk (`store_dir()`, as the .safetensors file their download button gives), so a link to one
  still opens after a server restart; `get` falls back to it. A model derived from an upload
  stays private like the upload.
The registry is bounded in entries and bytes: the oldest models are forgotten first, and a
session that still shows one is told to upload it again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import streamlit as st
import torch

from lightviz.core.bounded import BoundedCache
from lightviz.core.size import state_bytes
from lightviz.io.datasets import DIGITS_CLASSES, DIGITS_INPUT_SHAPE
from lightviz.io.zoo import ModelBundle
from lightviz.recover import saved

LIMIT = 32
LIMIT_BYTES = 2 * 2**30  # weights of the registered models, all sessions together
SEPARATOR = "+ft-"
DISTILLED = "+kd-"
STORE_LIMIT = 64  # files kept on disk, oldest removed first
STORE_ENV = "LIGHTVIZ_MODEL_STORE"
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
    """The registered bundle called `name`, or None (fine-tuned and distilled ones are read
    back from the store on disk when this server no longer holds them)."""
    found = _models.peek(name)
    if found is None and shareable(name):
        found = _load_stored(name)
    return found


def register_trained(model: torch.nn.Module, meta: saved.TrainedMeta) -> str:
    """Register fine-tuned or distilled weights (kept on disk too) and return the name:
    'digits-cnn+ft-1a2b3c4d' (fine-tuned from digits-cnn), 'digits-cnn-slim+kd-…' (distilled)."""
    name = f"{meta.base}{SEPARATOR}" if meta.kind == "finetuned" else f"{meta.arch}{DISTILLED}"
    name += _digest(model)
    if _models.peek(name) is None:
        _store(name, _trained_bundle(name, model.eval(), meta))
    path = _stored_path(name)
    if path is not None and not path.is_file():
        _save_stored(name, saved.to_bytes(model, meta))
    return name


def register_file(data: bytes) -> str:
    """Register an uploaded trained-weights file (`saved.to_bytes`); it gets back the name it
    had when it was made, so links to it work again. Raises ValueError for a bad file."""
    model, meta = saved.from_bytes(data)
    return register_trained(model, meta)


def trained_file(name: str) -> bytes | None:
    """The .safetensors bytes of a registered fine-tuned or distilled model, or None."""
    path = _stored_path(name)
    return path.read_bytes() if path is not None and path.is_file() else None


def _trained_bundle(name: str, model: torch.nn.Module, meta: saved.TrainedMeta) -> ModelBundle:
    what = ("fine-tuned in this app: latent float weights in the deployed form (BatchNorm folded); "
            f"compare it with {meta.base}, its original float model") if meta.kind == "finetuned" else \
        f"distilled in this app from {meta.base}: a smaller float model of its own"
    classes = DIGITS_CLASSES if meta.num_classes == len(DIGITS_CLASSES) else \
        tuple(f"class {i}" for i in range(meta.num_classes))
    return ModelBundle(name=name, model=model, input_shape=DIGITS_INPUT_SHAPE, num_classes=meta.num_classes,
                       class_names=classes, dataset="digits", kind="sample",
                       description=meta.description or f"{meta.arch} ({meta.kind})", note=what)


def store_dir() -> Path:
    """Where fine-tuned and distilled models are kept: $LIGHTVIZ_MODEL_STORE, else
    ~/.cache/lightviz/models."""
    return Path(os.environ.get(STORE_ENV) or Path.home() / ".cache" / "lightviz" / "models")


def _stored_path(name: str) -> Path | None:
    if not shareable(name) or not all(c.isalnum() or c in "-+_." for c in name) or name.startswith("."):
        return None  # names are ours ('digits-cnn+ft-1a2b3c4d'); anything else never touches the disk
    return store_dir() / f"{name}.safetensors"


def _save_stored(name: str, data: bytes) -> None:
    path = _stored_path(name)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.replace(path)
        files = sorted(path.parent.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        for old in files[:-STORE_LIMIT]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only home: the model still works in this server, links just won't survive a restart


def _load_stored(name: str) -> ModelBundle | None:
    data = trained_file(name)
    if data is None:
        return None
    try:
        model, meta = saved.from_bytes(data)
    except ValueError:
        return None
    if not name.endswith(_digest(model)):
        return None  # the file does not hold the weights its name says
    bundle = _trained_bundle(name, model, meta)
    _store(name, bundle)
    return bundle


def original(name: str) -> str | None:
    """The float model a fine-tuned model is compared with ('digits-cnn' for
    'digits-cnn+ft-1a2b3c4d'); None for every other model, its own float baseline.

    >>> original("digits-cnn+ft-1a2b3c4d"), original("digits-cnn-slim+kd-1a2b3c4d")
    ('digits-cnn', None)
    """
    return name.split(SEPARATOR, 1)[0] if SEPARATOR in name else None


def visible(name: str) -> bool:
    """Whether the current session may open `name`: any sample or torchvision name, fine-tuned
    and distilled models of a shipped sample, and what this session registered itself."""
    return not is_derived(name) or shareable(name) or name in st.session_state.get(SESSION_KEY, [])


def shareable(name: str) -> bool:
    """Whether a registered name may be opened by any session and kept on disk: fine-tuned or
    distilled from a shipped sample, not derived from anyone's upload.

    >>> shareable("digits-cnn+ft-1a2b3c4d"), shareable("upload:mine.pth#1a2b3c4d+ft-5e6f7a8b")
    (True, False)
    """
    return (SEPARATOR in name or DISTILLED in name) and not name.startswith(UPLOAD_PREFIX)


def base_name(name: str) -> str:
    """The model a registered name was derived from ('digits-cnn+ft-1a2b3c4d' -> 'digits-cnn').

    >>> base_name("digits-cnn+ft-1a2b3c4d"), base_name("digits-cnn")
    ('digits-cnn', 'digits-cnn')
    """
    return name.split(SEPARATOR, 1)[0]


def is_derived(name: str) -> bool:
    """Whether `name` is a registered model's name (not a sample or torchvision name)."""
    return SEPARATOR in name or DISTILLED in name or name.startswith(UPLOAD_PREFIX)


def label(name: str) -> str:
    """How a picker shows a registered name: 'digits-cnn · fine-tuned 1a2b3c4d'."""
    if name.startswith(UPLOAD_PREFIX):
        return f"{name[len(UPLOAD_PREFIX):].rpartition('#')[0]} · uploaded"
    if DISTILLED in name:
        student, _, digest = name.partition(DISTILLED)
        return f"{student} · distilled {digest}"
    base, _, digest = name.partition(SEPARATOR)
    return f"{base} · fine-tuned {digest}"
