"""What the engine returns: one layer compressed (`LayerResult`, cached per layer and handed to
metrics, plots and export) and a plan's model-level numbers (`Evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightviz.core.layers import LayerInfo
from lightviz.core.methods.apply import LayerExtras
from lightviz.core.quant import QParams
from lightviz.core.size import SizeBreakdown
from lightviz.core.specs import PruneSpec, QuantSpec
from lightviz.core.task import get_task


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


@dataclass(frozen=True)
class Evaluation:
    """Model-level numbers for one Plan on one dataset. accuracy is None without labels.

    For a language model (task "causal_lm") accuracy is None and perplexity holds the metric;
    agreement and KL are per predicted token (lightviz/core/task.py).
    """

    accuracy: float | None
    float_accuracy: float | None
    agreement: float
    kl: float
    n_samples: int
    size_bytes: int
    float_size_bytes: int
    avg_bits_per_weight: float
    task: str = "classification"
    perplexity: float | None = None
    float_perplexity: float | None = None
    n_tokens: int | None = None  # predictions a perplexity averages over
    quantized_bits_per_weight: float | None = None  # over quantized layers only: how LM users count bits

    @property
    def compression_ratio(self) -> float:
        return self.float_size_bytes / max(self.size_bytes, 1)

    @property
    def score(self) -> float | None:
        """The task's metric: accuracy, or perplexity."""
        return getattr(self, get_task(self.task).metric)

    @property
    def float_score(self) -> float | None:
        return getattr(self, get_task(self.task).float_metric)

    def chart_value(self, y: str, floating: bool = False) -> float | None:
        """This plan's value on a chart of `y` ("accuracy", "agreement" or "perplexity"), or the
        float model's with `floating` (its agreement with itself is 1).

        >>> ev = Evaluation(0.9, 0.95, 0.97, 0.1, 10, 400, 1000, 8.0)
        >>> ev.chart_value("accuracy"), ev.chart_value("accuracy", floating=True), ev.chart_value("agreement", True)
        (0.9, 0.95, 1.0)
        """
        if y == "agreement":
            return 1.0 if floating else self.agreement
        return getattr(self, f"float_{y}" if floating else y)

    def to_dict(self) -> dict:
        if self.task == "causal_lm":
            return {
                "perplexity": self.perplexity, "float_perplexity": self.float_perplexity,
                "agreement": self.agreement, "kl": self.kl, "n_samples": self.n_samples, "n_tokens": self.n_tokens,
                "size_bytes": self.size_bytes, "float_size_bytes": self.float_size_bytes,
                "compression_ratio": self.compression_ratio, "avg_bits_per_weight": self.avg_bits_per_weight,
                "quantized_bits_per_weight": self.quantized_bits_per_weight,
            }
        return {
            "accuracy": self.accuracy, "float_accuracy": self.float_accuracy,
            "agreement": self.agreement, "kl": self.kl, "n_samples": self.n_samples,
            "size_bytes": self.size_bytes, "float_size_bytes": self.float_size_bytes,
            "compression_ratio": self.compression_ratio, "avg_bits_per_weight": self.avg_bits_per_weight,
        }
