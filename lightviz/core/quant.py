"""Uniform quantization: choose_qparams, quantize, dequantize, fake_quantize.

The math (DESIGN.md), for b bits and a block with clip range [lo, hi] (lo <= 0 <= hi):

| scheme     | codes                         | scale s                          | zero-point z                 |
|------------|-------------------------------|----------------------------------|------------------------------|
| asymmetric | 0 .. 2^b - 1                  | max((hi - lo) / (2^b - 1), eps)  | clamp(-round(lo / s), codes) |
| symmetric  | -(2^(b-1) - 1) .. 2^(b-1) - 1 | max(max(-lo, hi) / (2^(b-1)-1), eps) | 0                        |
| sym, b = 1 | -1, +1 (binarization)         | mean(|w|) of the block           | 0                            |

1-bit symmetric codes are sign(w) with sign(0) = +1 (XNOR-Net): a 1-bit code has two levels,
so a zero weight takes +s, never a third level 0 (the engine re-applies pruning masks after
quantization, so pruned weights still stay exactly zero).

q = clamp(round(w * (1/s)) + z, codes) with round-half-to-even, dequantized s * (q - z): the
same float32 operations as torch.fake_quantize_per_{tensor,channel}_affine, so results are
bit-exact with torch.ao's observers followed by those kernels.

Granularity becomes one notion, a *block*: the weight is viewed as rows (C_out, K) with the
output-channel `axis` first and everything else flattened; `tensor` is one block, `channel`
one block per row, `group` one block per run of `group_size` weights within a row (a shorter
last run is a block of its own). QParams hold one scale and zero-point per block
(lightviz/core/blocks.py). Specs with another number format (fp8, MX, NVFP4, NF4) go to
lightviz/core/formats.py from here.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lightviz.core.blocks import EPS, MSE_GRID, QParams, _Blocks, _quantile  # noqa: F401 - re-exported
from lightviz.core.specs import QuantSpec

HIST_BINS = 2048  # entropy calibration histogram, as TensorRT
ENTROPY_START_BIN = 128  # smallest candidate threshold, in bins


def code_range(spec: QuantSpec) -> tuple[int, int]:
    """Smallest and largest integer code: (qmin, qmax).

    >>> code_range(QuantSpec(bits=8)), code_range(QuantSpec(bits=8, scheme="asymmetric"))
    ((-127, 127), (0, 255))
    """
    bits = _require_bits(spec)
    if spec.scheme == "symmetric":
        half = max(2 ** (bits - 1) - 1, 1)  # 1 bit: codes -1, +1
        return -half, half
    return 0, 2**bits - 1


def choose_qparams(weight: torch.Tensor, spec: QuantSpec, axis: int = 0) -> QParams:
    """Scale and zero-point of every block of `weight`.

    >>> qp = choose_qparams(torch.tensor([[-10.0, 10.0]]), QuantSpec(bits=8, granularity="tensor"))
    >>> round(qp.scale.item() * 127, 4), qp.zero_point.item()
    (10.0, 0)
    """
    _require_bits(spec)
    if spec.format != "int":  # fp8, MX, NVFP4, NF4: lightviz/core/formats.py
        from lightviz.core.formats import choose_format_qparams
        return choose_format_qparams(weight, spec, axis)
    blocks = _Blocks(weight, spec, axis)
    pairs = [_choose_block_qparams(part, spec) for part in blocks.parts]
    return QParams(
        scale=stored_scale(torch.cat([scale.reshape(-1) for scale, _ in pairs]), spec),
        zero_point=torch.cat([zp.reshape(-1) for _, zp in pairs]).to(torch.int32),
    )


SCALE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def stored_scale(scale: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Scales as their storage type holds them (`spec.scale_dtype`), back in float32: a float16 or
    bfloat16 scale is rounded to that type (and kept above its smallest positive value).

    >>> spec = QuantSpec(bits=4, scale_dtype="bfloat16")
    >>> stored_scale(torch.tensor([0.1]), spec).item()
    0.10009765625
    """
    dtype = SCALE_DTYPES.get(getattr(spec, "scale_dtype", "float32"))
    if dtype is None:
        return scale
    info = torch.finfo(dtype)
    return scale.to(dtype).float().clamp_min(info.smallest_normal * info.eps)  # the smallest subnormal


def quantize(weight: torch.Tensor, spec: QuantSpec, axis: int = 0,
             qparams: QParams | None = None) -> torch.Tensor:
    """Integer codes (int32, same shape as `weight`).

    >>> quantize(torch.tensor([-10.0, -5.0, 10.0]), QuantSpec(bits=8, granularity="tensor")).tolist()
    [-127, -64, 127]
    """
    _require_int_format(spec)
    qparams = qparams or choose_qparams(weight, spec, axis)
    qmin, qmax = code_range(spec)

    def codes(part: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        if _is_binary(spec):
            return binary_sign(part)
        q = torch.mul(part, torch.reciprocal(scale)).round_().add_(zero_point)
        return q.clamp_(qmin, qmax)

    return _Blocks(weight, spec, axis).map(codes, qparams).to(torch.int32)


def dequantize(codes: torch.Tensor, qparams: QParams, spec: QuantSpec, axis: int = 0) -> torch.Tensor:
    """Float32 values s * (q - z) of integer `codes`.

    >>> spec = QuantSpec(bits=8, granularity="tensor")
    >>> w = torch.tensor([-10.0, -5.0, 10.0])
    >>> [round(v, 4) for v in dequantize(quantize(w, spec), choose_qparams(w, spec), spec).tolist()]
    [-10.0, -5.0394, 10.0]
    """
    _require_int_format(spec)
    return _Blocks(codes.to(torch.float32), spec, axis).map(
        lambda q, scale, zero_point: (q - zero_point).mul_(scale), qparams)


def fake_quantize(weight: torch.Tensor, spec: QuantSpec, axis: int = 0,
                  qparams: QParams | None = None) -> torch.Tensor:
    """Quantize then dequantize: same shape and dtype as `weight`, which is left untouched.

    Args:
        weight: any float tensor; `axis` is its output-channel dimension.
        spec: bits, scheme, granularity and range method; bits=None returns a copy.
        qparams: reuse qparams from `choose_qparams` instead of recomputing them.

    >>> fake_quantize(torch.tensor([-10.0, -5.0, 10.0]), QuantSpec(bits=8, granularity="tensor"))
    tensor([-10.0000,  -5.0394,  10.0000])
    """
    if spec.bits is None:
        return weight.clone()
    if spec.format != "int":  # fp8, MX, NVFP4, NF4: lightviz/core/formats.py
        from lightviz.core.formats import fake_quantize_format
        return fake_quantize_format(weight, spec, axis, qparams)
    given = qparams
    qparams = qparams or choose_qparams(weight, spec, axis)
    qmin, qmax = code_range(spec)
    symmetric = spec.scheme == "symmetric"
    # our own minmax qparams at float32 scales: |x| <= amax keeps every code in range
    unclipped = spec.range_method == "minmax" and given is None and getattr(spec, "scale_dtype", "float32") == "float32"

    def roundtrip(part: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        if _is_binary(spec):
            return binary_sign(part).mul_(scale)
        q = torch.mul(part, torch.reciprocal(scale)).round_()  # x * (1/s), as torch's kernels
        if symmetric and unclipped:  # |x| <= amax, so |x/s| <= qmax: nothing to clamp
            return q.mul_(scale)
        if symmetric:  # z = 0: skip two passes over memory
            return q.clamp_(qmin, qmax).mul_(scale)
        return q.add_(zero_point).clamp_(qmin, qmax).sub_(zero_point).mul_(scale)

    return _Blocks(weight, spec, axis).map(roundtrip, qparams).to(weight.dtype)


def block_count(shape: tuple[int, ...], spec: QuantSpec, axis: int = 0) -> int:
    """Number of (scale, zero-point) pairs a weight of `shape` needs under `spec`."""
    if spec.granularity == "tensor" or len(shape) == 0:
        return 1
    rows = shape[axis]
    k = int(np.prod(shape)) // max(rows, 1)
    if spec.granularity == "channel":
        return rows
    return rows * -(-k // spec.group_size)


def clip_range(weight: torch.Tensor, spec: QuantSpec, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (lo, hi) range each block is quantized over, after the range method: (n_blocks,) each."""
    if spec.format != "int":
        from lightviz.core.formats import format_clip_range
        return format_clip_range(weight, spec, axis)
    blocks = _Blocks(weight, spec, axis)
    pairs = [_clip_block_range(part, spec) for part in blocks.parts]
    return torch.cat([lo.reshape(-1) for lo, _ in pairs]), torch.cat([hi.reshape(-1) for _, hi in pairs])


# --- qparams of one part (n_blocks, block_len) --------------------------------------------


def _choose_block_qparams(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    if _is_binary(spec):  # XNOR-Net: alpha = mean |w|
        alpha = x.abs().mean(dim=1, keepdim=True)
        if not _all_finite(alpha):  # the float32 sum overflowed (|w| near 3.4e38): in float64
            alpha = torch.where(torch.isfinite(alpha), alpha, x.abs().double().mean(dim=1, keepdim=True).float())
        return alpha, torch.zeros(x.shape[0], 1, device=x.device)
    qmin, qmax = code_range(spec)
    lo, hi = _clip_block_range(x, spec)
    return _qparams_from_range(lo, hi, qmin, qmax, spec.scheme)


def _qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int,
                        scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.ao's _calculate_qparams, same float32 operations in the same order."""
    if scheme == "symmetric":
        amax = torch.maximum(-lo, hi)
        scale = torch.clamp_min(amax / (float(qmax - qmin) / 2), EPS)
        return scale, torch.zeros_like(scale)
    span = hi - lo
    scale = span / float(qmax - qmin)
    if not _all_finite(span):  # hi - lo beyond float32 (weights near ±3.4e38): in float64,
        # and at most float32's largest value (2 levels cannot span ±3e38 in float32)
        wide = ((hi.double() - lo.double()) / float(qmax - qmin)).clamp_max(torch.finfo(torch.float32).max).float()
        scale = torch.where(torch.isfinite(span), scale, wide)
    scale = torch.clamp_min(scale, EPS)
    zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, zero_point


def _clip_block_range(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi), each (n_blocks, 1), with lo <= 0 <= hi so that zero is always exact."""
    # amin + amax: two fast reductions (torch.aminmax along dim 1 is ~5x slower on CPU)
    lo, hi = x.amin(dim=1, keepdim=True).clamp_max_(0.0), x.amax(dim=1, keepdim=True).clamp_min_(0.0)
    method = spec.range_method
    if method == "minmax" or x.shape[1] == 0:
        return lo, hi
    if method == "percentile":
        p = spec.percentile / 100.0
        if spec.scheme == "symmetric":
            amax = _quantile(x.abs(), p)
            return -amax, amax
        return _quantile(x, 1.0 - p).clamp_max(0.0), _quantile(x, p).clamp_min(0.0)
    if method == "mse":
        return _mse_range(x, lo, hi, spec)
    amax = _entropy_threshold(x.abs(), spec)  # entropy
    return torch.maximum(lo, -amax), torch.minimum(hi, amax)


def _mse_range(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
               spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink [lo, hi] by the ratio on MSE_GRID that minimizes each block's squared error."""
    qmin, qmax = code_range(spec)
    best_err = torch.full((x.shape[0], 1), float("inf"), device=x.device)
    best_lo, best_hi = lo.clone(), hi.clone()
    for ratio in MSE_GRID:
        cand_lo, cand_hi = lo * ratio, hi * ratio
        scale, zero_point = _qparams_from_range(cand_lo, cand_hi, qmin, qmax, spec.scheme)
        q = torch.round(x * torch.reciprocal(scale)).add_(zero_point).clamp_(qmin, qmax)
        err = (q.sub_(zero_point).mul_(scale) - x).pow_(2).sum(dim=1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, cand_lo, best_lo)
        best_hi = torch.where(better, cand_hi, best_hi)
    return best_lo, best_hi


def _entropy_threshold(absx: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """TensorRT's KL calibration of |x|: the clip threshold per block, (n_blocks, 1).

    As NVIDIA's pytorch-quantization (`_compute_amax_entropy`): each block's |x| goes into a
    2048-bin histogram over [0, max] (bin 0, the zero spike, set to bin 1's count). For
    candidate thresholds of i bins (i from 128 to 2048), P is the histogram clipped at i
    with the outliers added to its last bin, and Q is the first i bins merged into 2^(b-1)
    levels and spread back over their non-empty bins; the largest i with the smallest
    KL(P || Q) wins. Per tensor every i is tried; finer blocks try every 16th i.
    """
    amax = absx.amax(dim=1)  # (B,)
    levels = 2 ** (_require_bits(spec) - 1)
    if levels >= HIST_BINS:
        return amax.reshape(-1, 1)
    n_blocks = absx.shape[0]
    usable = (amax > 0) & torch.isfinite(amax)  # inf/NaN values (float32 overflow upstream): no clipping
    width = torch.where(usable, amax / HIST_BINS, torch.ones_like(amax))
    bins = absx / width.reshape(-1, 1)
    if not _all_finite(amax):  # a block holding inf/NaN: its values would index nowhere
        bins = torch.nan_to_num(bins, nan=0.0, posinf=HIST_BINS - 1)
    idx = torch.clamp(bins.long(), max=HIST_BINS - 1)
    flat = (idx + torch.arange(n_blocks, device=absx.device).reshape(-1, 1) * HIST_BINS).reshape(-1)
    hist = torch.bincount(flat, minlength=n_blocks * HIST_BINS).reshape(n_blocks, HIST_BINS).double().cpu().numpy()
    hist[:, 0] = hist[:, 1]
    above = hist.sum(axis=1, keepdims=True) - np.cumsum(hist, axis=1)  # counts above each bin
    start = max(ENTROPY_START_BIN, levels)
    candidates = range(start, HIST_BINS + 1, 1 if n_blocks == 1 else 16)
    best_kl = np.full(n_blocks, np.inf)
    best_i = np.full(n_blocks, HIST_BINS)
    for i in candidates:
        kept = hist[:, :i]
        p = kept.copy()
        p[:, -1] += above[:, i - 1]
        nonzero = kept > 0
        edges = -((-np.arange(levels + 1) * i) // levels)  # ceil(k * i / levels): bin j -> level
        sums = np.add.reduceat(kept, edges[:-1], axis=1)
        counts = np.add.reduceat(nonzero, edges[:-1], axis=1)
        q = np.repeat(sums / np.maximum(counts, 1), np.diff(edges), axis=1) * nonzero
        kl = _kl_rows(p, q)
        better = kl <= best_kl  # ties go to the larger threshold
        best_kl[better], best_i[better] = kl[better], i
    threshold = torch.from_numpy(best_i).float().to(width.device) * width
    return torch.where(usable, threshold, amax).reshape(-1, 1)


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row of two unnormalized histograms; inf where q misses p's mass."""
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    q = q / np.maximum(q.sum(axis=1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return terms.sum(axis=1)


def binary_sign(weight: torch.Tensor) -> torch.Tensor:
    """The 1-bit code of each value: +1 for w >= 0 (zero included, as XNOR-Net), -1 below.

    >>> binary_sign(torch.tensor([-0.5, 0.0, 2.0])).tolist()
    [-1.0, 1.0, 1.0]
    """
    return torch.where(weight >= 0, 1.0, -1.0).to(weight.dtype if weight.is_floating_point() else torch.float32)


def _all_finite(values: torch.Tensor) -> bool:
    """Whether a tensor of values >= 0 holds no inf or NaN: one max, far cheaper than isfinite().all()."""
    return values.numel() == 0 or math.isfinite(float(values.amax()))


def _is_binary(spec: QuantSpec) -> bool:
    return spec.bits == 1 and spec.scheme == "symmetric"


def _require_int_format(spec: QuantSpec) -> None:
    if spec.format != "int":
        raise ValueError(f"integer codes exist for format 'int' only; {spec.format!r} stores its own elements "
                         "(use fake_quantize, or lightviz.core.formats for the grid)")


def _require_bits(spec: QuantSpec) -> int:
    if spec.bits is None:
        raise ValueError("this spec keeps the tensor float (bits=None): there is nothing to quantize")
    return spec.bits
