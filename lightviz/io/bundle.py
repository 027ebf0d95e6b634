"""What a loaded model is: `ModelBundle`, the float model with what the app and the CLI need to
evaluate and describe it, and where the shipped samples live (`SAMPLE_MODELS_DIR`).

A module of its own so that every loader (`zoo` for names, `loading` for files, `hf` for Hugging
Face folders) builds the same type without importing the others. `lightviz.io.zoo` re-exports it.

>>> ModelBundle("m", None, (4,), 2, ("a", "b"), None, "user", "a model").num_classes
2
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lightviz.io.imagenet import ImagePreprocess

__all__ = ["BUNDLE_KINDS", "ModelBundle", "SAMPLE_MODELS_DIR"]

SAMPLE_MODELS_DIR = Path(__file__).resolve().parents[2] / "sample_models"


BUNDLE_KINDS = ("sample", "torchvision", "user")


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A loaded float model with what the app needs to evaluate and describe it.

    The model is shared through a cache: never modify it (or its parameters) in place; copy
    it first (`copy.deepcopy`). `eq=False` keeps identity hashing for use as a cache key.

    Attributes:
        name: the name it was loaded by.
        model: the float32 model, in eval mode.
        input_shape: shape of one input, without the batch dimension.
        num_classes: number of output logits.
        class_names: one label per class.
        dataset: "digits" for samples (evaluate on `digits_split()[1]`), None otherwise.
        kind: "sample", "torchvision" (built-in weights or random init) or "user" (weights
            from a user's file, see `lightviz.io.loading`).
        description: one line on the architecture.
        note: a caveat to show next to results (empty when none).
        task: "classification", or "causal_lm" for a language model: input_shape is then
            (context length,), num_classes the vocabulary size and class_names may be empty.
        tokenizer: a language model's tokenizer (lightviz.io.hf: encode / decode), else None.
        preprocess: how images become inputs for this model's weights (an image folder's
            default: torchvision's recipe for ImageNet architectures); None: resize to the
            input size, pixels in [0, 1].
    """

    name: str
    model: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    dataset: str | None
    kind: str
    description: str
    note: str = ""
    task: str = "classification"
    tokenizer: object = None
    preprocess: ImagePreprocess | None = None

    def __post_init__(self) -> None:
        if self.kind not in BUNDLE_KINDS:
            raise ValueError(f"kind must be one of {BUNDLE_KINDS}; got {self.kind!r}")
        if self.task == "causal_lm" and not self.class_names:
            return
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names must have num_classes={self.num_classes} entries; got {len(self.class_names)}"
            )
