"""Cached resources shared by every session of the server (never mutated): models by name,
their engines (one per model and device), their default evaluation data.

Names are samples, torchvision architectures ('resnet18', or 'resnet18@pretrained' with the
cached pretrained weights), or models registered while the app runs (registry.py).
"""

from __future__ import annotations

import streamlit as st

from lightviz.core.engine import Engine
from lightviz.io import datasets, pretrained, zoo
from lightviz.ui import compute, registry

PREFIX_BYTES = 256 * 2**20  # activations an engine keeps so a one-layer change recomputes only what follows


@st.cache_resource(show_spinner="Loading model…")
def load_bundle(name: str) -> zoo.ModelBundle:
    if pretrained.is_pretrained_name(name):
        return pretrained.load_pretrained(name)
    return registry.get(name) or zoo.load_model(name)  # registry: models fine-tuned in this app


@st.cache_resource(show_spinner=False)
def _load_engine(name: str, device: str) -> Engine:
    return Engine(load_bundle(name).model, device=device, prefix_bytes=PREFIX_BYTES)


def load_engine(name: str) -> Engine:
    """The model's engine on the session's device (the sidebar's choice); one per (model, device)."""
    return _load_engine(name, compute.device())


@st.cache_resource(show_spinner=False, max_entries=32)
def load_eval_data(name: str, n: int | None = None) -> datasets.EvalData:
    """The model's default data (data.eval_data_for), `n` samples of it; one object per (name, n)."""
    return datasets.eval_data_for(load_bundle(name), n)
