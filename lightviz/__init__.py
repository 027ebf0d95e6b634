"""lightviz: explore how quantization and pruning trade a network's accuracy against its size.

`import lightviz as lv` is the public face: every name below resolves on first use, so
`import lightviz` itself is instant and `python -m lightviz --help` pays for nothing it does
not need (torch, torchvision's zoo, pandas and plotly load when a name that needs them is used).

The rooms, lowest first (each may import only the rooms before it):

    core      specs, quantization, pruning, size, metrics, layers, activations, the Engine
    io        sample zoo, datasets, safe loading of a user's model and data files, export (ONNX, packed)
    analysis  sensitivity, mixed precision, sweeps, range methods, histograms, Learn's math, latency
    recover   quantization-aware fine-tuning, distillation
    plots     Plotly figure builders, one module per page family
    cli, ui   the command line and the Streamlit glue

>>> import torch, lightviz as lv
>>> lv.fake_quantize(torch.tensor([-10.0, -5.0, 10.0]), lv.QuantSpec(bits=8, granularity="tensor"))
tensor([-10.0000,  -5.0394,  10.0000])
"""

from __future__ import annotations

import importlib

_PUBLIC = {  # name -> module that defines it
    # specs: frozen, validated, JSON-able
    "QuantSpec": "lightviz.core.specs", "PruneSpec": "lightviz.core.specs", "ActivationSpec": "lightviz.core.specs",
    "LayerConfig": "lightviz.core.specs", "Plan": "lightviz.core.specs", "TrainConfig": "lightviz.core.trainconfig",
    # tensor functions
    "fake_quantize": "lightviz.core.quant", "quantize": "lightviz.core.quant", "dequantize": "lightviz.core.quant",
    "choose_qparams": "lightviz.core.quant", "QParams": "lightviz.core.quant", "prune_mask": "lightviz.core.prune",
    # the engine
    "Engine": "lightviz.core.engine", "Evaluation": "lightviz.core.engine", "LayerResult": "lightviz.core.engine",
    "uniform_plan": "lightviz.core.engine", "wa_label": "lightviz.core.activations",
    "EvalData": "lightviz.core.evaldata", "subset": "lightviz.core.evaldata",
    # models and data
    "load_model": "lightviz.io.zoo", "list_models": "lightviz.io.zoo", "ModelBundle": "lightviz.io.zoo",
    "load_user_model": "lightviz.io.loading", "load_pretrained": "lightviz.io.loading",
    "load_user_data": "lightviz.io.userdata",
    "eval_data_for": "lightviz.io.datasets", "digits_split": "lightviz.io.datasets",
    "generated_inputs": "lightviz.io.datasets",
    # language models
    "load_hf_folder": "lightviz.io.hf", "random_causal_lm": "lightviz.io.hf", "user_text_data": "lightviz.io.text",
    "get_task": "lightviz.core.task", "compare_generation": "lightviz.analysis.generate",
    # analyses
    "sensitivity": "lightviz.analysis.sensitivity", "allocate": "lightviz.analysis.mixed",
    "run_sweep": "lightviz.analysis.sweep", "sweep_configs": "lightviz.analysis.sweep",
    # winning accuracy back
    "finetune": "lightviz.recover.finetune", "distill": "lightviz.recover.distill",
    # deploying: files a runtime runs, and their measured speed
    "export_onnx": "lightviz.io.onnx_export", "save_packed": "lightviz.io.packed", "load_packed": "lightviz.io.packed",
    "make_physical": "lightviz.io.physical", "benchmark": "lightviz.analysis.latency",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    """Import the module that defines `name` on first use (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'lightviz' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
