"""Which modules of a model are compressible, their shapes and roles, and BatchNorm folding.

>>> [layer.name for layer in find_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))]
['0', '2']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
COMPRESSIBLE = (nn.Linear, nn.Embedding) + CONVS + TRANSPOSED
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class LayerInfo:
    """One compressible module: `axis` is its weight's output-channel dimension."""

    name: str
    kind: str  # class name, e.g. "Conv2d"
    role: str  # "conv", "depthwise conv", "pointwise conv", "grouped conv", "linear", ...
    shape: tuple[int, ...]
    axis: int
    has_bias: bool
    bn: str | None  # the BatchNorm that directly follows it, when foldable

    @property
    def n_weights(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def out_channels(self) -> int:
        return self.shape[self.axis]


def find_layers(model: nn.Module) -> list[LayerInfo]:
    """The compressible layers of `model`, in module order.

    Raises:
        ValueError: the model has no Linear, Conv, ConvTranspose or Embedding layer.
    """
    pairs = bn_pairs(model)
    layers = [
        LayerInfo(name=name, kind=type(module).__name__, role=_role(module),
                  shape=tuple(module.weight.shape), axis=1 if isinstance(module, TRANSPOSED) else 0,
                  has_bias=getattr(module, "bias", None) is not None, bn=pairs.get(name))
        for name, module in model.named_modules()
        if isinstance(module, COMPRESSIBLE) and isinstance(getattr(module, "weight", None), torch.Tensor)
    ]
    if not layers:
        raise ValueError("the model has no compressible layers (Linear, Conv, ConvTranspose or Embedding): "
                         "there is nothing to quantize or prune")
    return layers


def bn_pairs(model: nn.Module) -> dict[str, str]:
    """{conv or linear name: BatchNorm name} for each BN fed only by that layer's output.

    Found from the traced dataflow (torch.fx), not from module order; a model that cannot be
    traced gets no folding.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure just means "no folding"
        return {}
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BATCHNORMS):
            continue
        bn = modules[node.target]
        source = node.args[0] if node.args else None
        if (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and isinstance(modules.get(source.target), CONVS + TRANSPOSED + (nn.Linear,))
                and len(source.users) == 1 and bn.track_running_stats and bn.running_mean is not None):
            pairs[source.target] = node.target
    return pairs


def folded_weights(model: nn.Module, layer: LayerInfo) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of `layer` with its BatchNorm folded in; new tensors, model untouched.

    w' = w * gamma / sqrt(var + eps) along the output channels, b' = (b - mean) * gamma /
    sqrt(var + eps) + beta.
    """
    modules = dict(model.named_modules())
    module = modules[layer.name]
    weight, bias = module.weight.detach(), _detach(getattr(module, "bias", None))
    if layer.bn is None:
        return weight.clone(), None if bias is None else bias.clone()
    bn = modules[layer.bn]
    gamma = _detach(bn.weight) if bn.weight is not None else torch.ones_like(bn.running_mean)
    beta = _detach(bn.bias) if bn.bias is not None else torch.zeros_like(bn.running_mean)
    if isinstance(module, nn.Linear):
        w, b = fuse_linear_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps, gamma, beta)
    else:
        w, b = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps, gamma, beta,
                                    transpose=isinstance(module, TRANSPOSED))
    return w.detach(), b.detach()


def _detach(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach()


def _role(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, TRANSPOSED):
        return "transposed conv"
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise conv"
    if module.groups > 1:
        return "grouped conv"
    if all(k == 1 for k in module.kernel_size):
        return "pointwise conv"
    return "conv"
