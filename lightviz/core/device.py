"""Where the engine computes: `auto` (a CUDA GPU when there is one, else the CPU), `cpu`, `cuda`.

One choice serves everything that runs a model or touches its weights: per-layer compression
(fake-quant, pruning masks), evaluation, activation calibration, sensitivity and fine-tuning.
Inputs stay on the CPU and travel to the device one batch at a time; logits come back to the
CPU, where the metrics are computed, so a GPU holds the model and one batch, never a dataset.

| choice   | on a machine with CUDA | without CUDA                                   |
|----------|------------------------|------------------------------------------------|
| `auto`   | `cuda` (GPU 0)         | `cpu`                                          |
| `cpu`    | `cpu`                  | `cpu`                                          |
| `cuda`   | `cuda` (GPU 0)         | refused: ValueError with one clear sentence    |
| `cuda:N` | GPU N (if it exists)   | refused                                        |

Codes (`quant.quantize`) are the same on both devices: `round(w * (1/s))` is an exactly rounded
multiply followed by round-half-to-even everywhere. Logits may differ in the last bits (a GPU
sums convolutions in another order), so accuracies agree up to the rare input whose top two
logits are within rounding of each other.

>>> resolve_device("cpu")
device(type='cpu')
>>> resolve_device("auto").type in ("cpu", "cuda")
True
"""

from __future__ import annotations

import os

import torch
from torch import nn

DEVICES = ("auto", "cpu", "cuda")
DEVICE_ENV = "LIGHTVIZ_DEVICE"  # default of --device and of the app's device choice


def cuda_available() -> bool:
    """Whether PyTorch can use a CUDA GPU here."""
    return bool(torch.cuda.is_available())


def resolve_device(choice: str | torch.device | None) -> torch.device:
    """The torch.device a choice means here (see the module's table).

    Raises:
        ValueError: an unknown choice, or `cuda` on a machine where CUDA is not usable.
    """
    if isinstance(choice, torch.device):
        choice = str(choice)
    if choice is None:
        return torch.device("cpu")
    if not isinstance(choice, str):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N); got {choice!r}")
    text = choice.strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if cuda_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not cuda_available():
            raise ValueError(f"device {choice!r} needs a CUDA GPU, and PyTorch sees none on this machine "
                             "(torch.cuda.is_available() is False); use 'auto' or 'cpu'")
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {choice!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0")
        return torch.device("cuda", index)
    raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N); got {choice!r}")


def default_choice() -> str:
    """The device choice when none is given: $LIGHTVIZ_DEVICE, else `auto`.

    >>> default_choice() in DEVICES or default_choice().startswith("cuda:")
    True
    """
    return os.environ.get(DEVICE_ENV, "").strip().lower() or "auto"


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters (else buffers) live; the CPU for a model with neither.

    >>> model_device(nn.Linear(2, 2))
    device(type='cpu')
    """
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def describe(device: torch.device) -> str:
    """One line for a device, e.g. 'CPU (8 threads)' or 'cuda:0 (NVIDIA H200, 139.8 GiB)'.

    >>> describe(torch.device("cpu")).startswith("CPU")
    True
    """
    if device.type != "cuda":
        return f"CPU ({torch.get_num_threads()} threads)"
    index = device.index or 0
    props = torch.cuda.get_device_properties(index)
    return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
