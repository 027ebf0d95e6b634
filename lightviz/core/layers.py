"""Which modules of a model are compressible, their shapes and roles, and BatchNorm folding.

A compressible layer is one weight tensor and its bias:

| module                          | weight               | output axis | layer name                  |
|---------------------------------|----------------------|-------------|-----------------------------|
| Linear, Conv, Embedding         | `weight`             | 0           | the module's                |
| ConvTranspose                   | `weight`             | 1           | the module's                |
| GPT-2's Conv1D (transformers)   | `weight` (in, out)   | 1           | the module's                |
| nn.MultiheadAttention           | `in_proj_weight`     | 0           | `<module>.in_proj` (q/k/v_proj when separate) |

A weight shared by several modules (a language model's embedding tied to its LM head) is one
layer, found where it first appears; the other modules are its `tied` aliases, compressed with
it and stored once.

>>> [layer.name for layer in find_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))]
['0', '2']
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    role: str  # "conv", "depthwise conv", "pointwise conv", "grouped conv", "linear", "embedding", "lm head", ...
    shape: tuple[int, ...]
    axis: int
    has_bias: bool
    bn: str | None  # the BatchNorm that directly follows it, when foldable
    module: str = ""  # the module holding the weight, when not `name` (attention in-projections)
    param: str = "weight"  # the weight's attribute on that module
    bias_param: str | None = "bias"
    tied: tuple[str, ...] = ()  # other modules whose `weight` is this very tensor (an LM head tied to it)

    @property
    def module_path(self) -> str:
        return self.module or self.name

    @property
    def weight_key(self) -> str:
        """The weight's state_dict key."""
        return f"{self.module_path}.{self.param}"

    @property
    def bias_key(self) -> str | None:
        return f"{self.module_path}.{self.bias_param}" if self.bias_param else None

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
    head = _output_embedding(model)
    layers: list[LayerInfo] = []
    first: dict[int, int] = {}  # id(weight tensor) -> its layer's index (tied weights)
    for name, module in model.named_modules():
        for param, bias_param, axis, suffix in _weights_of(module):
            weight = getattr(module, param)
            if id(weight) in first:  # a tied alias: the same tensor, compressed and stored once
                i = first[id(weight)]
                layers[i] = replace(layers[i], tied=layers[i].tied + (name,))
                continue
            first[id(weight)] = len(layers)
            role = "lm head" if module is head else _role(module)
            layers.append(LayerInfo(
                name=f"{name}.{suffix}" if suffix else name, kind=type(module).__name__, role=role,
                shape=tuple(weight.shape), axis=axis,
                has_bias=bias_param is not None and getattr(module, bias_param, None) is not None,
                bn=pairs.get(name), module=name if suffix else "", param=param, bias_param=bias_param))
    if not layers:
        raise ValueError("the model has no compressible layers (Linear, Conv, ConvTranspose, Embedding, "
                         "Conv1D or MultiheadAttention): there is nothing to quantize or prune")
    return layers


def is_conv1d(module: nn.Module) -> bool:
    """transformers' GPT-2 Conv1D (a Linear whose weight is stored transposed, (in, out)), by duck typing:
    the core imports no transformers."""
    return (type(module).__name__ == "Conv1D" and hasattr(module, "nf")
            and isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() == 2)


def _weights_of(module: nn.Module) -> list[tuple[str, str | None, int, str]]:
    """(weight attribute, bias attribute, output axis, name suffix) of each compressible weight."""
    if isinstance(module, nn.MultiheadAttention):
        if module.in_proj_weight is not None:
            return [("in_proj_weight", "in_proj_bias", 0, "in_proj")]
        return [("q_proj_weight", "in_proj_bias", 0, "q_proj"), ("k_proj_weight", None, 0, "k_proj"),
                ("v_proj_weight", None, 0, "v_proj")]
    if is_conv1d(module):
        return [("weight", "bias", 1, "")]
    if isinstance(module, COMPRESSIBLE) and isinstance(getattr(module, "weight", None), torch.Tensor):
        return [("weight", "bias", 1 if isinstance(module, TRANSPOSED) else 0, "")]
    return []


def _output_embedding(model: nn.Module) -> nn.Module | None:
    """A language model's LM head (transformers' get_output_embeddings), else None."""
    getter = getattr(model, "get_output_embeddings", None)
    if not callable(getter):
        return None
    try:
        head = getter()
    except Exception:  # noqa: BLE001 - a model without a head
        return None
    return head if isinstance(head, nn.Module) else None


def bn_pairs(model: nn.Module) -> dict[str, str]:
    """{conv or linear name: BatchNorm name} for each BN fed only by that layer's output.

    Found from the traced dataflow (torch.fx), not from module order; a model that cannot be
    traced gets no folding, and a model without BatchNorm is not traced.
    """
    if not any(isinstance(module, BATCHNORMS) for module in model.modules()):
        return {}
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
    module = modules[layer.module_path]
    weight = getattr(module, layer.param).detach()
    bias = _detach(getattr(module, layer.bias_param, None)) if layer.bias_param else None
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
    if isinstance(module, nn.Linear) or is_conv1d(module):
        return "linear"
    if isinstance(module, nn.MultiheadAttention):
        return "attention in-projection"
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
