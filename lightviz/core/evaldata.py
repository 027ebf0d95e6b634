"""The evaluation-data type the engine consumes, and seeded subsets of it.

Where data comes from (scikit-learn's digits, generated inputs, a user's files) is
`lightviz.io`'s business; the engine only sees an `EvalData`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MAX_INPUT_VALUES", "EvalData", "subset"]

# Most input values (samples x channels x height x width) lightviz decodes or generates for one
# evaluation set: 512 MiB of float32, checked before anything is allocated.
MAX_INPUT_VALUES = 2**27


@dataclass(frozen=True, eq=False)
class EvalData:
    """A batch of evaluation inputs, with labels when they exist.

    `eq=False` keeps identity hashing, so an EvalData can be a cache key without hashing
    its tensors. Treat `x`, `y` and `calibration` as read-only: they may be shared through
    caches.

    Attributes:
        x: inputs, shape (N, *input_shape), float32.
        y: integer class labels, shape (N,), int64; None for unlabeled data.
        name: short identifier, e.g. "digits-test".
        description: one human-readable sentence on where the data comes from.
        class_names: the dataset's own label names (e.g. image-folder names), index = label;
            None when the labels are the model's classes or there are no labels.
        calibration: inputs that calibrate activation ranges for evaluations on this data,
            (M, *input_shape), kept apart from `x` so that no test input calibrates (the
            digits test split carries its training images); None: the first batches of `x`.
        task: "classification", or "causal_lm" for token sequences: x is (N, T) int64 token
            ids with T >= 2, y is None (each token's target is the next one), calibration is
            other token sequences of the same length (lightviz/core/task.py).

    >>> d = EvalData(torch.zeros(4, 1, 8, 8), None, "zeros", "four blank images")
    >>> len(d), d.labeled, d.input_shape
    (4, False, (1, 8, 8))
    """

    x: torch.Tensor
    y: torch.Tensor | None
    name: str
    description: str
    class_names: tuple[str, ...] | None = None
    calibration: torch.Tensor | None = None
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.task == "causal_lm":
            _validate_tokens(self.x, self.y, self.name)
        elif self.task != "classification":
            raise ValueError(f"task must be 'classification' or 'causal_lm'; got {self.task!r}")
        else:
            _validate_eval_data(self.x, self.y, self.name)
        if self.calibration is not None and (not isinstance(self.calibration, torch.Tensor)
                                             or tuple(self.calibration.shape[1:]) != self.input_shape
                                             or self.calibration.shape[0] == 0):
            raise ValueError(f"calibration must be a non-empty tensor of inputs shaped like x "
                             f"(N, {', '.join(map(str, self.input_shape))}); "
                             f"got {tuple(getattr(self.calibration, 'shape', ()))}")

    @property
    def labeled(self) -> bool:
        """Whether labels exist, i.e. whether accuracy (not only fidelity) is measurable."""
        return self.y is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.x.shape[1:])

    @property
    def calibration_inputs(self) -> torch.Tensor:
        """The inputs activation calibration reads: `calibration`, else `x`."""
        return self.x if self.calibration is None else self.calibration

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _validate_eval_data(x: object, y: object, name: object) -> None:
    """Raise ValueError when inputs and labels cannot form an evaluation set."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(
            f"dataset {name!r} is empty: x must have at least one sample; got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor; got dtype {x.dtype}")
    if y is None:
        return
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"y must be a torch.Tensor or None; got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise ValueError(f"y must hold int64 class labels; got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y must have shape ({x.shape[0]},) to match x; got shape {tuple(y.shape)}"
        )
    if int(y.min()) < 0:
        raise ValueError(f"y must hold non-negative class labels; got minimum {int(y.min())}")


def _validate_tokens(x: object, y: object, name: object) -> None:
    """Raise ValueError unless x is (N, T) int64 token ids with N >= 1, T >= 2, and y is None."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    if not isinstance(x, torch.Tensor) or x.dtype != torch.int64 or x.dim() != 2:
        raise ValueError(f"token data {name!r} must be an int64 tensor (sequences, tokens); got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    if x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError(f"token data {name!r} needs at least one sequence of at least 2 tokens; "
                         f"got shape {tuple(x.shape)}")
    if int(x.min()) < 0:
        raise ValueError(f"token ids must be non-negative; got minimum {int(x.min())}")
    if y is not None:
        raise ValueError("token data has no labels (y must be None): each token's target is the next token")


def subset(data: EvalData, n: int | None, seed: int = 0) -> EvalData:
    """At most `n` samples of `data`, drawn without replacement by a seeded generator and
    kept in their original order; `data` itself when it is no larger (or n is None). The
    calibration inputs stay as they are.

    >>> d = subset(EvalData(torch.arange(10.0).reshape(10, 1), None, "ten", "ten numbers"), 3)
    >>> len(d), "subset of 3 of 10" in d.description
    (3, True)
    """
    if n is None:
        return data
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"max_samples must be a positive integer or None (all); got {n!r}")
    if n >= len(data):
        return data
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data), generator=generator)[:n].sort().values
    return EvalData(
        x=data.x[index].contiguous(),
        y=None if data.y is None else data.y[index].contiguous(),
        name=data.name,
        description=f"{data.description} [random subset of {n} of {len(data)} samples, seed {seed}]",
        class_names=data.class_names,
        calibration=data.calibration,
        task=data.task,
    )
