"""The server's shared caches: each model with its engine (one per model and device), and the
models' default evaluation data, bounded in entries and in bytes (lightviz.core.bounded),
shared by every session and never mutated.

Streamlit's st.cache_resource bounds entries only, and an engine may hold up to its cache
budget (512 MiB) of compressed weights and its prefix budget of activations besides its model:
opening many model links would otherwise fill a server's memory. A model entry weighs its
weights plus those budgets; LIGHTVIZ_CACHE_MB sets the bytes all model entries may take
together (default 4096). Evicted entries are rebuilt when asked for again. Names are samples,
torchvision architectures ('resnet18', or 'resnet18@pretrained' with the cached pretrained
weights), or models registered while the app runs (registry.py: an upload opens only in the
sessions that uploaded it, registry.visible).
"""

from __future__ import annotations

import os

import streamlit as st

from lightviz.core.bounded import BoundedCache
from lightviz.core.engine import RUNNERS, Engine
from lightviz.core.size import state_bytes
from lightviz.core.evaldata import EvalData
from lightviz.io import datasets, pretrained, zoo
from lightviz.ui import compute, registry

MODEL_ENTRIES = 8
MODEL_BYTES = 4 * 2**30
CACHE_ENV = "LIGHTVIZ_CACHE_MB"
DATA_ENTRIES = 16
DATA_BYTES = 2**30
PREFIX_BYTES = 256 * 2**20  # activations an engine keeps so a one-layer change recomputes only what follows


def _model_bytes() -> int:
    text = os.environ.get(CACHE_ENV, "").strip()
    try:
        return int(float(text) * 2**20) if text else MODEL_BYTES
    except ValueError:
        return MODEL_BYTES


def _weigh_model(entry: tuple[zoo.ModelBundle, Engine]) -> int:
    bundle, engine = entry
    return state_bytes(bundle.model.state_dict()) + engine.cache_bytes + RUNNERS * engine.prefix_bytes


def _weigh_data(data: datasets.EvalData) -> int:
    tensors = [data.x] + ([data.y] if data.y is not None else [])
    return sum(t.numel() * t.element_size() for t in tensors)


models: BoundedCache[tuple[zoo.ModelBundle, Engine]] = BoundedCache(MODEL_ENTRIES, _model_bytes(), _weigh_model)
eval_data: BoundedCache[datasets.EvalData] = BoundedCache(DATA_ENTRIES, DATA_BYTES, _weigh_data)


def model(name: str) -> tuple[zoo.ModelBundle, Engine]:
    """(bundle, engine) of a model this session may open, the engine on the session's device
    (the sidebar's choice); ValueError for anything else."""
    if not registry.visible(name):
        raise ValueError(f"{registry.label(name)} was uploaded in another browser session; uploads stay "
                         "private to the session that made them")
    device = compute.device()
    return models.get((name, device), lambda: _build(name, device))


def _build(name: str, device: str) -> tuple[zoo.ModelBundle, Engine]:
    with st.spinner("Loading model…"):
        bundle = _bundle(name)  # zoo, pretrained and registry hold bundles themselves: one model per name
        return bundle, Engine(bundle.model, device=device, prefix_bytes=PREFIX_BYTES)


def _bundle(name: str) -> zoo.ModelBundle:
    if pretrained.is_pretrained_name(name):
        return pretrained.load_pretrained(name)
    bundle = registry.get(name)
    if bundle is None and registry.is_derived(name):
        raise ValueError(f"{registry.label(name)} is no longer held by the server (it keeps the "
                         f"{registry.LIMIT} most recent uploaded and fine-tuned models): upload it or "
                         "fine-tune it again")
    return bundle or zoo.load_model(name)


def load_bundle(name: str) -> zoo.ModelBundle:
    """A sample or torchvision model, or one this session may open from the registry."""
    return model(name)[0]


def load_engine(name: str) -> Engine:
    """The model's engine on the session's device."""
    return model(name)[1]


def load_eval_data(name: str, n: int | None = None, seq_len: int | None = None) -> EvalData:
    """The model's default data (datasets.eval_data_for), `n` samples of it; one object per
    (name, n, seq_len) while it stays cached. A language model's: `n` sequences of `seq_len`
    tokens of the shipped held-out text."""
    def build() -> EvalData:
        bundle = load_bundle(name)
        if seq_len is not None and bundle.task == "causal_lm":
            from lightviz.io.text import lm_eval_data

            return lm_eval_data(bundle, n, seq_len)
        return datasets.eval_data_for(bundle, n)

    return eval_data.get((name, n) if seq_len is None else (name, n, seq_len), build)


def clear() -> None:
    """Forget every cached model, engine and data set (tests: a fresh server)."""
    models.clear()
    eval_data.clear()
