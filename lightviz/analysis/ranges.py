"""Range methods compared, and float-against-quantized histograms, for one layer's weights or
its calibrated input activations (what the Sensitivity page draws; no Streamlit here).

Per tensor, for each of minmax / percentile / mse / entropy: the clip range it picks, the
scale and zero-point that follow, and the squared error split into clipping (values outside
the range saturate) and rounding (`clipping.method_ranges`). Activations are the values
calibration recorded at the layer's input (`Engine.activation_stats`).

>>> table = compare_ranges(torch.linspace(-1, 1, 201), bits=4, scheme="symmetric")
>>> table["method"].tolist()
['minmax', 'percentile', 'mse', 'entropy']
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from lightviz.analysis import clipping, learn
from lightviz.core.activations import InputStats
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.quant import code_range, fake_quantize
from lightviz.core.specs import ActivationSpec, Plan, QuantSpec

SOURCES = ("weights", "activations")
HIST_BINS = 90
MAX_LEVELS = 64


@dataclass(frozen=True)
class ValueHistogram:
    """Pre-binned float values and their quantized versions over shared edges, log-friendly."""

    edges: np.ndarray  # (bins + 1,)
    float_counts: np.ndarray  # (bins,)
    quantized_counts: np.ndarray  # (bins,)
    lo: float  # the covered range [lo, hi]
    hi: float
    levels: np.ndarray | None  # dequantized grid values when few enough to draw
    n_values: int
    clipped: int  # values outside [lo, hi] (they saturate)

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2


def layer_values(engine: Engine, plan: Plan, data: EvalData, layer: str, source: str,
                 spec: ActivationSpec | None = None) -> tuple[torch.Tensor, str]:
    """(values, description) of a layer: its weight (folded as the plan says) or its input.

    Activations come from calibrating with `spec` (default: the plan's, else ActivationSpec()).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
    if layer not in engine.by_name:
        raise ValueError(f"layer must be one of {list(engine.by_name)}; got {layer!r}")
    if source == "weights":
        weight = engine.reference_weight(layer, plan.fold_bn)[0]
        return weight.reshape(-1).float().cpu(), f"{weight.numel():,} weights" + (
            " (BatchNorm folded)" if plan.fold_bn and engine.by_name[layer].bn else "")
    stats = activation_stats(engine, plan, data, spec)
    key = engine.by_name[layer].module_path  # calibration records the module holding the weight
    if key not in stats:
        raise ValueError(f"layer {layer!r} has no floating-point input to quantize")
    item = stats[key]
    sampled = f" (a seeded sample of {item.sample.numel():,})" if item.sampled else ""
    return item.sample, f"{item.n_values:,} input values from {item.n_samples} calibration inputs{sampled}"


def activation_stats(engine: Engine, plan: Plan, data: EvalData,
                     spec: ActivationSpec | None = None) -> dict[str, InputStats]:
    """Calibration's record of every layer's input for `plan` on `data`'s calibration inputs."""
    spec = spec or plan.activations or ActivationSpec()
    return engine.activation_stats(replace(plan, activations=spec), data.calibration_inputs)


def compare_ranges(values: torch.Tensor, bits: int, scheme: str, percentile: float = 99.99) -> pd.DataFrame:
    """One row per range method (per tensor): lo, hi, scale, zero_point, clipped_fraction,
    clip_mse, round_mse, mse, ratio (range width / min-max width), sqnr_db."""
    table = clipping.method_ranges(values, bits, scheme, percentile=percentile)
    power = float(values.double().pow(2).mean()) if values.numel() else 0.0
    with np.errstate(divide="ignore"):
        table["sqnr_db"] = 10 * np.log10(power / table["mse"].where(table["mse"] > 0, np.nan))
    return table


def value_histogram(values: torch.Tensor, bits: int, scheme: str, lo: float, hi: float,
                    bins: int = HIST_BINS) -> ValueHistogram:
    """Float `values` and their fake-quantized versions over [lo, hi], pre-binned."""
    spec = QuantSpec(bits=bits, scheme=scheme, granularity="tensor")
    qparams = clipping.range_qparams(lo, hi, spec)
    quantized = fake_quantize(values.float(), spec, qparams=qparams)
    lo, hi = learn.covered_range(lo, hi, spec)
    v, q = values.double().numpy(), quantized.double().numpy()
    low, high = min(v.min(initial=0.0), lo), max(v.max(initial=0.0), hi)
    pad = (high - low) * 0.02 or 1e-6
    edges = np.linspace(low - pad, high + pad, bins + 1)
    scale, zero_point = float(qparams.scale[0]), int(qparams.zero_point[0])
    qmin, qmax = code_range(spec)
    codes = np.arange(qmin, qmax + 1)
    levels = (codes - zero_point) * scale if len(codes) <= MAX_LEVELS else None
    return ValueHistogram(edges, np.histogram(v, edges)[0], np.histogram(q, edges)[0], lo, hi, levels,
                          int(v.size), int(((v < lo) | (v > hi)).sum()))
