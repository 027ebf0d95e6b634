"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"):
learn, for every weight, whether it rounds to the grid point below or above it.

Each weight gets a continuous variable V; its soft rounding is the rectified sigmoid
h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1) with zeta = 1.1, gamma = -0.1, and the
weight is `down + h (up - down)` between its two grid neighbours. Adam minimizes

    || f(W x_float) - f(W_soft x_quant) ||^2  +  reg * sum(1 - |2h - 1|^beta)

where x_quant is the layer's input in the quantized model, x_float and the target its input
and output in the float model, f the activation that follows the layer (ReLU, ReLU6) if any.
The regularizer is off for the first 20% of the steps (warm start), then beta decays from 20
to 2 on a cosine, pushing every h to 0 or 1; finally h = [V >= 0].

This is AIMET's algorithm (aimet_torch/v1/adaround: `AdaroundLoss`, `AdaroundOptimizer`,
`AdaroundWrapper`): the same loss (squared error summed over channels, averaged over output
positions), initialization V = -log((zeta - gamma) / (frac - gamma) - 1), annealing, warm start,
regularization weight 0.01 and hard rounding. Differences, all for CPU speed: minibatches of
BATCH output *positions* (from at most 8,192 drawn once per layer, shuffled once and walked in
order) instead of 32 whole images, and `iterations` steps (default 500; AIMET 10,000) with
Adam's learning rate scaled to keep the total movement, LR_BASE * 10,000 / iterations.

>>> g = torch.Generator().manual_seed(0)
>>> w, x = torch.randn(1, 3, 8, generator=g), torch.randn(1, 256, 8, generator=g)
>>> down, up = torch.floor(w * 4) / 4, torch.floor(w * 4) / 4 + 0.25
>>> q = adaround(w, down, up, (w - down) / 0.25, x, (x @ w.transpose(1, 2)).transpose(0, 1).reshape(256, 3),
...              iterations=200)
>>> bool(((q == down) | (q == up)).all())
True
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from lightviz.core.methods.patches import grouped_matmul

ZETA, GAMMA = 1.1, -0.1
REG = 0.01
BETA_RANGE = (20.0, 2.0)
WARM_START = 0.2
LR_BASE = 1e-3  # Adam's default, AIMET's rate at 10,000 steps
AIMET_ITERATIONS = 10_000
SAMPLE_POSITIONS = 8192
BATCH = 256


def init_v(fraction: torch.Tensor) -> torch.Tensor:
    """V whose soft rounding h(V) equals `fraction` (AIMET's `_generate_alpha_parameter`)."""
    return -torch.log((ZETA - GAMMA) / (fraction - GAMMA) - 1)


def soft_rounding(v: torch.Tensor) -> torch.Tensor:
    """h(V), the rectified sigmoid in [0, 1]."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def beta_at(step: int, iterations: int) -> float:
    """The regularizer's exponent at `step`: cosine from 20 to 2 after the warm start."""
    warm_end = WARM_START * iterations
    relative = (step - warm_end) / (iterations - warm_end)
    return BETA_RANGE[1] + 0.5 * (BETA_RANGE[0] - BETA_RANGE[1]) * (1 + math.cos(relative * math.pi))


def round_loss(v: torch.Tensor, step: int, iterations: int, h: torch.Tensor | None = None) -> torch.Tensor:
    """reg * sum(1 - |2h - 1|^beta); zero during the warm start (h: soft_rounding(v) if known)."""
    if step < iterations * WARM_START:
        return torch.zeros(())
    h = soft_rounding(v) if h is None else h
    return REG * (1 - (2 * h - 1).abs().pow(beta_at(step, iterations))).sum()


def adaround(weight: torch.Tensor, down: torch.Tensor, up: torch.Tensor, fraction: torch.Tensor,
             x: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None = None,
             activation: Callable[[torch.Tensor], torch.Tensor] | None = None, iterations: int = 1000,
             seed: int = 0) -> torch.Tensor:
    """Learned rounding of `weight`, each value `down` or `up`; float32, shape (G, O, K).

    Args:
        weight, down, up, fraction: (G, O, K) weights, their grid neighbours and position
            between them (grid.WeightGrid.neighbors in the grouped view).
        x: (G, n, K) input patches of the quantized model at the sampled positions.
        target: (n, G * O) float model's output at the same positions (bias included).
        bias: (G * O,) added to the soft output; None for none.
        activation: applied to both outputs before the loss (the layer's following ReLU).
        iterations: Adam steps.
        seed: minibatch sampling.
    """
    n = x.shape[1]
    down, gap = down.float(), (up - down).float()
    v = init_v(fraction.float().clamp(0, 1)).detach().requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=LR_BASE * AIMET_ITERATIONS / iterations)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    x, act = x[:, order].contiguous(), activation or (lambda t: t)  # shuffled once: batches are views
    target_act = act(target.float()[order])
    batch = min(BATCH, n)
    with torch.enable_grad():
        for step in range(iterations):
            start = step * batch % n
            stop = min(start + batch, n)
            h = soft_rounding(v)
            soft = down + h * gap  # (G, O, K)
            out = grouped_matmul(x[:, start:stop], soft)  # (b, G * O)
            if bias is not None:
                out = out + bias
            recon = (act(out) - target_act[start:stop]).pow(2).sum(dim=1).mean()
            loss = recon + round_loss(v, step, iterations, h)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return (down + (v.detach() >= 0).float() * gap).float()
