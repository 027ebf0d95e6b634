"""The server's shared caches: each model with its engine, and the models' default evaluation
data, bounded in entries and in bytes (lightviz.core.bounded), shared by every session.

Streamlit's st.cache_resource bounds entries only, and an engine may hold up to its cache
budget (512 MiB) of compressed weights besides its model: opening many model links would
otherwise fill a server's memory. A model entry weighs its weights plus its engine's cache
budget; LIGHTVIZ_CACHE_MB sets the bytes all model entries may take together (default 4096).
Evicted entries are rebuilt when asked for again. A model registered in a session (an upload,
a fine-tune) opens only in the sessions that registered it (registry.visible).
"""

from __future__ import annotations

import os

import streamlit as st

from lightviz.core.bounded import BoundedCache
from lightviz.core.engine import Engine
from lightviz.core.size import state_bytes
from lightviz.io import datasets, zoo
from lightviz.ui import registry

MODEL_ENTRIES = 8
MODEL_BYTES = 4 * 2**30
CACHE_ENV = "LIGHTVIZ_CACHE_MB"
DATA_ENTRIES = 16
DATA_BYTES = 2**30


def _model_bytes() -> int:
    text = os.environ.get(CACHE_ENV, "").strip()
    try:
        return int(float(text) * 2**20) if text else MODEL_BYTES
    except ValueError:
        return MODEL_BYTES


def _weigh_model(entry: tuple[zoo.ModelBundle, Engine]) -> int:
    bundle, engine = entry
    return state_bytes(bundle.model.state_dict()) + engine.cache_bytes


def _weigh_data(data: datasets.EvalData) -> int:
    tensors = [data.x] + ([data.y] if data.y is not None else [])
    return sum(t.numel() * t.element_size() for t in tensors)


models: BoundedCache[tuple[zoo.ModelBundle, Engine]] = BoundedCache(MODEL_ENTRIES, _model_bytes(), _weigh_model)
eval_data: BoundedCache[datasets.EvalData] = BoundedCache(DATA_ENTRIES, DATA_BYTES, _weigh_data)


def model(name: str) -> tuple[zoo.ModelBundle, Engine]:
    """(bundle, engine) of a model this session may open; ValueError for anything else."""
    if not registry.visible(name):
        raise ValueError(f"{registry.label(name)} was loaded in another browser session; uploaded and "
                         "fine-tuned models stay private to the session that made them")
    return models.get(name, lambda: _build(name))


def _build(name: str) -> tuple[zoo.ModelBundle, Engine]:
    with st.spinner("Loading model…"):
        bundle = registry.get(name)
        if bundle is None and registry.is_derived(name):
            raise ValueError(f"{registry.label(name)} is no longer held by the server (it keeps the "
                             f"{registry.LIMIT} most recent uploaded and fine-tuned models): upload it or "
                             "fine-tune it again")
        bundle = bundle or zoo.load_model(name)
        return bundle, Engine(bundle.model)


def default_data(name: str, n: int | None) -> datasets.EvalData:
    """The model's default data (datasets.eval_data_for), `n` samples of it; one object per
    (name, n) while it stays cached."""
    return eval_data.get((name, n), lambda: datasets.eval_data_for(model(name)[0], n))
