"""One layer through its method: transform, prune, round, correct the bias.

Pure functions of tensors and the layer's module (read, never changed); pipeline.py decides
which inputs they see. Shapes: a layer's weight W (C_out, ...); its inputs x as the module
takes them; patches (G, n, K) from patches.py.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lightviz.core.methods.adaround import adaround
from lightviz.core.methods.gptq import gptq
from lightviz.core.methods.grid import WeightGrid
from lightviz.core.methods.patches import (
    grouped_matmul,
    hessian,
    output_positions,
    patches,
    sample_positions,
    weight_groups,
)
from lightviz.core.methods.spec import MethodSpec
from lightviz.core.methods.transforms import (
    awq_candidates,
    randomized_hadamard,
    rotate_inputs,
    rotation_storage_bits,
    scale_input_channels,
    smoothquant_scale,
)
from lightviz.core.prune import keep_largest, prune_mask
from lightviz.core.quant import QParams, choose_qparams, fake_quantize
from lightviz.core.specs import PruneSpec, QuantSpec

AWQ_POSITIONS = 4096  # output positions AWQ's search measures the error on
ADAROUND_POSITIONS = 8192


@dataclass(frozen=True, eq=False)
class Prepared:
    """A layer after its transform, before rounding: weight and bias in the new coordinates."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    input_scale: torch.Tensor | None = None
    input_rotation: torch.Tensor | None = None
    transform_bits: int = 0
    note: str = ""


def layer_seed(name: str, seed: int) -> int:
    """A per-layer seed (stable across runs)."""
    return (zlib.crc32(name.encode()) + seed) % 2**31


def prepare_static(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, method: MethodSpec,
                   name: str) -> Prepared:
    """The transforms that need no data: a Hadamard rotation, or none."""
    if method.transform != "hadamard":
        return Prepared(weight, bias)
    width = weight.shape[1]
    rotation = randomized_hadamard(width, layer_seed(name, method.seed))
    odd = width // (width & -width)
    kind = f"Hadamard {width}×{width}" if odd == 1 else f"Hadamard {width // odd} ⊗ random rotation {odd}"
    return Prepared(rotate_inputs(weight, rotation), bias, input_rotation=rotation.float(),
                    transform_bits=rotation_storage_bits(width), note=f"inputs rotated ({kind})")


def prepare_from_inputs(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, method: MethodSpec,
                        x: torch.Tensor, quant: QuantSpec, name: str) -> Prepared:
    """SmoothQuant's or AWQ's input scaling, from the float inputs `x` of the layer."""
    groups = getattr(module, "groups", 1)
    if method.transform == "smoothquant":
        scale = smoothquant_scale(channel_reduce(module, x.abs(), "amax"), weight, method.alpha, groups)
        note = f"SmoothQuant α={method.alpha:g}: input scales {float(scale.min()):.3g}…{float(scale.max()):.3g}"
    else:
        ratio, scale = awq_search(module, weight, x, quant, layer_seed(name, method.seed))
        note = f"AWQ: s = mean|x|^{ratio:.2f}, input scales {float(scale.min()):.3g}…{float(scale.max()):.3g}"
    return Prepared(scale_input_channels(weight, scale, groups), bias, input_scale=1.0 / scale,
                    transform_bits=32 * scale.numel(), note=note)


def awq_search(module: nn.Module, weight: torch.Tensor, x: torch.Tensor, quant: QuantSpec,
               seed: int) -> tuple[float, torch.Tensor]:
    """AWQ's grid search: the s = mean|x|^a whose quantized layer Q(W s) / s best matches W on x."""
    groups = getattr(module, "groups", 1)
    act_mean = channel_reduce(module, x.abs(), "mean")
    rows = patches(module, x, sample_positions(output_positions(module, x), AWQ_POSITIONS, seed))
    reference = grouped_matmul(rows, weight_groups(module, weight))
    best = (float("inf"), 0.0, torch.ones_like(act_mean))
    for ratio, scale in awq_candidates(act_mean):
        scaled = fake_quantize(scale_input_channels(weight, scale, groups), quant)
        effective = scale_input_channels(scaled, 1.0 / scale, groups)
        error = float((grouped_matmul(rows, weight_groups(module, effective)) - reference).pow(2).mean())
        if error < best[0]:
            best = (error, ratio, scale)
    return best[1], best[2]


def channel_reduce(module: nn.Module, x: torch.Tensor, how: str) -> torch.Tensor:
    """Per input/output channel max or mean of x (channels last for Linear, dim 1 otherwise)."""
    channels = x.reshape(-1, x.shape[-1]) if isinstance(module, nn.Linear) else x.transpose(0, 1).reshape(x.shape[1], -1).T
    return channels.amax(dim=0) if how == "amax" else channels.float().mean(dim=0)


def prune_layer(weight: torch.Tensor, prune: PruneSpec, axis: int,
                global_count: int | None) -> tuple[torch.Tensor | None, PruneSpec]:
    """(mask, effective prune spec), as the engine prunes (global counts included)."""
    if global_count is not None:
        mask = keep_largest(weight, global_count) if global_count else None
        return mask, PruneSpec(sparsity=global_count / weight.numel(), method="unstructured")
    return (prune_mask(weight, prune, axis) if prune.active else None), prune


def round_nearest(weight: torch.Tensor, quant: QuantSpec, axis: int) -> tuple[QParams | None, torch.Tensor]:
    if quant.bits is None:
        return None, weight.clone()
    qparams = choose_qparams(weight, quant, axis)
    return qparams, fake_quantize(weight, quant, axis, qparams)


def round_gptq(module: nn.Module, weight: torch.Tensor, mask: torch.Tensor | None, quant: QuantSpec,
               qparams: QParams, x: torch.Tensor, method: MethodSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """GPTQ on the layer's inputs x (the quantized model's, transformed); dtype: gptq's updates."""
    grid = WeightGrid.of(weight, quant, qparams)
    rows = weight_groups(module, weight)  # (G, O, K)
    g, o, k = rows.shape

    def round_columns(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return grid.round(values.reshape(g * o, -1), index).reshape(g, o, -1)

    keep = None if mask is None else weight_groups(module, mask)
    out = gptq(rows, hessian(module, x, layer_seed("hessian", method.seed)), round_columns, method.block_size,
               method.damp, method.act_order, keep, dtype)
    return out.reshape(weight.shape).to(weight.dtype)


def round_adaround(module: nn.Module, weight: torch.Tensor, mask: torch.Tensor | None, quant: QuantSpec,
                   qparams: QParams, x: torch.Tensor, positions: torch.Tensor, target: torch.Tensor,
                   bias: torch.Tensor | None, activation: Callable | None, method: MethodSpec,
                   name: str) -> torch.Tensor:
    """AdaRound on the layer's quantized inputs x at `positions`, towards the float `target`."""
    grid = WeightGrid.of(weight, quant, qparams)
    down, up, fraction = grid.neighbors(weight.reshape(weight.shape[0], -1))
    if mask is not None:  # pruned weights stay exactly zero
        keep = mask.reshape(weight.shape[0], -1)
        down, up = torch.where(keep, down, 0.0), torch.where(keep, up, 0.0)
    views = [weight_groups(module, t.reshape(weight.shape)) for t in (weight, down, up, fraction)]
    out = adaround(*views, patches(module, x, positions), target, bias, activation, method.iterations,
                   layer_seed(name, method.seed))
    return out.reshape(weight.shape).to(weight.dtype)


def adaround_positions(module: nn.Module, x: torch.Tensor, name: str, seed: int) -> torch.Tensor:
    return sample_positions(output_positions(module, x), ADAROUND_POSITIONS, layer_seed(name, seed))


def layer_output(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The layer's output on x with these parameters (the module's hooks do not run)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[weight.dim() - 2]
        return conv(x, weight, bias, module.stride, module.padding, module.output_padding, module.groups,
                    module.dilation)
    return module._conv_forward(x, weight, bias)


def corrected_bias(module: nn.Module, x: torch.Tensor, weight_hat: torch.Tensor, bias: torch.Tensor | None,
                   float_mean: torch.Tensor) -> torch.Tensor:
    """Empirical bias correction: bias - (E[quantized output] - E[float output]) per channel
    (AIMET's `empirical_bias_correction`: the mean over batch and positions)."""
    out = layer_output(module, x, weight_hat, bias)
    quant_mean = out.reshape(-1, out.shape[-1]).double().mean(dim=0) if isinstance(module, nn.Linear) \
        else out.transpose(0, 1).reshape(out.shape[1], -1).double().mean(dim=1)
    base = torch.zeros(quant_mean.shape[0], dtype=torch.float64) if bias is None else bias.double()
    return (base - (quant_mean - float_mean.double())).float()


def output_mean(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Mean of a layer's output per output channel, float64."""
    if isinstance(module, nn.Linear):
        return y.reshape(-1, y.shape[-1]).double().mean(dim=0)
    return y.transpose(0, 1).reshape(y.shape[1], -1).double().mean(dim=1)
