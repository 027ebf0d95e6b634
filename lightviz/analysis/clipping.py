"""Clipping against rounding: the squared error of quantizing one tensor, split in two, as
its clip range moves (what the Learn and Sensitivity pages draw; no Streamlit here).

Shrinking the min/max range by a ratio clips the outer weights (they saturate at the ends:
clipping error) and refines the grid for the rest (smaller step: less rounding error);
`clip_sweep` measures both over a grid of ratios, `method_ranges` where each range method
(minmax, percentile, mse, entropy) lands. Every number comes from `lightviz.core.quant`.

>>> sweep = clip_sweep(torch.randn(1000, generator=torch.Generator().manual_seed(0)), 3, "symmetric")
>>> bool(sweep["clip_mse"].iloc[-1] == 0.0), bool(sweep["round_mse"].iloc[0] < sweep["round_mse"].iloc[-1])
(True, True)
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from lightviz.analysis.learn import covered_range, is_binary, toy_spec
from lightviz.core.quant import (
    QParams,
    choose_qparams,
    clip_range,
    dequantize,
    quantize,
)
from lightviz.core.specs import QuantSpec

CLIP_RATIOS = tuple(round(0.04 + 0.02 * i, 2) for i in range(49))  # 0.04 .. 1.00
CLIP_METHODS = ("minmax", "percentile", "mse", "entropy")
SWEEP_SAMPLE = 2**18  # error sweeps measure at most this many weights (a fixed-seed sample)


def range_qparams(lo: float, hi: float, spec: QuantSpec) -> QParams:
    """The qparams `spec` gives the clip range [lo, hi]: min/max of the two-point tensor [lo, hi].

    Shrinking min/max by a ratio is exactly what `range_method='mse'` searches over.

    >>> round(range_qparams(-10.0, 10.0, QuantSpec(bits=8, granularity="tensor")).scale.item() * 127, 4)
    10.0
    """
    minmax = QuantSpec(bits=spec.bits, scheme=spec.scheme, granularity="tensor")
    return choose_qparams(torch.tensor([lo, hi], dtype=torch.float32), minmax)


def error_split(weight: torch.Tensor, spec: QuantSpec, lo: float, hi: float) -> dict:
    """Squared error of quantizing over [lo, hi], split into clipping and rounding.

    The covered range is [lo, hi], or [-amax, amax] when symmetric (`covered_range`).
    clip_mse: error of the weights outside it (they saturate at the ends);
    round_mse: error of the rest; both divided by the number of weights, so they sum to mse.

    >>> w = torch.tensor([-1.0, 0.2, 4.0])
    >>> parts = error_split(w, QuantSpec(bits=2, granularity="tensor"), -2.0, 2.0)
    >>> parts["clipped_fraction"], round(parts["clip_mse"] + parts["round_mse"] - parts["mse"], 12)
    (0.3333333333333333, 0.0)
    """
    if is_binary(spec):
        raise ValueError("spec must not be 1-bit symmetric: binarization has no clip range to move")
    w = weight.detach().reshape(-1).float()
    qparams = range_qparams(lo, hi, spec)
    lo, hi = covered_range(lo, hi, spec)
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
    w_hat = dequantize(quantize(w, spec, qparams=qparams), qparams, spec)
    sq = w_hat.sub_(w).square_()  # float32 squared errors, summed in float64 below
    outside = (w < lo_t) | (w > hi_t)
    n = max(w.numel(), 1)
    total = float(sq.sum(dtype=torch.float64))
    clip = float(sq[outside].sum(dtype=torch.float64))
    rounding = float(sq.masked_fill(outside, 0.0).sum(dtype=torch.float64))
    return {"lo": float(lo_t), "hi": float(hi_t), "scale": float(qparams.scale[0]),
            "zero_point": int(qparams.zero_point[0]), "clipped_fraction": float(outside.sum()) / n,
            "clip_mse": clip / n, "round_mse": rounding / n, "mse": total / n}


def sample_weights(weight: torch.Tensor, limit: int | None = SWEEP_SAMPLE, seed: int = 0) -> torch.Tensor:
    """The flattened weight, or `limit` of its values drawn without replacement (fixed seed).

    Error sweeps over a multi-million-weight layer take seconds per point; a uniform sample
    of 2^18 weights estimates each mean squared error to well under 1% of its value.

    >>> sample_weights(torch.arange(10.0), limit=4).shape, sample_weights(torch.arange(10.0)).shape
    (torch.Size([4]), torch.Size([10]))
    """
    flat = weight.detach().reshape(-1).float()
    if limit is None or flat.numel() <= limit:
        return flat
    return flat[_sample_index(flat.numel(), limit, seed)]


@functools.lru_cache(maxsize=8)
def _sample_index(n: int, limit: int, seed: int) -> torch.Tensor:
    """Which `limit` of n positions a sample takes; cached: a slider move reuses it (no new randperm)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:limit]


def clip_sweep(weight: torch.Tensor, bits: int, scheme: str,
               ratios: tuple[float, ...] | np.ndarray = CLIP_RATIOS,
               sample: int | None = SWEEP_SAMPLE) -> pd.DataFrame:
    """Clipping and rounding error as the min/max range shrinks by each ratio.

    The range [ratio * min, ratio * max] comes from the whole weight; the errors are measured
    on all of it, or on `sample` of its values when it is larger (`df.attrs["n_evaluated"]`).

    Columns: `ratio`, then those of `error_split` (`lo`, `hi`, `scale`, `zero_point`,
    `clipped_fraction`, `clip_mse`, `round_mse`, `mse`).

    >>> sweep = clip_sweep(torch.linspace(-1, 1, 101), bits=4, scheme="symmetric", ratios=(0.5, 1.0))
    >>> sweep["clip_mse"].tolist()[1], bool(sweep["clip_mse"][0] > 0)
    (0.0, True)
    """
    spec, weight = toy_spec(bits, scheme), weight.detach().cpu()  # an engine's weight may be on a GPU
    ratios = [float(r) for r in ratios]
    if not ratios or not all(0.0 < r <= 1.0 for r in ratios):
        raise ValueError(f"ratios must be numbers in (0, 1]; got {ratios!r}")
    lo, hi = clip_range(weight.detach().reshape(-1).float(), spec)  # min/max, zero inside
    values = sample_weights(weight, sample)
    table = pd.DataFrame([_split_at(values, spec, lo, hi, ratio) for ratio in ratios])
    table.attrs["n_evaluated"] = values.numel()
    return table


def clip_at(weight: torch.Tensor, bits: int, scheme: str, ratio: float,
            sample: int | None = SWEEP_SAMPLE) -> dict:
    """One point of `clip_sweep`: the error split at one clip ratio, as a dict of its columns.

    >>> point = clip_at(torch.linspace(-1, 1, 101), bits=4, scheme="symmetric", ratio=1.0)
    >>> point["ratio"], point["clip_mse"], round(point["scale"] * 7, 4)
    (1.0, 0.0, 1.0)
    """
    spec, weight = toy_spec(bits, scheme), weight.detach().cpu()
    if not (isinstance(ratio, (int, float)) and 0.0 < ratio <= 1.0):
        raise ValueError(f"ratio must be a number in (0, 1]; got {ratio!r}")
    lo, hi = clip_range(weight.detach().reshape(-1).float(), spec)
    return _split_at(sample_weights(weight, sample), spec, lo, hi, float(ratio))


def _split_at(values: torch.Tensor, spec: QuantSpec, lo: torch.Tensor, hi: torch.Tensor, ratio: float) -> dict:
    # float32 products lo * ratio, as range_method='mse' forms its candidates
    return {"ratio": ratio, **error_split(values, spec, float(lo[0] * ratio), float(hi[0] * ratio))}


def method_ranges(weight: torch.Tensor, bits: int, scheme: str, percentile: float = 99.9,
                  sample: int | None = SWEEP_SAMPLE) -> pd.DataFrame:
    """The clip range each range method picks per tensor, as a ratio of the min/max width.

    Ranges come from the whole weight; errors from the same values `clip_sweep` measures.
    Columns: `method`, `ratio` ((hi - lo) / (max - min)), then those of `error_split`.

    >>> table = method_ranges(torch.linspace(-1, 1, 101), bits=8, scheme="symmetric")
    >>> table["method"].tolist(), float(table["ratio"][0])
    (['minmax', 'percentile', 'mse', 'entropy'], 1.0)
    """
    weight = weight.detach().cpu()
    w = weight.reshape(-1).float()
    base = toy_spec(bits, scheme)
    lo0, hi0 = covered_range(*(x[0] for x in clip_range(w, base)), base)
    width = max(hi0 - lo0, float(torch.finfo(torch.float32).tiny))
    values = sample_weights(w, sample)
    rows = []
    for method in CLIP_METHODS:
        spec = replace(base, range_method=method, percentile=percentile)
        lo, hi = covered_range(*(x[0] for x in clip_range(w, spec)), spec)
        rows.append({"method": method, "ratio": (hi - lo) / width, **error_split(values, base, lo, hi)})
    table = pd.DataFrame(rows)
    table.attrs["n_evaluated"] = values.numel()
    return table
