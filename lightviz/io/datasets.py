"""Evaluation datasets: scikit-learn's bundled digits (offline) and generated inputs.

Every accuracy this project reports is measured on the held-out test split returned by
`digits_split()`. Models without a matching labeled dataset (torchvision architectures, user
models) are evaluated on `generated_inputs()`, where only fidelity to the float model
(agreement, KL) is measurable.

No Streamlit here: callers that want caching across reruns wrap these functions themselves.
"""

from __future__ import annotations

import functools
import math

import torch

from lightviz.core.evaldata import MAX_INPUT_VALUES, EvalData, subset
from lightviz.io.safeload import check_memory, human_bytes

__all__ = ["DIGITS_CLASSES", "DIGITS_INPUT_SHAPE", "digits_split", "eval_data_for", "generated_inputs"]

# Digits are 8x8 grey images with pixel counts 0..16; the models see (N, 1, 8, 8) in [0, 1].
DIGITS_INPUT_SHAPE: tuple[int, ...] = (1, 8, 8)
DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
_DIGITS_MAX_PIXEL = 16.0
GENERATED_SAMPLES = 32  # inputs for models without a dataset (fidelity only)


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
        calibration=train.x,  # activation ranges are calibrated on training images, never test ones
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
    per_input = math.prod(shape)
    if n * per_input > MAX_INPUT_VALUES:  # checked before allocating: n comes from users (CLI --max-samples)
        raise ValueError(
            f"{n:,} generated inputs of shape {shape} need {n * per_input:,} values ({human_bytes(n * per_input * 4)} "
            f"of float32), over the limit of {MAX_INPUT_VALUES:,} values ({human_bytes(MAX_INPUT_VALUES * 4)}): "
            f"ask for at most {max(MAX_INPUT_VALUES // per_input, 1):,} inputs of this shape")
    check_memory(n * per_input * 4 * 2, f"{n:,} generated inputs of shape {shape}")
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


def eval_data_for(bundle, n: int | None = None) -> EvalData:
    """The evaluation data a model is reported on: the digits test split for the samples,
    the shipped held-out text for a language model (lightviz.io.text), generated inputs of the
    model's input shape (fidelity only) for anything else.

    Args:
        bundle: a `lightviz.io.zoo.ModelBundle`.
        n: how many samples: a seeded subset of the test split (all of it when None or
            larger), or the number of generated inputs (default GENERATED_SAMPLES).
    """
    if bundle.dataset == "digits":
        return subset(digits_split()[1], n)
    if getattr(bundle, "task", "classification") == "causal_lm":
        from lightviz.io.text import lm_eval_data

        return lm_eval_data(bundle, n)
    return generated_inputs(tuple(bundle.input_shape), n=GENERATED_SAMPLES if n is None else n)
