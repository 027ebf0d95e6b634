"""Activation outliers: the largest |input| of every layer, per input channel, over calibration data.

The picture behind LLM.int8 (Dettmers et al. 2022) and SmoothQuant (Xiao et al. 2023): in
transformers a few input channels of the Linear layers carry values tens of times larger than
the rest, in every token, so one per-tensor activation scale wastes its levels on them. Per
layer the float model runs on the calibration sequences; a hook records, for each input
channel (the last dimension; dimension 1 for convolutions), max |x| over every token.

`outlier_table` summarizes each layer: its largest and median channel absmax, their ratio
(how much a per-tensor scale is stretched), the channels above LLM.int8's 6.0 threshold, and
the biggest channel.

>>> from lightviz.io.hf import random_causal_lm
>>> engine = Engine(random_causal_lm("llama"))
>>> absmax = channel_absmax(engine, torch.randint(0, 256, (2, 16)))
>>> absmax["model.layers.0.self_attn.q_proj"].shape
torch.Size([64])
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from lightviz.core.activations import float_plan
from lightviz.core.engine import Engine, eval_batch_size
from lightviz.core.layers import CONVS, TRANSPOSED
from lightviz.core.specs import Plan

INT8_THRESHOLD = 6.0  # LLM.int8's outlier magnitude
MAX_SEQUENCES = 16
OUTLIER_COLUMNS = ["layer", "block", "in_channels", "max_absmax", "median_absmax", "ratio", "above_6",
                   "top_channel"]


def channel_absmax(engine: Engine, inputs: torch.Tensor, plan: Plan | None = None,
                   max_sequences: int = MAX_SEQUENCES) -> dict[str, torch.Tensor]:
    """{layer: max |input| per input channel} of the float model (folded as `plan` says) on `inputs`.

    Runs a private copy with hooks (the engine's model is never touched), on at most
    `max_sequences` inputs. Layers whose input is not floating point (embeddings) are left out.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 1 or len(inputs) == 0:
        raise ValueError("outliers need calibration inputs: a non-empty tensor")
    model = engine.compress(float_plan(plan.fold_bn if plan else True))
    modules = dict(model.named_modules())
    found: dict[str, torch.Tensor] = {}
    by_module: dict[str, list[str]] = {}
    for layer in engine.layers:
        by_module.setdefault(layer.module_path, []).append(layer.name)

    def hook(path: str):
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
                return
            dim = 1 if isinstance(module, CONVS + TRANSPOSED) else x.dim() - 1
            absmax = x.detach().abs().movedim(dim, 0).reshape(x.shape[dim], -1).amax(dim=1).float()
            for name in by_module[path]:
                found[name] = absmax if name not in found else torch.maximum(found[name], absmax)
        return record

    handles = [modules[path].register_forward_pre_hook(hook(path)) for path in by_module]
    try:
        x = inputs[:max_sequences]
        batch = eval_batch_size(x)
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                model(x[start:start + batch])
    finally:
        for handle in handles:
            handle.remove()
    return {layer.name: found[layer.name] for layer in engine.layers if layer.name in found}


def block_of(name: str) -> str:
    """The repeated block a layer sits in ('transformer.h.3.mlp.c_fc' -> 'transformer.h.3'), or ''."""
    parts = name.split(".")
    index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
    return "" if index is None else ".".join(parts[:index + 1])


def outlier_table(absmax: dict[str, torch.Tensor]) -> pd.DataFrame:
    """One row per layer (OUTLIER_COLUMNS): how far its largest input channel stands out.

    >>> outlier_table({"h.0.fc": torch.tensor([1.0, 1.0, 12.0])}).to_dict("records")[0]["ratio"]
    12.0
    """
    rows = []
    for name, values in absmax.items():
        median = float(values.median())
        rows.append({"layer": name, "block": block_of(name), "in_channels": values.numel(),
                     "max_absmax": float(values.max()), "median_absmax": median,
                     "ratio": float(values.max()) / median if median > 0 else float("inf"),
                     "above_6": int((values > INT8_THRESHOLD).sum()), "top_channel": int(values.argmax())})
    return pd.DataFrame(rows, columns=OUTLIER_COLUMNS)
