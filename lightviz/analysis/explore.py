"""What the dashboard's charts show, computed without Streamlit or Plotly.

Every number a chart draws comes from here (or straight from the engine), so it is testable
with plain pytest: weight histograms with the quantization grid of one block, the samples whose
prediction flips, a layer summary, storage by part, and per-layer error against bits.

>>> from lightviz.core.engine import Engine, uniform_plan
>>> engine = Engine(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
>>> hist = weight_histogram(engine.compress_layer(uniform_plan(bits=2, granularity="tensor"), "1"))
>>> len(hist.levels), hist.scope
(3, 'whole layer')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from lightviz.core import metrics
from lightviz.core.engine import Engine, LayerResult
from lightviz.core.formats import element_values
from lightviz.core.quant import block_count, code_range
from lightviz.core.specs import LayerConfig, Plan, QuantSpec

ENTROPY_MAX_BLOCKS = 1000  # entropy calibration costs ~10 ms per block on a laptop core
HIST_BINS = 80
MAX_LEVELS = 64  # draw the grid's levels only when they stay distinguishable
MAX_FORMAT_LEVELS = 256  # floating-point grids (FP8: 253 levels) bunch near zero: drawn up to this many
SIZE_PARTS = {  # layer_table column -> what the stacked size chart calls it
    "value_bytes": "codes / values",
    "qparam_bytes": "scales + zero-points",
    "index_bytes": "sparse index",
    "bias_bytes": "float bias",
}


# --- weight histogram of a layer (or one of its quantization blocks) -----------------------


class Binned:
    """Bin geometry of a histogram with equal-width `edges` (a mixin of the histogram records)."""

    edges: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def width(self) -> float:
        return float(self.edges[1] - self.edges[0])


@dataclass(frozen=True)
class WeightHistogram(Binned):
    """Pre-binned float and compressed weights of one layer or block, with its grid.

    Attributes:
        edges: bin edges shared by both histograms, (bins + 1,).
        float_counts: all float weights (BatchNorm folded when the plan folds), (bins,).
        compressed_counts: the kept weights after quantization, (bins,); pruned ones are not here.
        pruned: how many weights pruning set to exactly zero.
        n_weights: weights in the scope.
        levels: the dequantized values the block can take, or None (float, too many, or
            several blocks in the scope); `note` says why.
        span: (lo, hi) of the grid: weights outside saturate to the end levels; None as levels.
        step: the grid's step (the scale s), or None.
        saturated: kept weights more than half a step outside the span (clipped).
        scope: "whole layer", "channel 3" or "channel 3, group 1".
        note: one line on what the grid lines show or why there are none.
    """

    edges: np.ndarray
    float_counts: np.ndarray
    compressed_counts: np.ndarray
    pruned: int
    n_weights: int
    levels: np.ndarray | None
    span: tuple[float, float] | None
    step: float | None
    saturated: int
    scope: str
    note: str


def block_grid(result: LayerResult, channel: int | None = None,
               group: int | None = None) -> tuple[int, int, int]:
    """(channels, groups per channel, group length) of a layer's quantization blocks.

    Groups are 1 (the whole row) unless the layer is quantized per group.
    """
    shape, axis = result.layer.shape, result.layer.axis
    channels = shape[axis]
    k = math.prod(shape) // max(channels, 1)
    quant = result.quant
    if quant.bits is None or quant.granularity != "group":
        return channels, 1, k
    length = min(quant.group_size, k) or 1
    return channels, -(-k // length), length


def weight_histogram(result: LayerResult, channel: int | None = None, group: int | None = None,
                     bins: int = HIST_BINS, max_levels: int = MAX_LEVELS) -> WeightHistogram:
    """Histogram of a layer's float and compressed weights, with the grid when it is one grid.

    Args:
        result: one layer compressed by the engine.
        channel: restrict to one output channel (its block, for per-channel quantization).
        group: with per-group quantization and a channel, restrict to one group of it.
        bins: number of bins over the range of all drawn values.
        max_levels: draw levels only up to this many.

    Raises:
        ValueError: channel or group out of range.
    """
    quant, axis = result.quant, result.layer.axis
    channels, groups, length = block_grid(result)
    weight, weight_hat = result.weight.detach().cpu(), result.weight_hat.detach().cpu()  # drawn from the CPU
    mask = torch.ones_like(weight, dtype=torch.bool) if result.mask is None else result.mask.cpu()
    scope, block = "whole layer", None
    if group is None and groups == 1:
        group = 0  # one group per channel: the channel's block
    if channel is not None:
        if not 0 <= channel < channels:
            raise ValueError(f"channel must be from 0 to {channels - 1}; got {channel}")
        rows = [t.movedim(axis, 0).reshape(channels, -1)[channel] for t in (weight, weight_hat, mask)]
        scope = f"channel {channel}"
        if quant.bits is not None and quant.granularity == "channel":
            block = channel
        if quant.bits is not None and quant.granularity == "group" and group is not None:
            if not 0 <= group < groups:
                raise ValueError(f"group must be from 0 to {groups - 1}; got {group}")
            rows = [t[group * length:(group + 1) * length] for t in rows]
            block = _group_block(result, channel, group)
            scope = f"channel {channel}" + (f", group {group}" if groups > 1 else "")
        weight, weight_hat, mask = rows
    if quant.bits is not None and quant.granularity == "tensor":
        block = 0

    w = weight.detach().double().reshape(-1).numpy()
    kept = mask.reshape(-1).numpy()
    w_hat = weight_hat.detach().double().reshape(-1).numpy()[kept]
    levels = span = step = None
    saturated, note = 0, _grid_note(quant, channel, group, channels, groups, length)
    all_levels = None
    if block is not None and result.qparams is not None:
        all_levels, scale = _levels(quant, result.qparams, block)
        all_levels = all_levels[np.isfinite(all_levels)]  # s * (q - z) can overflow float32 near its limit
    if all_levels is not None and len(all_levels):
        step = scale
        if quant.bits == 1 and quant.scheme == "symmetric" and quant.format == "int":
            note = (f"binarized: sign(w) * mean|w| = ±{scale:.4g}, two levels (a zero weight takes +{scale:.4g}, "
                    "as XNOR-Net; pruned weights stay 0)")
        else:
            span = (float(all_levels[0]), float(all_levels[-1]))
            kept_w = w[kept]
            half = (all_levels[-1] - all_levels[-2]) / 2 if len(all_levels) > 1 else 0.0  # the outermost half-step
            saturated = int(((kept_w < span[0] - half) | (kept_w > span[1] + half)).sum())
            note = (f"{len(all_levels)} levels, step s = {scale:.4g}; weights outside the span saturate"
                    if quant.format == "int" else _format_note(quant, all_levels, scale))
        if len(all_levels) <= (max_levels if quant.format == "int" else max(max_levels, MAX_FORMAT_LEVELS)):
            levels = all_levels
        else:
            note += f" (too many levels to draw: {len(all_levels)} > {max_levels})"
    extent = [w.min(initial=0.0), w.max(initial=0.0)] + ([w_hat.min(), w_hat.max()] if w_hat.size else [])
    if span is not None:
        extent += list(span)
    extent = [value for value in extent if math.isfinite(value)]  # inf/NaN compressed weights: not drawn
    edges = _edges_centered_on_zero(min(extent), max(extent), bins)
    unshown = int((~np.isfinite(w_hat)).sum())
    if unshown:
        note += f"; {unshown:,} compressed weight(s) overflowed float32 to inf or NaN and are not drawn"
    return WeightHistogram(
        edges=edges, float_counts=np.histogram(w, edges)[0], compressed_counts=np.histogram(w_hat, edges)[0],
        pruned=int((~kept).sum()), n_weights=int(w.size), levels=levels, span=span, step=step,
        saturated=saturated, scope=scope, note=note)


def _edges_centered_on_zero(lo: float, hi: float, bins: int) -> np.ndarray:
    """About `bins` equal bins over [lo, hi] (lo <= 0 <= hi, padded 2%), one of them centered on 0,
    so the spike of exact zeros sits in one bin."""
    pad = (hi - lo) * 0.02 or 1e-6
    width = (hi - lo + 2 * pad) / bins
    first = -(math.ceil((pad - lo) / width - 0.5) + 0.5) * width  # the last such edge at or below lo - pad
    count = math.ceil((hi + pad - first) / width)
    return first + width * np.arange(count + 1)


def _group_block(result: LayerResult, channel: int, group: int) -> int:
    """Index of (channel, group) in the engine's qparams: all full groups row-major, then the
    short tail of each row (quant._Blocks' order)."""
    channels, groups, length = block_grid(result)
    k = math.prod(result.layer.shape) // channels
    full = k // length
    if group < full:
        return channel * full + group
    return channels * full + channel


def _levels(quant: QuantSpec, qparams, block: int) -> tuple[np.ndarray, float]:
    """Every value block `block` can dequantize to, ascending, and its scale."""
    scale = qparams.scale[block].reshape(1).cpu()  # float32, as the kernels compute
    zero_point = float(qparams.zero_point[block])
    if quant.format != "int":  # a floating-point (or table) grid times the block's scale
        values = element_values(quant.format).float() * scale
    elif quant.bits == 1 and quant.scheme == "symmetric":  # sign(w) * alpha, sign(0) = +1: two levels
        values = torch.tensor([-1.0, 1.0]) * scale
    else:
        qmin, qmax = code_range(quant)
        values = (torch.arange(qmin, qmax + 1, dtype=torch.float32) - zero_point) * scale
    return values.double().numpy(), float(scale)


def _format_note(quant: QuantSpec, levels: np.ndarray, scale: float) -> str:
    """What a non-uniform grid looks like: its levels and how its step grows with |w|."""
    positive = levels[levels > 0]
    steps = np.diff(positive) if len(positive) > 1 else np.array([0.0])
    scale_text = {"mx": f"shared scale 2^{int(round(math.log2(scale)))}" if scale > 0 else "shared scale 0",
                  "nvfp4": f"block scale {scale:.4g} (E4M3 × tensor scale)"}.get(
        "mx" if quant.format.startswith("mx") else quant.format, f"scale {scale:.4g}")
    if quant.format == "nf4":
        return f"16 NormalFloat levels (normal quantiles), {scale_text}: closest together near zero"
    if quant.format == "mxint8":
        return f"{len(levels)} int8 levels (k/64), {scale_text}: a uniform step of {steps.min():.3g}"
    return (f"{len(levels)} floating-point levels, {scale_text}: step {steps.min():.3g} near zero, "
            f"{steps.max():.3g} at the top; weights outside the span saturate")


def _grid_note(quant: QuantSpec, channel: int | None, group: int | None, channels: int,
               groups: int, length: int) -> str:
    if quant.bits is None:
        return "kept float: no quantization grid"
    if quant.granularity == "channel" and channel is None:
        return f"per channel: each of the {channels} channels has its own scale; pick a channel to see its grid"
    if quant.granularity == "group" and (channel is None or group is None):
        return (f"per group: each run of {length} weights ({groups} per channel) has its own scale; "
                "pick a channel and a group to see its grid")
    return ""


# --- predictions that changed -------------------------------------------------------------


FLIP_COLUMNS = ["index", "true", "float_pred", "compressed_pred", "change"]


def flipped_samples(reference_logits: torch.Tensor, test_logits: torch.Tensor,
                    labels: torch.Tensor | None = None) -> pd.DataFrame:
    """The inputs whose top-1 class differs between the float and the compressed model.

    `change` is "broke" (float right, compressed wrong), "fixed" (the reverse), "changed"
    (both wrong, or no labels). Rows are sorted broke, changed, fixed, then by index.

    >>> ref, test = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    >>> flipped_samples(ref, test, torch.tensor([0, 1]))[["index", "change"]].values.tolist()
    [[0, 'broke']]
    """
    metrics.agreement(reference_logits, test_logits)  # validates shapes
    before, after = reference_logits.argmax(dim=1), test_logits.argmax(dim=1)
    index = torch.nonzero(before != after).reshape(-1)
    rows = pd.DataFrame({
        "index": index.tolist(),
        "true": labels[index].tolist() if labels is not None else [None] * len(index),
        "float_pred": before[index].tolist(),
        "compressed_pred": after[index].tolist(),
    })
    if labels is None:
        rows["change"] = "changed"
    else:
        rows["change"] = np.select([rows["float_pred"] == rows["true"], rows["compressed_pred"] == rows["true"]],
                                   ["broke", "fixed"], "changed")
    order = rows["change"].map({"broke": 0, "changed": 1, "fixed": 2})
    return rows.assign(_order=order).sort_values(["_order", "index"]).drop(columns="_order")[FLIP_COLUMNS] \
        .reset_index(drop=True)


# --- model and layer summaries ----------------------------------------------------------------


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (not buffers) of a model."""
    return sum(p.numel() for p in model.parameters())


def role_counts(engine: Engine) -> dict[str, int]:
    """{role: number of compressible layers}, in order of first appearance."""
    counts: dict[str, int] = {}
    for layer in engine.layers:
        counts[layer.role] = counts.get(layer.role, 0) + 1
    return counts


def size_parts(table: pd.DataFrame) -> pd.DataFrame:
    """Storage of each layer by part, long form: columns layer, part, bytes (in SIZE_PARTS order)."""
    long = table.melt(id_vars="name", value_vars=list(SIZE_PARTS), var_name="part", value_name="bytes")
    long["part"] = long["part"].map(SIZE_PARTS)
    return long.rename(columns={"name": "layer"})


def other_bytes(evaluation_size_bytes: int, table: pd.DataFrame) -> int:
    """Bytes of the model outside its compressible layers (BatchNorm kept, buffers, ...)."""
    return int(evaluation_size_bytes - table["size_bytes"].sum())


def sqnr_vs_bits(engine: Engine, plan: Plan, bits: list[int]) -> pd.DataFrame:
    """Weight SQNR (dB) of every layer at each bit-width, quantization only (no pruning).

    Every layer gets the plan's default quantization settings with `bits` replaced; overrides
    and pruning are dropped so the curves show what the bit-width alone does.
    Columns: layer, bits, sqnr_db.
    """
    rows = []
    for b in sorted(set(bits)):
        quant = replace(plan.default.quant, bits=b)
        config = LayerConfig(quant=quant)  # no pruning, no method: the bit-width alone
        base = replace(plan, default=config, overrides=(), global_prune=False)
        for name, result in engine.compress_layers(base).items():
            rows.append({"layer": name, "bits": b, "sqnr_db": metrics.sqnr_db(result.weight, result.weight_hat)})
    return pd.DataFrame(rows, columns=["layer", "bits", "sqnr_db"])


def interactive_cost_error(engine: Engine, plan: Plan) -> str | None:
    """Why computing `plan` would take too long for an interactive app, or None.

    Entropy calibration searches a 2048-bin histogram for every quantization block, so tiny
    groups (or many channels) take minutes: such plans are refused with what to do instead.
    """
    blocks = 0
    for layer in engine.layers:
        quant = plan.config_for(layer.name).effective_quant
        if quant.bits is not None and quant.range_method == "entropy" and not (
                quant.bits == 1 and quant.scheme == "symmetric") and 2 ** (quant.bits - 1) < 2048:
            blocks += block_count(layer.shape, quant, layer.axis)
    if blocks > ENTROPY_MAX_BLOCKS:
        return (f"entropy calibration searches a 2048-bin histogram per quantization block, and this plan has "
                f"{blocks:,} blocks (at most {ENTROPY_MAX_BLOCKS:,} stay interactive); use a coarser granularity "
                f"or larger groups, or the mse or percentile range method")
    return None
