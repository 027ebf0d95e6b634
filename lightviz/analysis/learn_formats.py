"""The Learn page's grid comparison: a uniform integer grid against floating-point grids of the
same width, on one tensor, each with one scale for the whole tensor.

A uniform grid spaces its levels s apart everywhere; a floating-point grid halves its step
every time |w| halves (down to its subnormals), so small weights keep a finer step and about
the same *relative* error as large ones. NormalFloat puts its 16 levels at quantiles of a
normal distribution. Every value comes from lightviz.core.formats and .quant (no math here).

| bits | grids compared                                  |
|------|-------------------------------------------------|
| 4    | int4 symmetric, FP4 E2M1 (MX/NVFP4 elements), NF4 |
| 8    | int8 symmetric, FP8 E4M3, FP8 E5M2              |

>>> comparison = compare_grids(torch.linspace(-1, 1, 101), bits=4)
>>> comparison.table["grid"].tolist()
['int4 (uniform)', 'FP4 E2M1', 'NF4']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lightviz.core import metrics
from lightviz.core.formats import FORMATS, element_values, round_elements
from lightviz.core.quant import fake_quantize
from lightviz.core.specs import QuantSpec

GRIDS = {4: (("int4 (uniform)", None), ("FP4 E2M1", "mxfp4"), ("NF4", "nf4")),
         8: (("int8 (uniform)", None), ("FP8 E4M3", "fp8_e4m3"), ("FP8 E5M2", "fp8_e5m2"))}
SMALL_QUANTILE = 0.5  # "small weights": |w| below the median
LARGE_QUANTILE = 0.99  # "large weights": the top 1% of |w|
GRID_COLUMNS = ["grid", "levels", "step_near_zero", "step_at_top", "mse", "sqnr_db", "small_rel_error",
                "large_rel_error"]


@dataclass(frozen=True, eq=False)
class GridComparison:
    """Each grid's levels (in weight units), the rounded weights and a summary table.

    Attributes:
        weight: the tensor, flattened (float64 numpy).
        levels: {grid name: ascending levels (numpy)}.
        rounded: {grid name: the weight rounded to that grid}.
        table: GRID_COLUMNS; relative errors are mean |w - w_hat| / |w| over small / large weights.
        small, large: the |w| thresholds of those groups.
    """

    weight: np.ndarray
    levels: dict[str, np.ndarray]
    rounded: dict[str, np.ndarray]
    table: pd.DataFrame
    small: float
    large: float


def compare_grids(weight: torch.Tensor, bits: int = 4) -> GridComparison:
    """Round `weight` to each grid of `bits` (4 or 8) with one per-tensor scale.

    Raises:
        ValueError: bits other than 4 or 8, or an all-zero tensor.
    """
    if bits not in GRIDS:
        raise ValueError(f"bits must be 4 or 8 for the grid comparison; got {bits!r}")
    w = weight.detach().float().reshape(-1)
    amax = float(w.abs().max()) if w.numel() else 0.0
    if amax == 0.0:
        raise ValueError("the tensor is all zeros: every grid represents it exactly")
    absw = w.abs().double().numpy()
    small, large = float(np.quantile(absw, SMALL_QUANTILE)), float(np.quantile(absw, LARGE_QUANTILE))
    levels, rounded, rows = {}, {}, []
    for name, fmt in GRIDS[bits]:
        if fmt is None:
            spec = QuantSpec(bits=bits, granularity="tensor")
            w_hat = fake_quantize(w, spec)
            scale = amax / (2 ** (bits - 1) - 1)
            grid = np.arange(-(2 ** (bits - 1) - 1), 2 ** (bits - 1)) * scale
        else:
            element = FORMATS[fmt]
            scale = torch.tensor(amax / element.max_value, dtype=torch.float32)
            w_hat = round_elements(w * torch.reciprocal(scale), element) * scale
            grid = (element_values(fmt) * float(scale)).numpy()
        levels[name], rounded[name] = grid, w_hat.double().numpy()
        positive = grid[grid > 0]
        rows.append({"grid": name, "levels": len(grid), "step_near_zero": float(positive[0]),
                     "step_at_top": float(positive[-1] - positive[-2]),
                     "mse": metrics.mse(w, w_hat), "sqnr_db": metrics.sqnr_db(w, w_hat),
                     "small_rel_error": _relative(absw, rounded[name], w, absw <= small),
                     "large_rel_error": _relative(absw, rounded[name], w, absw >= large)})
    return GridComparison(w.double().numpy(), levels, rounded, pd.DataFrame(rows, columns=GRID_COLUMNS), small, large)


def _relative(absw: np.ndarray, w_hat: np.ndarray, w: torch.Tensor, where: np.ndarray) -> float:
    keep = where & (absw > 0)
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs(w.double().numpy()[keep] - w_hat[keep]) / absw[keep]))


def step_profile(levels: np.ndarray, amax: float, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """(|w| from amax/1000 to amax log-spaced, the grid's step there): the distance between the
    two levels around each |w|, what bounds its rounding error."""
    xs = np.geomspace(amax / 1000, amax, points)
    positive = np.concatenate([[0.0], levels[levels > 0]])
    index = np.clip(np.searchsorted(positive, xs, side="right"), 1, len(positive) - 1)
    return xs, positive[index] - positive[index - 1]


def error_profile(comparison: GridComparison, bins: int = 16) -> pd.DataFrame:
    """Mean relative error |w - w_hat| / |w| per grid in log-spaced bins of |w| (weights of 0 left out).

    Columns: grid, abs_w (bin centre, geometric), rel_error, count.
    """
    absw = np.abs(comparison.weight)
    keep = absw > 0
    top = float(absw.max())
    edges = np.geomspace(max(float(absw[keep].min()), top / 1e4), top * (1 + 1e-9), bins + 1)
    index = np.digitize(absw, edges) - 1
    rows = []
    for name, w_hat in comparison.rounded.items():
        rel = np.abs(comparison.weight - w_hat) / np.where(keep, absw, 1.0)
        for b in range(bins):
            inside = keep & (index == b)
            if inside.any():
                rows.append({"grid": name, "abs_w": float(np.sqrt(edges[b] * edges[b + 1])),
                             "rel_error": float(rel[inside].mean()), "count": int(inside.sum())})
    return pd.DataFrame(rows, columns=["grid", "abs_w", "rel_error", "count"])
