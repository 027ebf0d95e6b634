"""A layer's quantization grid with its qparams fixed: round any subset of weights to it.

GPTQ rounds one column at a time and AdaRound chooses between the two grid points around
each weight; both need the grid of every weight, known before they start. `WeightGrid` holds
per-weight scale and zero-point maps in the *rows* view (C_out, K) of quant._Blocks (output
channel first, everything else flattened), built from the layer's QParams, so that a column
rounds exactly as `fake_quantize` would round it with the same qparams.

>>> from lightviz.core.quant import choose_qparams, fake_quantize
>>> w = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
>>> spec = QuantSpec(bits=3)
>>> grid = WeightGrid.of(w, spec, choose_qparams(w, spec))
>>> torch.equal(grid.round(w, slice(None)), fake_quantize(w, spec))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightviz.core.formats import element_values, number_format, round_elements
from lightviz.core.blocks import QParams, _Blocks
from lightviz.core.quant import code_range
from lightviz.core.specs import QuantSpec


@dataclass(frozen=True, eq=False)
class WeightGrid:
    """Scale and zero-point of every weight, rows view (C_out, K), float32."""

    spec: QuantSpec
    scale: torch.Tensor
    zero_point: torch.Tensor

    @classmethod
    def of(cls, weight: torch.Tensor, spec: QuantSpec, qparams: QParams, axis: int = 0) -> WeightGrid:
        """The grid of `weight` (any shape; `axis` its output channels) under fixed `qparams`."""
        blocks = _Blocks(torch.zeros_like(weight, dtype=torch.float32), spec, axis)
        scale = blocks.map(lambda part, s, z: s.expand_as(part).clone(), qparams)
        zero_point = blocks.map(lambda part, s, z: z.expand_as(part).clone(), qparams)
        rows = weight.shape[axis] if weight.dim() else 1
        return cls(spec, scale.movedim(axis, 0).reshape(rows, -1), zero_point.movedim(axis, 0).reshape(rows, -1))

    def round(self, values: torch.Tensor, cols: slice | torch.Tensor) -> torch.Tensor:
        """Nearest grid value of `values` (rows x the selected columns), float32.

        `values` may carry leading batch dimensions that broadcast against (C_out, len(cols)).
        """
        scale, zero_point = self.scale[:, cols], self.zero_point[:, cols]
        x = values.float()
        if self.spec.format != "int":
            inverse = torch.where(scale > 0, torch.reciprocal(scale), torch.zeros_like(scale))
            return round_elements(x * inverse, number_format(self.spec)) * scale
        if self.spec.bits == 1 and self.spec.scheme == "symmetric":
            return torch.sign(x) * scale
        qmin, qmax = code_range(self.spec)
        q = torch.round(x * torch.reciprocal(scale)).add_(zero_point).clamp_(qmin, qmax)
        return q.sub_(zero_point).mul_(scale)

    def neighbors(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(down, up, fraction): the grid values around each weight (rows view, all columns) and
        where the weight lies between them, (w - down) / (up - down) (0 where they coincide).

        Integers follow AdaRound's floor(w/s) + {0, 1}, clamped to the code range; other
        formats take the neighbours on their element grid.
        """
        x = values.float()
        scale = self.scale
        if self.spec.format == "int":
            qmin, qmax = code_range(self.spec)
            scaled = x * torch.reciprocal(scale)
            floor = torch.floor(scaled)
            fraction = scaled - floor
            down = (floor + self.zero_point).clamp(qmin, qmax).sub_(self.zero_point).mul_(scale)
            up = (floor + 1 + self.zero_point).clamp(qmin, qmax).sub_(self.zero_point).mul_(scale)
            return down, up, fraction
        elements = element_values(self.spec.format).float()
        inverse = torch.where(scale > 0, torch.reciprocal(scale), torch.zeros_like(scale))
        scaled = (x * inverse).clamp(float(elements[0]), float(elements[-1]))
        index = torch.searchsorted(elements, scaled.contiguous(), right=True).clamp_(1, len(elements) - 1)
        low, high = elements[index - 1], elements[index]
        low = torch.where(scaled >= high, high, low)  # the top element itself
        gap = high - low
        fraction = torch.where(gap > 0, (scaled - low) / torch.where(gap > 0, gap, 1.0), torch.zeros_like(gap))
        return low * scale, high * scale, fraction

    @property
    def binary(self) -> bool:
        return self.spec.format == "int" and self.spec.bits == 1 and self.spec.scheme == "symmetric"

