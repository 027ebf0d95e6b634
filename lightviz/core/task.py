"""The task a model is evaluated on: how logits and targets become metrics, and which way is better.

| task             | inputs x            | targets               | metric (direction)          | agreement                  | KL                |
|------------------|---------------------|-----------------------|-----------------------------|----------------------------|-------------------|
| `classification` | (N, ...) float      | labels y, (N,)        | top-1 accuracy (higher)     | top-1 class agreement      | mean per input    |
| `causal_lm`      | (N, T) int64 tokens | x shifted by one token | perplexity (lower)         | next-token top-1 agreement | mean per token    |

A causal LM's logits are (N, T, V): position t predicts token t + 1, so the last position of a
sequence has no target and the first token is never predicted. Every LM metric reads the same
N * (T - 1) predictions: perplexity is exp(mean cross-entropy over them), in float64;
agreement and KL compare the float and the compressed model's predictions at those positions.

The data carries its task (`EvalData.task`); `task_of(data)` gives the `Task`, which the engine,
sweeps, sensitivity, mixed precision, fine-tuning, the pages and the CLI consult for metric
names, labels and direction. `drop(value, float_value)` is "how much worse" in both tasks
(positive = worse): accuracy points lost as a fraction, or the relative perplexity increase.

>>> LM.metric, LM.higher_is_better, CLASSIFICATION.metric
('perplexity', False, 'accuracy')
>>> round(LM.drop(11.0, 10.0), 3), round(CLASSIFICATION.drop(0.9, 0.95), 3)
(0.1, 0.05)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightviz.core import metrics
from lightviz.core.specs import LayerConfig, Plan, QuantSpec

TASKS = ("classification", "causal_lm")
LM_CHUNK_VALUES = 2**24  # logits values per chunk in LM metrics (64 MiB of float32, 128 MiB in float64)


@dataclass(frozen=True)
class Task:
    """One task's metric, its direction and its words.

    Attributes:
        name: "classification" or "causal_lm".
        metric: the Evaluation / JSON key of the model metric ("accuracy", "perplexity");
            the float model's is `float_<metric>`.
        label: how the metric reads on screen.
        higher_is_better: the direction Pareto fronts, allocation and deltas follow.
        drop_column: the column of "how much worse than float" in sensitivity tables.
        drop_label: its words, with the unit the UI shows it in.
        agreement_label: what agreement with the float model means here.
        unit: what agreement and KL are averaged over ("input", "token").
    """

    name: str
    metric: str
    label: str
    higher_is_better: bool
    drop_column: str
    drop_label: str
    agreement_label: str
    unit: str

    @property
    def float_metric(self) -> str:
        return f"float_{self.metric}"

    @property
    def is_lm(self) -> bool:
        return self.name == "causal_lm"

    # --- metrics from logits -----------------------------------------------------------

    def score(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None) -> float | None:
        """Accuracy (None without labels) or perplexity of `logits` on inputs x / labels y."""
        if self.is_lm:
            return perplexity(logits, x)
        return None if y is None else metrics.accuracy(logits, y)

    def agreement(self, reference: torch.Tensor, test: torch.Tensor) -> float:
        """Top-1 agreement with the float model: per input, or per predicted token."""
        return token_agreement(reference, test) if self.is_lm else metrics.agreement(reference, test)

    def kl(self, reference: torch.Tensor, test: torch.Tensor) -> float:
        """Mean KL(p_float || p_test) in nats: per input, or per predicted token."""
        return token_kl(reference, test) if self.is_lm else metrics.mean_kl(reference, test)

    def model_metrics(self, reference: torch.Tensor, test: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor | None) -> dict:
        """{metric, float_metric, agreement, kl} of a compressed model's logits against the float one's."""
        return {self.metric: self.score(test, x, y), self.float_metric: self.score(reference, x, y),
                "agreement": self.agreement(reference, test), "kl": self.kl(reference, test)}

    # --- direction -----------------------------------------------------------------------

    def drop(self, value: float, float_value: float) -> float:
        """How much worse `value` is than the float model's (positive = worse).

        Classification: accuracy points lost, as a fraction. Causal LM: relative perplexity
        increase (0.01 = 1% higher perplexity).
        """
        if self.is_lm:
            return value / float_value - 1.0
        return float_value - value

    def goodness(self, value: float) -> float:
        """A number that grows as the metric gets better (to sort and compare by)."""
        return value if self.higher_is_better else -value

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b`."""
        return self.goodness(a) > self.goodness(b)

    def format(self, value: float | None) -> str:
        """'97.56%' or '3.142'; 'n/a' for None."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value:.3f}" if self.is_lm else f"{value * 100:.2f}%"

    def format_drop(self, drop: float) -> str:
        """'-1.20 pp' (accuracy) or '+3.4%' (perplexity), from `drop`'s sign convention."""
        return f"{drop * 100:+.1f}%" if self.is_lm else f"{-drop * 100:+.2f} pp"

    # --- training ------------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The training loss: cross-entropy against labels, or against the next token."""
        if self.is_lm:
            return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        return F.cross_entropy(logits, y)


CLASSIFICATION = Task("classification", "accuracy", "Accuracy", True, "accuracy_drop", "accuracy drop (points)",
                      "Agreement with float", "input")
LM = Task("causal_lm", "perplexity", "Perplexity", False, "perplexity_increase", "perplexity increase (%)",
          "Next-token agreement", "token")
_BY_NAME = {task.name: task for task in (CLASSIFICATION, LM)}


def get_task(name: str) -> Task:
    """The Task called `name`.

    >>> get_task("causal_lm").label
    'Perplexity'
    """
    if name not in _BY_NAME:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}; got {name!r}")
    return _BY_NAME[name]


def task_of(data: object) -> Task:
    """The task of an EvalData (or anything with a `task` name); classification by default."""
    return get_task(getattr(data, "task", "classification"))


# --- language-model metrics, chunked so a 50k-token vocabulary stays in bounded memory --------


def _check_lm(logits: torch.Tensor, tokens: torch.Tensor | None = None) -> None:
    if logits.dim() != 3 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(f"LM logits must be (sequences, positions >= 2, vocabulary); got {tuple(logits.shape)}")
    if tokens is not None and tuple(tokens.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"tokens must be (sequences, positions) = {tuple(logits.shape[:2])}; "
                         f"got {tuple(tokens.shape)}")


def _chunks(logits: torch.Tensor) -> list[slice]:
    """Slices over sequences, each holding about LM_CHUNK_VALUES logits values."""
    per_sequence = max(logits.shape[1] * logits.shape[2], 1)
    step = max(1, LM_CHUNK_VALUES // per_sequence)
    return [slice(i, i + step) for i in range(0, logits.shape[0], step)]


def token_cross_entropy(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (nats, float64) of every prediction: (N, T - 1), position t against token t + 1.

    >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
    >>> [round(v, 4) for v in token_cross_entropy(logits, torch.tensor([[0, 1, 2]]))[0].tolist()]
    [1.3863, 1.3863]
    """
    _check_lm(logits, tokens)
    parts = []
    for part in _chunks(logits):
        log_p = torch.log_softmax(logits[part, :-1].double(), dim=-1)  # (n, T - 1, V)
        parts.append(-log_p.gather(-1, tokens[part, 1:, None].long()).squeeze(-1))
    return torch.cat(parts)


def perplexity(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) over every prediction of every sequence.

    >>> round(perplexity(torch.zeros(2, 5, 7), torch.zeros(2, 5, dtype=torch.long)), 6)  # uniform: V
    7.0
    """
    return float(torch.exp(token_cross_entropy(logits, tokens).mean()))


def token_agreement(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Fraction of predictions (positions 0 .. T-2) whose top-1 token is the same for both models."""
    _check_lm(reference)
    same = (reference[:, :-1].argmax(dim=-1) == test[:, :-1].argmax(dim=-1))
    return float(same.double().mean())


def token_kl(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Mean KL(p_reference || p_test) per prediction (positions 0 .. T-2), in nats."""
    _check_lm(reference)
    total, count = 0.0, 0
    for part in _chunks(reference):
        log_p = torch.log_softmax(reference[part, :-1].double(), dim=-1)
        log_q = torch.log_softmax(test[part, :-1].double(), dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (n, T - 1)
        total += float(kl.sum())
        count += kl.numel()
    return total / max(count, 1)


# --- language-model plans ------------------------------------------------------------------------

LM_FLOAT_ROLES = ("embedding", "lm head")  # kept float by default, as LM quantization tools do
# Weight-only presets as LM tools ship them: asymmetric groups with float16 scales (GPTQ / AWQ
# style), and 8-bit per channel.
WEIGHT_ONLY_PRESETS: dict[str, QuantSpec] = {
    "W8 per channel": QuantSpec(bits=8, scheme="symmetric", granularity="channel", scale_dtype="float16"),
    "W4 group 128": QuantSpec(bits=4, scheme="asymmetric", granularity="group", group_size=128, scale_dtype="float16"),
    "W4 group 64": QuantSpec(bits=4, scheme="asymmetric", granularity="group", group_size=64, scale_dtype="float16"),
    "W4 group 32": QuantSpec(bits=4, scheme="asymmetric", granularity="group", group_size=32, scale_dtype="float16"),
    "W3 group 128": QuantSpec(bits=3, scheme="asymmetric", granularity="group", group_size=128, scale_dtype="float16"),
    "W2 group 64": QuantSpec(bits=2, scheme="asymmetric", granularity="group", group_size=64, scale_dtype="float16"),
}


def preset_spec(name: str) -> QuantSpec:
    """The QuantSpec of a weight-only preset, by name or short name ('w4g128', 'w8').

    >>> preset_spec("w4g128").label
    'int4 asym/group128, fp16 scales'
    """
    short = {"".join(n.lower().replace("per channel", "").replace("group", "g").split()): n for n in WEIGHT_ONLY_PRESETS}
    key = name if name in WEIGHT_ONLY_PRESETS else short.get(name.lower().replace("-", "").replace(" ", ""))
    if key is None:
        raise ValueError(f"preset must be one of {', '.join(WEIGHT_ONLY_PRESETS)} "
                         f"(or {', '.join(short)}); got {name!r}")
    return WEIGHT_ONLY_PRESETS[key]


def float_role_layers(layers) -> list[str]:
    """Names of the embedding and LM-head layers (LayerInfo list) that LM plans keep float by default."""
    return [layer.name for layer in layers if layer.role in LM_FLOAT_ROLES]


def with_float_embeddings(plan: Plan, layers, keep: bool = True) -> Plan:
    """`plan` with the embeddings and LM head kept float (keep=True) or following the default (False).

    >>> from torch import nn
    >>> from lightviz.core.layers import find_layers
    >>> layers = find_layers(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10)))
    >>> dict(with_float_embeddings(Plan(), layers).overrides)["0"].keep_float
    True
    """
    for name in float_role_layers(layers):
        plan = plan.with_override(name, LayerConfig(keep_float=True) if keep else None)
    return plan


def wa_names(plan: Plan, layers) -> list[str]:
    """The layers a W/A label counts: all, but the embeddings and head a plan keeps float (LM users
    write W4A16 for a model whose embeddings stay float)."""
    kept = {name for name in float_role_layers(layers) if plan.config_for(name).keep_float}
    return [layer.name for layer in layers if layer.name not in kept] or [layer.name for layer in layers]


def embeddings_float(plan: Plan, layers) -> bool:
    """Whether every embedding / LM-head layer is kept float by `plan` (True when there is none)."""
    return all(plan.config_for(name).keep_float for name in float_role_layers(layers))
