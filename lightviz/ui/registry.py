"""Models made while the app runs (fine-tuned weights), loadable by name like the samples.

`state.load_bundle(name)` asks here first, so once registered a fine-tuned model is an
ordinary model to the rest of the app: its engine, evaluation data and caches are keyed by
its name. Names hold a hash of the weights ("digits-cnn+ft-1a2b3c4d"), so one name always
means one set of weights and sharing the cached engine between sessions is safe. Each
session lists only the names it registered (`session_names`). The registry is bounded: the
oldest models are forgotten first (a session that still shows one keeps working from
Streamlit's resource cache until it restarts).

Fine-tuned and distilled models ("+ft-", "+kd-") are also written to a small store on disk
(`store_dir()`, as the .safetensors file their download button gives), so a shared link to
one still opens after a server restart; `get` falls back to it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import torch

from lightviz.io.datasets import DIGITS_CLASSES, DIGITS_INPUT_SHAPE
from lightviz.io.zoo import ModelBundle
from lightviz.recover import saved

LIMIT = 32
SEPARATOR = "+ft-"
DISTILLED = "+kd-"
STORE_LIMIT = 64  # files kept on disk, oldest removed first
STORE_ENV = "LIGHTVIZ_MODEL_STORE"
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
    """The registered bundle called `name`, or None (fine-tuned and distilled ones are read
    back from the store on disk when this server no longer holds them)."""
    with _lock:
        found = _models.get(name)
    if found is None and (SEPARATOR in name or DISTILLED in name):
        found = _load_stored(name)
    return found


def register_trained(model: torch.nn.Module, meta: saved.TrainedMeta) -> str:
    """Register fine-tuned or distilled weights (kept on disk too) and return the name:
    'digits-cnn+ft-1a2b3c4d' (fine-tuned from digits-cnn), 'digits-cnn-slim+kd-…' (distilled)."""
    name = f"{meta.base}{SEPARATOR}" if meta.kind == "finetuned" else f"{meta.arch}{DISTILLED}"
    name += _digest(model)
    with _lock:
        known = name in _models
    if not known:
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
    if not all(c.isalnum() or c in "-+_." for c in name) or name.startswith("."):
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
