"""Put per-layer results into a copy of the model: weights, biases, input transforms, clamps.

What a method leaves besides the rounded weight is a `LayerExtras`: a new bias (bias
correction, equalization), a transform of the layer's input (SmoothQuant/AWQ scales, a
Hadamard rotation) and ReLU6 bounds that equalization rescaled. `build_model` applies them to
a deep copy; the user's model is never touched.

>>> model = build_model(nn.Sequential(nn.Linear(2, 2)), {"0": LayerState(torch.eye(2), None)}, {})
>>> model(torch.tensor([[1.0, 2.0]])).tolist()
[[1.0, 2.0]]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True, eq=False)
class LayerExtras:
    """What a method adds to a compressed layer besides its rounded weight.

    Attributes:
        method: the steps that ran, canonical ("gptq", "equalize+bias_correction", "nearest").
        note: one line for the layer table: what ran, or why a step did not apply.
        bias: the bias the compressed layer uses (None: it has none).
        reference_bias: the float bias in the method's coordinates (equalized), for float models.
        input_scale: (C_in,) the layer's input is multiplied by it before the layer runs.
        input_rotation: (C_in, C_in) input rows are multiplied by it (x @ Q) before the layer runs.
        clamps: ((ReLU6 module name, per-channel upper bound), ...) after this layer.
        transform_bits: storage of the above (scales, rotation signs, clamp bounds).
        calib_samples: calibration inputs the method read (0 for none).
    """

    method: str
    note: str
    bias: torch.Tensor | None = None
    reference_bias: torch.Tensor | None = None
    input_scale: torch.Tensor | None = None
    input_rotation: torch.Tensor | None = None
    clamps: tuple[tuple[str, torch.Tensor], ...] = ()
    transform_bits: int = 0
    calib_samples: int = 0


@dataclass(frozen=True, eq=False)
class LayerState:
    """A layer as a built model holds it: weight, bias (None: no bias), input transform."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    input_scale: torch.Tensor | None = None
    input_rotation: torch.Tensor | None = None


class InputTransform:
    """Forward pre-hook: the layer's input times a per-channel scale, or rotated (x @ Q)."""

    def __init__(self, scale: torch.Tensor | None = None, rotation: torch.Tensor | None = None) -> None:
        self.scale, self.rotation = scale, rotation

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (transform_input(module, args[0], self.scale, self.rotation), *args[1:])


def transform_input(module: nn.Module, x: torch.Tensor, scale: torch.Tensor | None,
                    rotation: torch.Tensor | None) -> torch.Tensor:
    """x with the channel scale and/or rotation applied (channels: last dim for Linear, dim 1 else)."""
    linear = isinstance(module, nn.Linear)
    if scale is not None:
        shape = (-1,) if linear else (1, -1) + (1,) * (x.dim() - 2)
        x = x * scale.reshape(shape).to(x.dtype)
    if rotation is not None:
        q = rotation.to(x.dtype)
        x = x @ q if linear else torch.einsum("nc...,cd->nd...", x, q)
    return x


class ChannelClamp(nn.Module):
    """clamp(x, 0, upper_c) per channel (dim 1): a ReLU6 whose channels equalization rescaled."""

    def __init__(self, upper: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("upper", upper.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        upper = self.upper.reshape((1, -1) + (1,) * (x.dim() - 2)).to(x.dtype)
        return torch.minimum(torch.relu(x), upper)


def build_model(model: nn.Module, states: dict[str, LayerState], clamps: dict[str, torch.Tensor],
                removed: tuple[str, ...] = (), layers: dict | None = None) -> nn.Module:
    """A deep copy of `model` with each named layer set to its state, `removed` modules (folded
    BatchNorms) replaced by Identity and ReLU6 modules in `clamps` by ChannelClamp; eval mode.

    `layers` ({name: core.layers.LayerInfo}) says where a layer's weight lives when not in
    `name.weight` (an attention in-projection) and which modules share it (a tied LM head)."""
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    for name, state in states.items():
        info = (layers or {}).get(name)
        module = modules[info.module_path if info else name]
        weight = nn.Parameter(state.weight.detach().clone(), requires_grad=False)
        setattr(module, info.param if info else "weight", weight)
        for alias in info.tied if info else ():  # a tied LM head computes with the same tensor
            modules[alias].weight = weight
        bias_param = info.bias_param if info else "bias"
        if bias_param and (state.bias is not None or getattr(module, bias_param, None) is not None):
            setattr(module, bias_param, None if state.bias is None else
                    nn.Parameter(state.bias.detach().clone(), requires_grad=False))
        if state.input_scale is not None or state.input_rotation is not None:
            module.register_forward_pre_hook(InputTransform(state.input_scale, state.input_rotation))
    for name in removed:
        set_module(model, name, nn.Identity())
    for name, upper in clamps.items():
        set_module(model, name, ChannelClamp(upper))
    return model.eval()


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted `name`."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
