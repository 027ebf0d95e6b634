"""Changes of coordinates on a layer's input that the float model does not notice.

A layer y = W x computes the same with W' = W T and x' = T^-1 x. Quantizing W' instead of W
changes what rounding does:

- **SmoothQuant** (Xiao et al. 2022): T = diag(s), s_j = max|x_j|^alpha / max|W_:j|^(1-alpha):
  input outliers shrink, weight columns grow (for activation quantization; weights-only it
  only makes the weights harder). As the reference code, s is clamped to at least 1e-5.
- **AWQ** (Lin et al. 2023): T = diag(s), s = mean|x_j|^a normalized by sqrt(max s * min s),
  `a` searched on a grid of AWQ_GRID values in [0, 1) for the smallest output error of the
  quantized layer on calibration inputs: salient input channels get finer weight steps.
- **Hadamard** (QuaRot, Ashkboos et al. 2024): T = Q orthogonal, a randomized Hadamard matrix
  (H_{2^a} (x) R_m) diag(signs) / sqrt(2^a) where 2^a is the largest power of two dividing the
  width and R_m a random orthogonal matrix for the odd part m (1 for powers of two): outliers
  spread over all columns. Applies to Linear and 1x1 convolutions (channel mixing only).

The compressed model multiplies the layer's input by T^-1 (a scale vector or Q^T, applied as
x @ Q on rows) before the layer: in a deployed model it folds into the previous op.

>>> q = randomized_hadamard(12, seed=0)  # 12 = 4 * 3: a 4x4 Hadamard times a 3x3 rotation
>>> bool(torch.allclose(q @ q.T, torch.eye(12, dtype=torch.float64)))
True
"""

from __future__ import annotations

import torch
from torch import nn

SQ_MIN_SCALE = 1e-5
AWQ_GRID = 20
AWQ_MIN = 1e-4


def input_channel_max(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """max |W| per input channel (C_in,), over output channels (of its group) and kernel."""
    c_out, c_in_g = weight.shape[0], weight.shape[1]
    per = weight.detach().abs().reshape(c_out, c_in_g, -1).amax(dim=2)  # (C_out, C_in / G)
    return per.reshape(groups, c_out // groups, c_in_g).amax(dim=1).reshape(-1)


def scale_input_channels(weight: torch.Tensor, scale: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """W diag(s): input channel j of `weight` (C_out, C_in / G, ...) times s_j; new tensor."""
    c_out, c_in_g = weight.shape[0], weight.shape[1]
    rows = scale.reshape(groups, c_in_g).repeat_interleave(c_out // groups, dim=0)  # (C_out, C_in / G)
    return weight * rows.reshape(c_out, c_in_g, *([1] * (weight.dim() - 2))).to(weight.dtype)


def smoothquant_scale(act_max: torch.Tensor, weight: torch.Tensor, alpha: float, groups: int = 1) -> torch.Tensor:
    """SmoothQuant's s (C_in,); 1 where an input channel or its weights are all zero.

    >>> smoothquant_scale(torch.tensor([4.0, 1.0]), torch.tensor([[1.0, 1.0]]), 0.5).tolist()
    [2.0, 1.0]
    """
    w_max = input_channel_max(weight, groups)
    scale = (act_max.float().pow(alpha) / w_max.float().clamp_min(SQ_MIN_SCALE).pow(1 - alpha)).clamp_min(SQ_MIN_SCALE)
    return torch.where((act_max > 0) & (w_max > 0), scale, torch.ones_like(scale))


def awq_candidates(act_mean: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
    """(exponent a, s) for each a on AWQ's grid: s = mean|x|^a, normalized."""
    out = []
    for step in range(AWQ_GRID):
        ratio = step / AWQ_GRID
        scale = act_mean.float().pow(ratio).clamp_min(AWQ_MIN)
        out.append((ratio, scale / (scale.max() * scale.min()).sqrt()))
    return out


def rotation_applies(module: nn.Module) -> str | None:
    """Why a rotation of the inputs does not apply, or None."""
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1 and all(k == 1 for k in module.kernel_size) \
            and not isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        return None
    return "rotations mix input channels only: Linear layers and 1x1 convolutions"


def randomized_hadamard(n: int, seed: int = 0) -> torch.Tensor:
    """An orthogonal (n, n) float64 matrix: (H_{2^a} kron R_m) diag(random signs) / sqrt(2^a)."""
    power = n & -n  # largest power of two dividing n
    odd = n // power
    generator = torch.Generator().manual_seed(seed)
    hadamard = torch.ones(1, 1, dtype=torch.float64)
    while hadamard.shape[0] < power:  # Sylvester's construction
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)], 0)
    if odd > 1:
        q, r = torch.linalg.qr(torch.randn(odd, odd, generator=generator, dtype=torch.float64))
        rotation = (q * torch.sign(torch.diagonal(r))).contiguous()  # Haar-distributed
    else:
        rotation = torch.ones(1, 1, dtype=torch.float64)
    signs = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
    return torch.kron(hadamard.contiguous(), rotation.contiguous()) * signs / power**0.5


def rotation_storage_bits(n: int) -> int:
    """What a rotation of width n costs to store: one sign bit per column, float32 R_m."""
    odd = n // (n & -n)
    return n + (32 * odd * odd if odd > 1 else 0)


def rotate_inputs(weight: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """W Q for a Linear (C_out, C_in) or 1x1 conv (C_out, C_in, 1, ...) weight; float32."""
    rows = weight.reshape(weight.shape[0], -1).double() @ rotation
    return rows.float().reshape(weight.shape)
