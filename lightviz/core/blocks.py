"""One notion of granularity: a weight seen as blocks, each with its own scale and zero-point.

The weight is viewed as rows (C_out, K) with the output-channel `axis` first and everything
else flattened; `tensor` is one block, `channel` one block per row, `group` one block per run
of `group_size` weights within a row (a shorter last run is a block of its own). QParams hold
one scale and zero-point per block, in this order. Integer quantization (quant.py) and the
other number formats (formats.py) share it.

>>> blocks = _Blocks(torch.arange(10.0).reshape(2, 5), QuantSpec(granularity="group", group_size=2), 0)
>>> [tuple(part.shape) for part in blocks.parts]  # full groups of 2, then each row's tail of 1
[(4, 2), (2, 1)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from lightviz.core.specs import QuantSpec

EPS = torch.finfo(torch.float32).eps
MSE_GRID = torch.linspace(0.1, 1.0, 46).tolist()  # clip ratios tried by range_method="mse"


@dataclass(frozen=True, eq=False)
class QParams:
    """One scale and zero-point per block, in block order (see `block_count`)."""

    scale: torch.Tensor  # (n_blocks,) float32
    zero_point: torch.Tensor  # (n_blocks,) int32

    def __len__(self) -> int:
        return self.scale.numel()


class _Blocks:
    """`weight` seen as 2-D parts of shape (n_blocks, block_len), and back.

    `tensor` and `channel` give one part; `group` gives the full groups and, when the row
    length is not a multiple of group_size, a second part holding each row's short tail.
    """

    def __init__(self, weight: torch.Tensor, spec: QuantSpec, axis: int) -> None:
        if weight.dim() == 0:
            weight = weight.reshape(1)
        self.shape = weight.shape
        self.axis = axis if spec.granularity != "tensor" else 0
        if not -weight.dim() <= self.axis < weight.dim():
            raise ValueError(f"axis must be a dimension of a {weight.dim()}-D weight; got {axis}")
        moved = weight.movedim(self.axis, 0) if spec.granularity != "tensor" else weight
        self.moved_shape = moved.shape
        rows = moved.reshape(1, -1) if spec.granularity == "tensor" else moved.reshape(moved.shape[0], -1)
        self.rows_shape = rows.shape  # (C_out, K)
        rows = rows.float()
        if spec.granularity != "group":
            self.parts = [rows]
            self.split = None
        else:
            k = rows.shape[1]
            group = min(spec.group_size, k) or 1
            self.split = k // group * group  # columns in full groups
            self.parts = []
            if self.split:
                self.parts.append(rows[:, : self.split].reshape(-1, group))  # (C_out * K // g, g)
            if self.split < k:
                self.parts.append(rows[:, self.split:])  # (C_out, K % g)

    def map(self, fn: Callable[..., torch.Tensor], qparams: QParams) -> torch.Tensor:
        """Apply fn(part, scale, zero_point) to each part; reassemble the weight's shape."""
        outs, start = [], 0
        for part in self.parts:
            n = part.shape[0]
            # qparams may live elsewhere (activation qparams are calibrated on the CPU)
            scale = qparams.scale[start:start + n].reshape(n, 1).to(part.device)
            zero_point = qparams.zero_point[start:start + n].reshape(n, 1).to(part.device, torch.float32)
            outs.append(fn(part, scale, zero_point))
            start += n
        if start != len(qparams):
            raise ValueError(f"qparams hold {len(qparams)} blocks; this weight and spec need {start}")
        if self.split is None:
            rows = outs[0]
        else:
            c = self.rows_shape[0]
            rows = torch.cat([out.reshape(c, -1) for out in outs], dim=1)
        return rows.reshape(self.moved_shape).movedim(0, self.axis).reshape(self.shape)


def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile with linear interpolation (torch.quantile's default), any size."""
    values = torch.sort(x, dim=1).values
    pos = q * (x.shape[1] - 1)
    below = int(np.floor(pos))
    above = min(below + 1, x.shape[1] - 1)
    frac = pos - below
    return values[:, below:below + 1] + frac * (values[:, above:above + 1] - values[:, below:below + 1])
