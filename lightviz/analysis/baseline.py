"""What a compressed model is compared with, stated honestly.

- The float model is the baseline of every delta: "float" is 0 % and 1.00x. Folding BatchNorm
  is a re-parametrization, not compression, so sizes compare with the float model *as the
  plan deploys it* (BatchNorm folded when the plan folds, `Baseline.size_bytes`), and
  folding's own effect is stated apart (`Baseline.fold_change`).
- A fine-tuned model is a compressed model of its original, not a new float model: accuracy
  deltas, agreement and KL are measured against the original float model's outputs on the
  same inputs (`rebase`).
- Output fidelity for models without labels or with random weights: KL, the SQNR of the
  logits (`output_sqnr_db`), and how many classes the float model predicts at all
  (`prediction_spread`): a random-weight network often predicts one class for every input.

>>> from lightviz.core.engine import Engine
>>> from lightviz.core.specs import Plan
>>> from torch import nn
>>> engine = Engine(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
>>> baseline(engine, Plan()).size_bytes == engine.float_size_bytes
True
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch

from lightviz.core import metrics
from lightviz.core.engine import Engine, Evaluation
from lightviz.core.specs import LayerConfig, Plan


@dataclass(frozen=True)
class Baseline:
    """The float model a plan is measured against.

    Attributes:
        size_bytes: the float model as the plan deploys it (BatchNorm folded when it folds).
        stored_bytes: the float model as stored (its state_dict).
        folded: BatchNorm layers the plan folds into the layer before them.
    """

    size_bytes: int
    stored_bytes: int
    folded: int

    @property
    def fold_change(self) -> float:
        """Relative size change folding alone makes (-0.014 for -1.4 %); 0 without folding."""
        return self.size_bytes / max(self.stored_bytes, 1) - 1

    def ratio(self, size_bytes: int) -> float:
        """Compression against the baseline: 1.00 for the float plan."""
        return self.size_bytes / max(size_bytes, 1)


def float_plan(plan: Plan) -> Plan:
    """Every layer kept float, BatchNorm folded as `plan` folds it: the baseline's plan."""
    return Plan(default=LayerConfig(keep_float=True), fold_bn=plan.fold_bn)


def baseline(engine: Engine, plan: Plan) -> Baseline:
    """The baseline of `plan` on `engine`'s float model."""
    folded = sum(1 for layer in engine.layers if layer.bn is not None) if plan.fold_bn else 0
    return Baseline(size_bytes=engine.size_bytes(float_plan(plan)), stored_bytes=engine.float_size_bytes,
                    folded=folded)


def rebase(evaluation: Evaluation, reference: torch.Tensor, test: torch.Tensor, labels: torch.Tensor | None,
           float_size_bytes: int | None = None) -> Evaluation:
    """`evaluation` with its float-model numbers taken from `reference` logits (the original
    float model's, on the same inputs as `test`, the compressed model's logits).

    >>> ev = Evaluation(accuracy=0.5, float_accuracy=0.5, agreement=1.0, kl=0.0, n_samples=2,
    ...                 size_bytes=10, float_size_bytes=40, avg_bits_per_weight=8.0)
    >>> ref, test = torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    >>> rebased = rebase(ev, ref, test, torch.tensor([0, 0]))
    >>> rebased.float_accuracy, rebased.agreement
    (1.0, 0.5)
    """
    return replace(
        evaluation,
        float_accuracy=None if labels is None else metrics.accuracy(reference, labels),
        agreement=metrics.agreement(reference, test), kl=metrics.mean_kl(reference, test),
        float_size_bytes=evaluation.float_size_bytes if float_size_bytes is None else float_size_bytes)


def output_sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """SQNR of the compressed model's logits against the float model's, in dB (inf when equal).

    >>> output_sqnr_db(torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 4.5]]))  # 10 log10(25 / 0.25)
    20.0
    """
    return metrics.sqnr_db(reference, test)


@dataclass(frozen=True)
class Spread:
    """How the float model's top-1 predictions spread over classes."""

    distinct: int  # classes predicted at least once
    top_class: int  # the most predicted class
    top_count: int  # how many inputs it gets
    n: int

    @property
    def degenerate(self) -> bool:
        """Nearly every input gets the same class: agreement then says little."""
        return self.n > 1 and self.top_count >= 0.9 * self.n


def prediction_spread(logits: torch.Tensor) -> Spread:
    """Distinct top-1 classes of `logits` (N, classes), and the most frequent one.

    >>> prediction_spread(torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0]]))
    Spread(distinct=2, top_class=1, top_count=2, n=3)
    """
    counts = Counter(logits.argmax(dim=1).tolist())
    top, count = counts.most_common(1)[0] if counts else (0, 0)
    return Spread(distinct=len(counts), top_class=int(top), top_count=int(count), n=len(logits))


__all__ = ["Baseline", "Spread", "baseline", "float_plan", "output_sqnr_db", "prediction_spread", "rebase"]
