"""Hardware-independent cost of a plan: multiply-accumulates (MACs) per layer and bit-operations.

MACs come from PyTorch's own `torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2) on one
input; bit-operations are MACs x weight bits x activation bits (BOPs, as in the mixed-precision
literature: a float32 MAC counts 32 x 32). Unstructured zeros do not change the MACs a dense
kernel runs; `sparse_macs` is what a kernel that skipped every zero would run.

>>> from torch import nn
>>> from lightviz.core.engine import Engine, uniform_plan
>>> table = cost_table(Engine(nn.Sequential(nn.Flatten(), nn.Linear(64, 10))), uniform_plan(4), (1, 8, 8))
>>> table[["name", "macs", "weight_bits", "act_bits", "bit_operations"]].values.tolist()
[['1', 640, 4, 32, 81920]]
"""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from lightviz.core.engine import Engine
from lightviz.core.specs import Plan

FLOAT_BITS = 32
COLUMNS = ["name", "type", "macs", "sparse_macs", "weight_bits", "act_bits", "bit_operations",
           "float_bit_operations", "sparsity"]


def layer_macs(model: torch.nn.Module, input_shape: tuple[int, ...],
               names: list[str] | None = None) -> dict[str, int]:
    """MACs of one input (batch 1) per named module, counted by FlopCounterMode; model untouched."""
    x = torch.zeros(1, *input_shape)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    root = type(model).__name__
    counts = counter.get_flop_counts()
    names = names if names is not None else [name for name, _ in model.named_modules() if name]
    return {name: int(sum(counts.get(f"{root}.{name}", {}).values())) // 2 for name in names}


def cost_table(engine: Engine, plan: Plan, input_shape: tuple[int, ...],
               macs: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per layer (COLUMNS): MACs, MACs a zero-skipping kernel needs, bits, bit-operations.

    Args:
        macs: per-layer MACs already counted (`layer_macs`), to skip the forward pass.
    """
    names = [layer.name for layer in engine.layers]
    macs = macs if macs is not None else layer_macs(engine.model, input_shape, names)
    act_bits = FLOAT_BITS if plan.activations is None else plan.activations.bits
    rows = []
    for name, result in engine.compress_layers(plan).items():
        weight_bits = result.quant.bits or FLOAT_BITS
        n = result.weight_hat.numel()
        zeros = n - int(result.mask.sum()) if result.mask is not None else 0
        dense = macs.get(name, 0)
        rows.append({"name": name, "type": result.layer.kind, "macs": dense,
                     "sparse_macs": round(dense * (n - zeros) / max(n, 1)),
                     "weight_bits": weight_bits, "act_bits": act_bits,
                     "bit_operations": dense * weight_bits * act_bits,
                     "float_bit_operations": dense * FLOAT_BITS * FLOAT_BITS,
                     "sparsity": zeros / max(n, 1)})
    return pd.DataFrame(rows, columns=COLUMNS)


def cost_totals(table: pd.DataFrame) -> dict:
    """Whole-model MACs and bit-operations, and their reduction against float32."""
    bops, float_bops = int(table["bit_operations"].sum()), int(table["float_bit_operations"].sum())
    return {"macs": int(table["macs"].sum()), "sparse_macs": int(table["sparse_macs"].sum()),
            "bit_operations": bops, "float_bit_operations": float_bops,
            "bit_operation_reduction": float_bops / max(bops, 1)}
