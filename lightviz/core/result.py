"""One layer compressed: what the engine caches per layer and hands to metrics, plots and export."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightviz.core.layers import LayerInfo
from lightviz.core.methods.apply import LayerExtras
from lightviz.core.quant import QParams
from lightviz.core.size import SizeBreakdown
from lightviz.core.specs import PruneSpec, QuantSpec


@dataclass(frozen=True, eq=False)
class LayerResult:
    """One layer compressed: the float reference (after folding) and what replaces it.

    With a PTQ method, `weight` is the float reference in the method's coordinates (equalized,
    scaled or rotated: the same function), the one `weight_hat` approximates.
    """

    layer: LayerInfo
    quant: QuantSpec  # effective (bits=None when kept float)
    prune: PruneSpec  # effective; a global-pruning count shows as its achieved sparsity
    weight: torch.Tensor  # float reference, BatchNorm folded when the plan says so
    weight_hat: torch.Tensor  # pruned then fake-quantized
    mask: torch.Tensor | None  # True = kept; None when nothing was pruned
    qparams: QParams | None
    size: SizeBreakdown
    extras: LayerExtras | None = None  # what a PTQ method added (bias, input transform, note)

    @property
    def nbytes(self) -> int:
        mask = 0 if self.mask is None else self.mask.numel()
        return self.weight_hat.numel() * self.weight_hat.element_size() + mask
