"""The integer side of a compressed layer: its codes, qparams, mask and bias, as an exported
file stores them (ONNX QDQ, the packed lightviz file).

The engine keeps fake-quantized float weights (`LayerResult.weight_hat`); exporting needs the
integer codes q behind them, with `weight_hat == s * (q - z)` to the bit. `layer_codes`
recomputes q from the pruned reference weight and the layer's own qparams, then checks that
dequantizing them gives `weight_hat` back exactly (a guard: a mismatch is a bug, never rounding).

>>> import torch
>>> from torch import nn
>>> from lightviz.core.engine import Engine, uniform_plan
>>> engine = Engine(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
>>> codes = layer_codes(engine, uniform_plan(4))["1"]
>>> codes.codes.dtype, codes.qmin, codes.qmax, codes.container
(torch.int32, -7, 7, 'int4')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lightviz.core.engine import Engine, LayerResult
from lightviz.core.layers import LayerInfo
from lightviz.core.quant import QParams, block_count, code_range, dequantize, quantize
from lightviz.core.specs import Plan, QuantSpec

# integer containers: name -> (lowest, highest code, bits); the smallest that holds a range wins
CONTAINERS = {"int4": (-8, 7, 4), "uint4": (0, 15, 4), "int8": (-128, 127, 8), "uint8": (0, 255, 8),
              "int16": (-32768, 32767, 16), "uint16": (0, 65535, 16)}


@dataclass(frozen=True, eq=False)
class LayerCodes:
    """One layer as integers: codes (None when it stays float), qparams, mask and bias.

    Attributes:
        layer: the layer (name, shape, output-channel axis).
        quant: its effective spec (bits=None: float).
        codes: int32 codes, the weight's shape, pruned weights at the zero-point; None if float.
        qparams: one scale and zero-point per block, in core.quant's block order; None if float.
        mask: True where a weight is kept; None when nothing is pruned.
        weight_hat: the compressed float weight the engine simulates (dequantized codes).
        bias: the float32 bias the layer uses (BatchNorm folded in when the plan folds).
        result: the engine's LayerResult it came from (size breakdown, prune spec).
    """

    layer: LayerInfo
    quant: QuantSpec
    codes: torch.Tensor | None
    qparams: QParams | None
    mask: torch.Tensor | None
    weight_hat: torch.Tensor
    bias: torch.Tensor | None
    result: LayerResult

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def quantized(self) -> bool:
        return self.codes is not None

    @property
    def binary(self) -> bool:
        """Symmetric 1-bit: codes -1/+1 times a per-block mean |w| (XNOR-Net)."""
        return self.quant.bits == 1 and self.quant.scheme == "symmetric"

    @property
    def qmin(self) -> int:
        return code_range(self.quant)[0]

    @property
    def qmax(self) -> int:
        return code_range(self.quant)[1]

    @property
    def container(self) -> str:
        """The smallest integer type that holds the code range (int4 for 1-bit {-1, +1})."""
        return container_for(self.qmin, self.qmax)


def container_for(qmin: int, qmax: int, min_bits: int = 4) -> str:
    """Smallest integer container (at least `min_bits` wide) holding codes qmin..qmax.

    >>> container_for(-127, 127), container_for(0, 15), container_for(0, 15, min_bits=8)
    ('int8', 'uint4', 'uint8')
    """
    for name, (low, high, bits) in CONTAINERS.items():
        if bits >= min_bits and low <= qmin and qmax <= high and (qmin < 0) == name.startswith("int"):
            return name
    raise ValueError(f"no integer container holds codes {qmin}..{qmax}")


def layer_codes(engine: Engine, plan: Plan) -> dict[str, LayerCodes]:
    """Every layer of `plan` as integers, in layer order; checked against the engine's weights.

    Raises:
        ValueError: a plan with a PTQ method or a number format other than int (their weights are
            not `s * (q - z)` of round-to-nearest codes on a uniform grid).
    """
    if plan.uses_methods or plan.uses_formats:
        raise ValueError("exported files hold integer round-to-nearest weights on uniform grids: leave out PTQ "
                         "methods and number formats (evaluate and compare-methods measure them)")
    results = engine.compress_layers(plan)
    out = {}
    for name, result in results.items():
        bias = engine.reference_weight(name, plan.fold_bn)[1]
        out[name] = _codes(result, bias)
    return out


def _codes(result: LayerResult, bias: torch.Tensor | None) -> LayerCodes:
    layer, quant = result.layer, result.quant
    bias = None if bias is None else bias.detach().float().clone()
    if quant.bits is None:
        return LayerCodes(layer, quant, None, None, result.mask, result.weight_hat, bias, result)
    pruned = result.weight if result.mask is None else result.weight * result.mask
    codes = quantize(pruned, quant, layer.axis, result.qparams)
    if result.mask is not None and quant.bits == 1 and quant.scheme == "symmetric":
        codes = codes.masked_fill(~result.mask, 0)  # sign(0) = +1; a pruned weight stays 0 (int4 holds it)
    back = dequantize(codes, result.qparams, quant, layer.axis).to(result.weight_hat.dtype)
    if not torch.equal(back, result.weight_hat):
        raise RuntimeError(f"layer {layer.name!r}: its integer codes do not reproduce the engine's weights "
                           "bit-exactly; this is a bug in lightviz, please report it")
    return LayerCodes(layer, quant, codes, result.qparams, result.mask, result.weight_hat, bias, result)


def rows_kept(mask: torch.Tensor | None, layer: LayerInfo) -> torch.Tensor:
    """(C_out,) bool: output channels with at least one kept weight."""
    if mask is None:
        return torch.ones(layer.out_channels, dtype=torch.bool)
    return mask.movedim(layer.axis, 0).reshape(layer.out_channels, -1).any(dim=1)


def row_blocks(kept: torch.Tensor, quant: QuantSpec, shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """Block indices (core.quant's order) belonging to the kept rows; for "tensor", the one block."""
    if quant.granularity == "tensor":
        return torch.zeros(1, dtype=torch.long)
    rows = len(kept)
    index = torch.nonzero(kept).reshape(-1)
    if quant.granularity == "channel":
        return index
    per_row = block_count(shape, quant, axis) // rows
    k = math.prod(shape) // rows
    group = min(quant.group_size, k) or 1
    full = k // group
    blocks = (index.reshape(-1, 1) * full + torch.arange(full)).reshape(-1)
    if per_row > full:  # each row's short tail, after all full groups
        blocks = torch.cat([blocks, rows * full + index])
    return blocks
