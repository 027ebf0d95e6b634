"""Evaluation datasets: scikit-learn's bundled digits (offline) and generated inputs.

Every accuracy this project reports is measured on the held-out test split returned by
`digits_split()`. Models without a matching labeled dataset (torchvision architectures, user
models) are evaluated on `generated_inputs()`, where only fidelity to the float model
(agreement, KL) is measurable.

No Streamlit here: callers that want caching across reruns wrap these functions themselves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

__all__ = ["EvalData", "digits_split", "generated_inputs", "subset", "DIGITS_INPUT_SHAPE", "DIGITS_CLASSES"]

# Digits are 8x8 grey images with pixel counts 0..16; the models see (N, 1, 8, 8) in [0, 1].
DIGITS_INPUT_SHAPE: tuple[int, ...] = (1, 8, 8)
DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
_DIGITS_MAX_PIXEL = 16.0
GENERATED_SAMPLES = 32  # inputs for models without a dataset (fidelity only)


@dataclass(frozen=True, eq=False)
class EvalData:
    """A batch of evaluation inputs, with labels when they exist.

    `eq=False` keeps identity hashing, so an EvalData can be a cache key without hashing
    its tensors. Treat `x` and `y` as read-only: they may be shared through caches.

    Attributes:
        x: inputs, shape (N, *input_shape), float32.
        y: integer class labels, shape (N,), int64; None for unlabeled data.
        name: short identifier, e.g. "digits-test".
        description: one human-readable sentence on where the data comes from.
        class_names: the dataset's own label names (e.g. image-folder names), index = label;
            None when the labels are the model's classes or there are no labels.

    >>> d = generated_inputs((1, 8, 8), n=4)
    >>> len(d), d.labeled
    (4, False)
    """

    x: torch.Tensor
    y: torch.Tensor | None
    name: str
    description: str
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _validate_eval_data(self.x, self.y, self.name)

    @property
    def labeled(self) -> bool:
        """Whether labels exist, i.e. whether accuracy (not only fidelity) is measurable."""
        return self.y is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.x.shape[1:])

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


@functools.lru_cache(maxsize=8)
def digits_split(seed: int = 0, test_size: float = 0.25) -> tuple[EvalData, EvalData]:
    """Split scikit-learn's bundled digits into stratified (train, test) sets.

    The test split with the defaults is the held-out split every accuracy in lightviz reports;
    sample models are trained on the train split only. Results are cached: do not modify the
    returned tensors.

    Args:
        seed: `random_state` of the split.
        test_size: fraction of the 1797 images held out, strictly between 0 and 1.

    Returns:
        (train, test), each with x of shape (N, 1, 8, 8) float32 in [0, 1] and y int64.

    >>> train, test = digits_split()
    >>> len(train), len(test), tuple(test.x.shape[1:])
    (1347, 450, (1, 8, 8))
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or not 0 < test_size < 1:
        raise ValueError(f"test_size must be a number strictly between 0 and 1; got {test_size!r}")
    # Imported here: scikit-learn is slow to import and only this function needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # bundled with scikit-learn, no download
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / _DIGITS_MAX_PIXEL
    labels = torch.tensor(digits.target, dtype=torch.int64)
    index = torch.arange(len(labels)).numpy()
    train_idx, test_idx = train_test_split(
        index, test_size=test_size, random_state=seed, stratify=labels.numpy()
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    split_text = f"stratified split, test_size={test_size}, random_state={seed}"
    train = EvalData(
        x=images[train_idx].contiguous(),
        y=labels[train_idx].contiguous(),
        name="digits-train",
        description=f"scikit-learn digits, training split: {len(train_idx)} 8x8 images ({split_text})",
    )
    test = EvalData(
        x=images[test_idx].contiguous(),
        y=labels[test_idx].contiguous(),
        name="digits-test",
        description=f"scikit-learn digits, held-out test split: {len(test_idx)} 8x8 images ({split_text})",
    )
    return train, test


def generated_inputs(input_shape: tuple[int, ...], n: int = 32, seed: int = 0) -> EvalData:
    """Seeded standard-normal inputs with no labels, for models without a matching dataset.

    Without labels only fidelity to the float model (agreement, KL) is measurable.

    Args:
        input_shape: shape of one input without the batch dimension, e.g. (3, 224, 224).
        n: number of inputs, at least 1.
        seed: seed of a private generator; the global RNG is left untouched.

    >>> a, b = generated_inputs((3, 4, 4), n=2), generated_inputs((3, 4, 4), n=2)
    >>> bool((a.x == b.x).all()), tuple(a.x.shape)
    (True, (2, 3, 4, 4))
    """
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            f"input_shape must be a non-empty tuple of positive integers (without batch); got {input_shape!r}"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=generator, dtype=torch.float32)
    return EvalData(
        x=x,
        y=None,
        name="generated",
        description=(
            f"{n} generated standard-normal inputs of shape {shape} (seed {seed}), no labels: "
            "only fidelity to the float model (agreement, KL) is measurable"
        ),
    )


def subset(data: EvalData, n: int | None, seed: int = 0) -> EvalData:
    """At most `n` samples of `data`, drawn without replacement by a seeded generator and
    kept in their original order; `data` itself when it is no larger (or n is None).

    >>> d = subset(generated_inputs((2,), n=10), 3)
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
    )


def eval_data_for(bundle, n: int | None = None) -> EvalData:
    """The evaluation data a model is reported on: the digits test split for the samples,
    generated inputs of the model's input shape (fidelity only) for anything else.

    Args:
        bundle: a `lightviz.zoo.ModelBundle`.
        n: how many samples: a seeded subset of the test split (all of it when None or
            larger), or the number of generated inputs (default GENERATED_SAMPLES).
    """
    if bundle.dataset == "digits":
        return subset(digits_split()[1], n)
    return generated_inputs(tuple(bundle.input_shape), n=GENERATED_SAMPLES if n is None else n)
