"""Honest storage accounting: what a packed file would hold, not a float tensor of fake values.

Per compressible weight of n values, b bits each (32 when kept float):

| format          | when                         | value bits                 | index bits           |
|-----------------|------------------------------|----------------------------|----------------------|
| dense           | always                       | n * b                      | 0                    |
| bitmask         | some weights are zero        | kept * b                   | n (1 bit per weight) |
| n:m             | the mask is n:m              | (kept in runs + tail) * b  | kept in runs * log2 m|
| filters removed | whole output channels zero   | rows kept * K * b          | 0                    |

plus, per quantization block, a scale in its storage type (`QuantSpec.scale_dtype`: 32 bits for
float32, 16 for float16 and bfloat16) and (asymmetric) a b-bit zero-point, and the bias in
float32. Each layer uses the cheapest format that applies. A tensor shared by several modules
(a tied LM head) is stored once. Number formats store their own scales
(lightviz/core/formats.py): an 8-bit E8M0 per block of 32 for MX, an 8-bit E4M3 per block of 16
plus one float32 per tensor for NVFP4, a float32 per block for FP8 and NF4.

>>> s = weight_size((4, 8), QuantSpec(bits=4, granularity="tensor"), None)
>>> (s.format, s.value_bits, s.qparam_bits, s.total_bits)
('dense', 128, 32, 160)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lightviz.core.quant import block_count
from lightviz.core.specs import PruneSpec, QuantSpec

FLOAT_BITS = 32
SCALE_BITS = 32
SCALE_DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16}


@dataclass(frozen=True)
class SizeBreakdown:
    """Bits one layer's weight and bias take in storage, by part."""

    format: str  # "dense" | "bitmask" | "n:m" | "filters removed"
    n_weights: int
    value_bits: int  # the stored values (codes, or float32 weights)
    qparam_bits: int  # scales and zero-points
    index_bits: int  # where the kept values are (bitmask, n:m indices)
    bias_bits: int  # bias, always float32

    @property
    def weight_bits(self) -> int:
        return self.value_bits + self.qparam_bits + self.index_bits

    @property
    def total_bits(self) -> int:
        return self.weight_bits + self.bias_bits

    @property
    def total_bytes(self) -> int:
        return math.ceil(self.total_bits / 8)

    @property
    def bits_per_weight(self) -> float:
        """Average storage bits per weight, qparams and indices included (bias excluded)."""
        return self.weight_bits / max(self.n_weights, 1)


def weight_size(shape: tuple[int, ...], quant: QuantSpec, mask: torch.Tensor | None,
                prune: PruneSpec | None = None, axis: int = 0, bias_numel: int = 0) -> SizeBreakdown:
    """Storage of one weight of `shape` under `quant`, with kept weights `mask` (None: all).

    Args:
        shape: the weight's shape; `axis` its output-channel dimension.
        quant: bits=None means float32 values and no qparams.
        mask: True where kept; zeros outside it are what sparse formats skip.
        prune: the method that made the mask; n:m storage applies only to an n:m mask.
        bias_numel: float32 bias values stored next to the weight.
    """
    n = math.prod(shape)
    rows = shape[axis] if shape else 1
    k = n // max(rows, 1)
    bits = quant.bits or FLOAT_BITS
    bias_bits = bias_numel * FLOAT_BITS

    def qparams(stored_shape: tuple[int, ...]) -> int:
        if quant.bits is None:
            return 0
        scale_bits, tensor_bits = scale_storage_bits(quant)
        zero_point = bits if quant.scheme == "asymmetric" else 0
        return block_count(stored_shape, quant, axis) * (scale_bits + zero_point) + tensor_bits

    options = [SizeBreakdown("dense", n, n * bits, qparams(shape), 0, bias_bits)]
    kept = n if mask is None else int(mask.sum())
    if kept < n:
        options.append(SizeBreakdown("bitmask", n, kept * bits, qparams(shape), n, bias_bits))
        row_kept = mask.movedim(axis, 0).reshape(rows, -1).any(dim=1)
        rows_kept = int(row_kept.sum())
        if rows_kept < rows:
            stored = tuple(rows_kept if d == axis % len(shape) else s for d, s in enumerate(shape))
            options.append(SizeBreakdown("filters removed", n, rows_kept * k * bits,
                                         qparams(stored), 0, bias_bits))
        if prune is not None and prune.method == "n:m" and prune.active:
            in_runs = rows * (k // prune.m) * prune.n  # kept values inside full runs of m
            tail = rows * (k % prune.m)  # a short last run stays dense
            index = in_runs * math.ceil(math.log2(prune.m))
            options.append(SizeBreakdown("n:m", n, (in_runs + tail) * bits, qparams(shape), index, bias_bits))
    return min(options, key=lambda option: option.total_bits)


def scale_storage_bits(quant: QuantSpec) -> tuple[int, int]:
    """(bits of one block's scale, bits stored once per tensor) under the spec's number format.

    >>> scale_storage_bits(QuantSpec(format="mxfp4")), scale_storage_bits(QuantSpec(format="nvfp4"))
    ((8, 0), (8, 32))
    """
    if quant.format == "int":
        return SCALE_DTYPE_BITS[quant.scale_dtype], 0
    from lightviz.core.formats import number_format  # torch-heavy module, only when needed
    fmt = number_format(quant)
    return fmt.scale_bits, fmt.tensor_bits


def state_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of tensors stored at their own dtype (a state_dict's size); a tensor that appears
    under several names (tied weights) counts once.

    >>> shared = torch.zeros(4)
    >>> state_bytes({"a": shared, "b": shared, "c": torch.zeros(2)})
    24
    """
    seen, total = set(), 0
    for t in tensors.values():
        key = (t.data_ptr(), t.numel(), t.dtype, tuple(t.shape)) if t.device.type != "meta" and t.data_ptr() else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total
