"""Forward passes in batches: how many samples a batch holds, and running a model over inputs.

Every forward pass lightviz makes (evaluation, sensitivity tails, Explore's incremental runs)
cuts the inputs the same way, so their logits are bit-identical. Inputs stay on the CPU and
move to the model's device one batch at a time; logits come back to the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lightviz.core.device import model_device

EVAL_BATCH = 256  # most samples per forward pass...
BATCH_VALUES = 2**22  # ...and at most this many input values (16 MiB of float32), for big inputs
BATCH_TOKENS = 2048  # token sequences (int64 inputs): at most this many tokens per pass


def eval_batch_size(x: torch.Tensor) -> int:
    """Samples per forward pass over `x`: EVAL_BATCH, fewer for big inputs (memory, progress).

    Token sequences (int64, (N, T)) run BATCH_TOKENS tokens per pass: their logits are T x
    vocabulary values per sequence.

    >>> eval_batch_size(torch.zeros(1000, 1, 8, 8)), eval_batch_size(torch.zeros(64, 3, 224, 224))
    (256, 27)
    >>> eval_batch_size(torch.zeros(64, 256, dtype=torch.long))
    8
    """
    if not x.is_floating_point() and x.dim() == 2:
        return max(1, min(EVAL_BATCH, BATCH_TOKENS // max(x.shape[1], 1)))
    per_sample = max(x[0].numel(), 1) if len(x) else 1
    return max(1, min(EVAL_BATCH, BATCH_VALUES // per_sample))


def run_model(model: nn.Module, x: torch.Tensor, batch: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Logits of `model` on `x`, in batches (default `eval_batch_size(x)`), without gradients.

    Batches stream to the model's device one at a time; the logits come back to the CPU.

    Args:
        progress: called with (samples done, samples) after each batch.
    """
    batch = batch or eval_batch_size(x)
    device = model_device(model)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            outputs.append(as_logits(model(x[start:start + batch].to(device))).cpu())
            if progress is not None:
                progress(min(start + batch, len(x)), len(x))
    return torch.cat(outputs).float()


def as_logits(output: object) -> torch.Tensor:
    """A model's output as a logits tensor: itself, or the `logits` of a transformers output."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ValueError(f"the model returned {type(output).__name__}, not logits (a tensor or an output with .logits)")
