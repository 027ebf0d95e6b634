"""A layer's input as the matrix its weight multiplies: rows of patches, per group.

For y = W x, the methods need the inputs in the weight's own coordinates: a Linear layer's
input rows (n, C_in); a convolution's im2col patches (one row per output position, the
`F.unfold` order channel-major, which is `weight.reshape(C_out, -1)`'s column order). Grouped
convolutions split the patch into their groups: (G, n, K) with K = C_in / G * kernel size,
matching the weight viewed as (G, C_out / G, K).

>>> conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
>>> patches(conv, torch.randn(2, 4, 5, 5)).shape  # (groups, 2 images * 25 positions, 2 channels * 9)
torch.Size([2, 50, 18])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_HESSIAN_COLUMNS = 8192  # K x K float64 Hessians: 512 MiB at this width
MAX_HESSIAN_POSITIONS = 16384  # a seeded sample of positions estimates X^T X when there are more
CHUNK_VALUES = 2**24  # patch values built at once (64 MiB of float32)


def patch_support(module: nn.Module) -> str | None:
    """Why patches cannot be built for `module`, or None when they can."""
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and not isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        if module.padding_mode != "zeros":
            return f"padding mode {module.padding_mode!r} (only zero padding)"
        if isinstance(module.padding, str) and module.padding != "valid":
            return f"padding {module.padding!r} (give explicit padding)"
        return None
    return f"{type(module).__name__} layers (Linear, Conv1d and Conv2d only)"


def weight_groups(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """`weight` (C_out, ...) viewed as (G, C_out / G, K)."""
    groups = getattr(module, "groups", 1)
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def patch_columns(module: nn.Module) -> int:
    """K: inputs each output value reads (per group)."""
    weight = module.weight
    return math.prod(weight.shape[1:])


def patches(module: nn.Module, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """(G, n, K) input patches of `module` on `x` (positions: rows to keep, of all n)."""
    x = x.detach().float()
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
        return (rows if positions is None else rows[positions]).unsqueeze(0)
    if positions is not None:
        return _gathered_patches(module, x, positions)
    return torch.cat([cols for _, cols in _patch_chunks(module, x)], dim=1)


def _gathered_patches(module: nn.Module, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(G, len(positions), K): only the chosen positions' patches, gathered from the padded input."""
    x2, kernel, stride, padding, dilation = _as_2d(module, x)
    padded = F.pad(x2, (padding[1], padding[1], padding[0], padding[0]))
    out_h = (padded.shape[2] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (padded.shape[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    image, rest = positions // (out_h * out_w), positions % (out_h * out_w)
    rows = (rest // out_w).unsqueeze(1) * stride[0] + torch.arange(kernel[0]) * dilation[0]  # (P, kh)
    cols = (rest % out_w).unsqueeze(1) * stride[1] + torch.arange(kernel[1]) * dilation[1]  # (P, kw)
    channels = torch.arange(padded.shape[1])
    gathered = padded[image[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None],
                      cols[:, None, None, :]]  # (P, C, kh, kw): F.unfold's order, channel-major
    return gathered.reshape(len(positions), module.groups, -1).transpose(0, 1)


def _patch_chunks(module: nn.Module, x: torch.Tensor):
    """(first position, (G, b, K) patches) for chunks of whole images, each unfolded once."""
    if isinstance(module, nn.Linear):
        yield 0, x.detach().float().reshape(-1, x.shape[-1]).unsqueeze(0)
        return
    x2, kernel, stride, padding, dilation = _as_2d(module, x.detach().float())
    images = max(1, CHUNK_VALUES // max(1, x2[0].numel() * math.prod(kernel)))
    done = 0
    for start in range(0, x2.shape[0], images):
        cols = F.unfold(x2[start:start + images], kernel, dilation=dilation, padding=padding, stride=stride)
        cols = cols.transpose(1, 2).reshape(-1, module.groups, cols.shape[1] // module.groups)  # (b, G, K)
        yield done, cols.transpose(0, 1)
        done += cols.shape[0]


def output_positions(module: nn.Module, x: torch.Tensor) -> int:
    """Rows `patches` would return for `x` (batch times output positions)."""
    if isinstance(module, nn.Linear):
        return x.numel() // x.shape[-1]
    x2, kernel, stride, padding, dilation = _as_2d(module, x)
    size = [(x2.shape[2 + d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1 for d in (0, 1)]
    return x2.shape[0] * size[0] * size[1]


def hessian(module: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(G, K, K) float64 X^T X / n of the layer's input patches, built chunk by chunk.

    Over MAX_HESSIAN_POSITIONS output positions (e.g. early convolutions of a big image model:
    64 images of 56 x 56), a seeded uniform sample of that many rows estimates it.
    """
    positions = output_positions(module, x)
    if positions > MAX_HESSIAN_POSITIONS:
        rows = patches(module, x, sample_positions(positions, MAX_HESSIAN_POSITIONS, seed))
        return (rows.transpose(1, 2) @ rows).double() / rows.shape[1]
    total, n = None, 0
    for _, rows in _patch_chunks(module, x):  # (G, b, K)
        part = (rows.transpose(1, 2) @ rows).double()
        total = part if total is None else total + part
        n += rows.shape[1]
    return total / max(n, 1)


def grouped_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Outputs (n, G * O) of patches x (G, n, K) times grouped weights (G, O, K)."""
    out = torch.bmm(x, weight.transpose(1, 2))  # (G, n, O)
    return out.transpose(0, 1).reshape(x.shape[1], -1)


def sample_positions(n: int, k: int, seed: int) -> torch.Tensor:
    """At most k of the n positions, seeded, sorted (all of them when n <= k)."""
    if n <= k:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def outputs_at(y: torch.Tensor, module: nn.Module, positions: torch.Tensor | None) -> torch.Tensor:
    """(n, C_out) rows of a layer's output `y`, in the order `patches` numbers positions."""
    if isinstance(module, nn.Linear):
        rows = y.reshape(-1, y.shape[-1])
    else:
        rows = y.reshape(y.shape[0], y.shape[1], -1).transpose(1, 2).reshape(-1, y.shape[1])
    return rows if positions is None else rows[positions]


def _as_2d(module: nn.Module, x: torch.Tensor):
    """x as (N, C, H, W) and the conv's kernel, stride, padding, dilation as pairs."""
    if isinstance(module, nn.Conv1d):
        pad = module.padding if isinstance(module.padding, tuple) else (0,)
        return (x.unsqueeze(2), (1, module.kernel_size[0]), (1, module.stride[0]), (0, pad[0]),
                (1, module.dilation[0]))
    pad = module.padding if isinstance(module.padding, tuple) else (0, 0)
    return x, tuple(module.kernel_size), tuple(module.stride), tuple(pad), tuple(module.dilation)
