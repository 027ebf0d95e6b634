"""Number formats besides integers: FP8, OCP microscaling (MX), NVFP4 and NF4.

Every format is a per-block scale s times an *element* from a fixed set; a weight w becomes
`round(w * (1/s)) * s`, the round going to the nearest element, ties to even, saturating at
the largest one (the integer convention, with a floating-point grid).

| format   | element                         | block                     | scale per block                        | bits per weight          |
|----------|---------------------------------|---------------------------|----------------------------------------|--------------------------|
| fp8_e4m3 | FP8 E4M3, max 448               | the spec's granularity    | float32 `max(amax / 448, eps)`         | 8 + 32 per block         |
| fp8_e5m2 | FP8 E5M2, max 57344             | the spec's granularity    | float32 `max(amax / 57344, eps)`       | 8 + 32 per block         |
| mxfp8    | FP8 E4M3                        | 32                        | E8M0 `2^(floor(log2 amax) - 8)`        | 8 + 8/32                 |
| mxfp6    | FP6 E2M3, max 7.5               | 32                        | E8M0 `2^(floor(log2 amax) - 2)`        | 6 + 8/32                 |
| mxfp4    | FP4 E2M1, max 6                 | 32                        | E8M0 `2^(floor(log2 amax) - 2)`        | 4 + 8/32                 |
| mxint8   | int8 fixed point k/64, max 127/64 | 32                      | E8M0 `2^(floor(log2 amax))`            | 8 + 8/32                 |
| nvfp4    | FP4 E2M1                        | 16                        | E4M3 `amax / (6 t)`, times float32 t = tensor amax / (6 * 448) | 4 + 8/16, + 32 per tensor |
| nf4      | 16 NormalFloat levels in [-1, 1] | the spec's granularity   | float32 absmax                         | 4 + 32 per block         |

- FP8 follows torch's float8 dtypes bit for bit: `cast(w * (1/s)).float() * s` with
  `torch.float8_e4m3fn` / `torch.float8_e5m2` gives the same values (tests/test_formats.py).
- MX follows the OCP Microscaling spec v1.0: the shared exponent is floor(log2 amax) minus the
  element's largest exponent, clamped to E8M0's [-127, 127]; an all-zero block takes -127.
  Elements that land above the element maximum saturate (amax / X can reach 2^(emax+1)).
- NVFP4 follows NVIDIA's recipe (TensorRT Model Optimizer): a float32 tensor scale t puts the
  largest block scale at E4M3's 448; each block's scale amax / (6 t) is rounded to E4M3 (a zero
  block keeps zeros).
- NF4 uses QLoRA's table (bitsandbytes); a value exactly between two levels takes the lower.

>>> w = torch.tensor([[0.3, -1.0, 6.5, 0.0]])
>>> fake_quantize_format(w, QuantSpec(format="mxfp4")).tolist()
[[0.5, -1.0, 6.0, 0.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lightviz.core.blocks import EPS, MSE_GRID, QParams, _Blocks, _quantile
from lightviz.core.specs import QuantSpec

E8M0_MIN, E8M0_MAX = -127, 127
NVFP4_ELEMENT_MAX, E4M3_MAX = 6.0, 448.0
NF4_LEVELS = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0)


@dataclass(frozen=True)
class NumberFormat:
    """One format's element grid and scale rule.

    Attributes:
        element: "fp" (sign, `ebits` exponent and `mbits` mantissa bits, subnormals, no inf/NaN
            used), "fixed" (signed integers times 2^-mbits) or "lut" (a table of levels).
        max_value: the largest element magnitude (saturation).
        scale: "float32" (one float32 per block), "e8m0" (a power of two per block) or
            "e4m3" (an FP8 E4M3 per block times a float32 per tensor).
    """

    name: str
    element: str
    ebits: int
    mbits: int
    max_value: float
    scale: str

    @property
    def emax(self) -> int:
        """Exponent of the largest element (what an MX shared exponent subtracts)."""
        return math.floor(math.log2(self.max_value))

    @property
    def emin(self) -> int:
        """Smallest normal exponent of an fp element (subnormals share it)."""
        return 2 - 2 ** (self.ebits - 1)

    @property
    def scale_bits(self) -> int:
        """Stored bits of one block's scale."""
        return 32 if self.scale == "float32" else 8

    @property
    def tensor_bits(self) -> int:
        """Stored bits per tensor besides the blocks (NVFP4's float32 tensor scale)."""
        return 32 if self.scale == "e4m3" else 0


FORMATS = {
    "fp8_e4m3": NumberFormat("fp8_e4m3", "fp", 4, 3, 448.0, "float32"),
    "fp8_e5m2": NumberFormat("fp8_e5m2", "fp", 5, 2, 57344.0, "float32"),
    "mxfp8": NumberFormat("mxfp8", "fp", 4, 3, 448.0, "e8m0"),
    "mxfp6": NumberFormat("mxfp6", "fp", 2, 3, 7.5, "e8m0"),
    "mxfp4": NumberFormat("mxfp4", "fp", 2, 1, 6.0, "e8m0"),
    "mxint8": NumberFormat("mxint8", "fixed", 0, 6, 127 / 64, "e8m0"),
    "nvfp4": NumberFormat("nvfp4", "fp", 2, 1, NVFP4_ELEMENT_MAX, "e4m3"),
    "nf4": NumberFormat("nf4", "lut", 0, 0, 1.0, "float32"),
}


def number_format(spec: QuantSpec | str) -> NumberFormat:
    """The NumberFormat of a spec (or a format name); ValueError for "int"."""
    name = spec if isinstance(spec, str) else spec.format
    if name not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {name!r}")
    return FORMATS[name]


# --- elements ----------------------------------------------------------------------------


def round_elements(x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """The element nearest to each value of float32 `x` (ties to even), saturating at max_value.

    fp elements: the step at |x| is 2^(e - mbits) with e = max(floor(log2|x|), emin); `x`
    times the inverse step is rounded half to even and scaled back, every product by a power
    of two, so nothing but the round itself is inexact.

    >>> round_elements(torch.tensor([0.25, 0.75, 2.5, 5.0, 7.0]), FORMATS["mxfp4"]).tolist()
    [0.0, 1.0, 2.0, 4.0, 6.0]
    """
    x = x.float()
    if fmt.element == "lut":
        levels = torch.tensor(NF4_LEVELS)
        index = torch.bucketize(x.clamp(-1.0, 1.0), (levels[1:] + levels[:-1]) / 2)
        return levels[index]
    if fmt.element == "fixed":
        step = 2.0 ** -fmt.mbits
        return torch.round(x * (1 / step)).clamp_(-fmt.max_value / step, fmt.max_value / step).mul_(step)
    exponent = torch.frexp(x).exponent.sub_(1).clamp_(min=fmt.emin)  # floor(log2|x|), at least emin
    inverse_step = _power_of_two(fmt.mbits - exponent)
    q = torch.round(x * inverse_step).div_(inverse_step)  # division by a power of two: exact
    return q.clamp_(-fmt.max_value, fmt.max_value)


def element_values(fmt: NumberFormat | str) -> torch.Tensor:
    """Every value an element can take, ascending, float64.

    >>> element_values("mxfp4").tolist()
    [-6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    """
    fmt = number_format(fmt) if isinstance(fmt, str) else fmt
    if fmt.element == "lut":
        return torch.tensor(NF4_LEVELS, dtype=torch.float64)
    if fmt.element == "fixed":
        top = round(fmt.max_value * 2**fmt.mbits)
        return torch.arange(-top, top + 1, dtype=torch.float64) / 2**fmt.mbits
    mantissas = torch.arange(2**fmt.mbits, dtype=torch.float64) / 2**fmt.mbits
    positive = [mantissas[1:] * 2.0**fmt.emin]  # subnormals
    positive += [(1 + mantissas) * 2.0**e for e in range(fmt.emin, fmt.emax + 1)]
    values = torch.cat(positive)
    values = values[values <= fmt.max_value]
    return torch.cat([-values.flip(0), torch.zeros(1, dtype=torch.float64), values])


def _power_of_two(exponent: torch.Tensor) -> torch.Tensor:
    """2.0 ** exponent as float32, exactly (normal range), built from the exponent bits."""
    return ((exponent.to(torch.int32) + 127) << 23).view(torch.float32)


# --- scales --------------------------------------------------------------------------------


def block_scales(amax: torch.Tensor, fmt: NumberFormat, tensor_amax: torch.Tensor | None = None) -> torch.Tensor:
    """Each block's scale (float32, same shape as `amax`) from its largest |w|.

    >>> block_scales(torch.tensor([6.0, 7.0, 0.0]), FORMATS["mxfp4"]).tolist()  # E8M0: 2^0, 2^0, 2^-127
    [1.0, 1.0, 5.877471754111438e-39]
    """
    amax = amax.float()
    if fmt.scale == "float32":
        return torch.clamp_min(amax / fmt.max_value, EPS)
    if fmt.scale == "e8m0":
        exponent = torch.frexp(amax).exponent.sub_(1 + fmt.emax)
        exponent = torch.where(amax > 0, exponent, torch.full_like(exponent, E8M0_MIN))
        exponent = torch.where(torch.isfinite(amax), exponent, torch.full_like(exponent, E8M0_MAX))
        return torch.pow(2.0, exponent.clamp_(E8M0_MIN, E8M0_MAX).double()).float()  # 2^-127 is a subnormal
    tensor_scale = tensor_scale_nvfp4(tensor_amax if tensor_amax is not None else amax.max())
    return nvfp4_block_codes(amax, tensor_scale) * tensor_scale


def tensor_scale_nvfp4(tensor_amax: torch.Tensor) -> torch.Tensor:
    """NVFP4's float32 tensor scale t = max(amax / (6 * 448), eps)."""
    return torch.clamp_min(tensor_amax.float() / (NVFP4_ELEMENT_MAX * E4M3_MAX), EPS)


def nvfp4_block_codes(amax: torch.Tensor, tensor_scale: torch.Tensor) -> torch.Tensor:
    """NVFP4's stored E4M3 block scales, amax / (6 t) rounded to E4M3 (as float32 values)."""
    return (amax.float() / (NVFP4_ELEMENT_MAX * tensor_scale)).to(torch.float8_e4m3fn).float()


# --- fake quantization -------------------------------------------------------------------


def choose_format_qparams(weight: torch.Tensor, spec: QuantSpec, axis: int = 0) -> QParams:
    """One scale per block (zero-points all 0: the formats are sign-magnitude)."""
    fmt = number_format(spec)
    blocks = _Blocks(weight, spec, axis)
    tensor_amax = weight.detach().abs().amax().float() if weight.numel() else torch.tensor(0.0)
    scales = [_part_scale(part, spec, fmt, tensor_amax).reshape(-1) for part in blocks.parts]
    scale = torch.cat(scales)
    return QParams(scale=scale, zero_point=torch.zeros(scale.numel(), dtype=torch.int32))


def fake_quantize_format(weight: torch.Tensor, spec: QuantSpec, axis: int = 0,
                         qparams: QParams | None = None) -> torch.Tensor:
    """`weight` rounded to `spec.format`'s grid: same shape and dtype, input untouched."""
    fmt = number_format(spec)
    qparams = qparams or choose_format_qparams(weight, spec, axis)
    return _Blocks(weight, spec, axis).map(lambda part, scale, _: roundtrip(part, scale, fmt), qparams) \
        .to(weight.dtype)


def roundtrip(x: torch.Tensor, scale: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """`round_elements(x * (1/s)) * s` with `scale` broadcast over x; a zero scale gives zeros."""
    inverse = torch.where(scale > 0, torch.reciprocal(scale), torch.zeros_like(scale))
    return round_elements(x * inverse, fmt).mul_(scale)


def format_clip_range(weight: torch.Tensor, spec: QuantSpec, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) per block: +-(largest element) * scale, the values beyond which weights saturate."""
    fmt = number_format(spec)
    hi = choose_format_qparams(weight, spec, axis).scale * fmt.max_value
    return -hi, hi


def _part_scale(x: torch.Tensor, spec: QuantSpec, fmt: NumberFormat, tensor_amax: torch.Tensor) -> torch.Tensor:
    """Scales (n_blocks, 1) of one part of shape (n_blocks, block_len)."""
    absx = x.abs()
    amax = absx.amax(dim=1, keepdim=True) if x.shape[1] else torch.zeros(x.shape[0], 1)
    if spec.range_method == "percentile" and x.shape[1]:
        amax = _quantile(absx, spec.percentile / 100.0)
    scale = block_scales(amax, fmt, tensor_amax)
    if spec.range_method != "mse" or not x.shape[1]:
        return scale
    best_scale, best_err = scale, torch.full_like(scale, float("inf"))
    for ratio in MSE_GRID:  # the clipping ratio with the smallest squared error, per block
        candidate = block_scales(amax * ratio, fmt, tensor_amax)
        err = (roundtrip(x, candidate, fmt) - x).pow_(2).sum(dim=1, keepdim=True)
        better = err < best_err
        best_err, best_scale = torch.where(better, err, best_err), torch.where(better, candidate, best_scale)
    return best_scale
