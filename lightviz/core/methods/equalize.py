"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction"): rescale the channels between consecutive layers so that
each channel's weight range is shared fairly between them.

If layer A feeds layer B through ops that commute with a positive per-channel scale (ReLU,
max/avg pooling, folded BatchNorm, flatten), dividing A's output channel i by s_i and
multiplying B's input channel i by s_i leaves the model's function unchanged. Choosing
s_i = r1_i / sqrt(r1_i r2_i), with r1 the range of A's output channel and r2 of B's input
channel, gives both the same range sqrt(r1 r2), so one per-tensor scale no longer wastes codes
on a few wide channels.

Sets and scales follow AIMET (aimet_common/cross_layer_equalization.py,
`convert_layer_group_to_cls_sets`, `compute_scaling_params_for_conv`,
`compute_scaling_params_for_depthwise_conv`): a chain of layers becomes pairs (conv, conv) and
triplets (conv, depthwise conv, conv), scaled once each in order; a triplet's scales are
s12 = r0 / cbrt(r0 r1 r2) and s23 = cbrt(r0 r1 r2) / r2, and a scale that is 0, NaN or
infinite becomes 1. Two deliberate differences:

- AIMET replaces every ReLU6 by ReLU before scaling, which changes the float model whenever
  an activation exceeds 6. Here a ReLU6 module between scaled layers becomes a per-channel
  clamp to [0, 6 / s_i], which keeps the float model exact.
- AIMET's PyTorch CLE only scales convolutions; here Linear layers take part too (an MLP, or a
  classifier behind global pooling and flatten, whose inputs then repeat each channel).
High-bias folding (AIMET's second CLE step, which moves bias between layers for activation
ranges) is not done: it does not change weight quantization.

>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
>>> graph = equalization_graph(model, ["0", "2"], {}, fold_bn=True)
>>> graph.sets
(('0', '2'),)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PASS_MODULES = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
PASS_FUNCTIONS = {F.relu, torch.relu, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
                  F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout}
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Link:
    """A feeds B through channel-preserving ops; `clamps` are ReLU6 modules on the way;
    `repeat`: B's inputs per output channel of A (a flatten before a Linear)."""

    first: str
    second: str
    clamps: tuple[str, ...] = ()
    repeat: int = 1


@dataclass(frozen=True)
class EqualizationGraph:
    """Links between layers, why a layer has none, and the sets scaled together (in order)."""

    links: dict[str, Link]
    reasons: dict[str, str]
    sets: tuple[tuple[str, ...], ...]
    kinds: dict[str, str] = field(default_factory=dict)  # layer -> "conv" | "depthwise" | "unsupported"


@dataclass
class Equalized:
    """What equalization did: new (weight, bias) per layer, clamp bounds per ReLU6 module,
    the sets applied, and one note per layer it touched."""

    weights: dict[str, tuple[torch.Tensor, torch.Tensor | None]]
    clamps: dict[str, torch.Tensor]
    applied: list[tuple[str, ...]]
    notes: dict[str, str]
    owner: dict[str, str] = field(default_factory=dict)  # clamp module -> the layer whose output it bounds


def equalization_graph(model: nn.Module, names: list[str], bn_of: dict[str, str], fold_bn: bool) -> EqualizationGraph:
    """Find, from the traced dataflow, which compressible layers feed which, and the sets.

    Args:
        model: the float model (traced with torch.fx, not modified).
        names: the compressible layers, in execution order.
        bn_of: {layer: the BatchNorm folded into it} (layers.bn_pairs).
        fold_bn: whether the plan folds BatchNorm (an unfolded one blocks a link).
    """
    modules = dict(model.named_modules())
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # noqa: BLE001 - untraceable: no equalization, say why
        reason = f"torch.fx cannot trace the model ({type(error).__name__}), so its dataflow is unknown"
        return EqualizationGraph({}, {name: reason for name in names}, ())
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    links, reasons = {}, {}
    for name in names:
        found = _follow(name, calls, modules, bn_of, fold_bn, set(names))
        if isinstance(found, Link):
            links[name] = found
        else:
            reasons[name] = found
    kinds = {name: _kind(modules[name]) for name in names}
    return EqualizationGraph(links, reasons, _sets(names, links, kinds), kinds)


def _follow(name: str, calls: dict, modules: dict, bn_of: dict, fold_bn: bool, layer_names: set) -> Link | str:
    """The Link from layer `name`, or why there is none."""
    module = modules[name]
    if not isinstance(module, (nn.Linear,) + CONV_TYPES) or isinstance(module, nn.modules.conv._ConvTransposeNd):
        return f"{type(module).__name__} layers take no part (Conv and Linear only)"
    if len(calls.get(name, [])) != 1:
        return "the layer runs more than once (shared weights)"
    node, clamps, flattened = calls[name][0], [], False
    while True:
        users = list(node.users)
        if len(users) != 1:
            return f"its output feeds {len(users)} ops (e.g. a residual add), so it cannot be rescaled alone"
        nxt = users[0]
        if nxt.op == "output":
            return "no conv or linear layer follows it (its output is the model's output)"
        if not nxt.args or nxt.args[0] is not node:
            return f"its output feeds {_describe(nxt, modules)}, which a per-channel scale does not pass"
        target = modules.get(nxt.target) if nxt.op == "call_module" else None
        if nxt.op == "call_module" and nxt.target in layer_names:
            return _link(name, nxt.target, modules, tuple(clamps), flattened)
        if isinstance(target, BATCHNORMS):
            if not (fold_bn and bn_of.get(name) == nxt.target):
                return "an unfolded BatchNorm follows it (fold BatchNorm to equalize)"
        elif isinstance(target, (nn.ReLU6, nn.Hardtanh)):
            if not (target.min_val == 0.0 and target.max_val > 0) or len(calls.get(nxt.target, [])) != 1:
                return f"its output feeds {_describe(nxt, modules)}, which a per-channel scale does not pass"
            clamps.append(nxt.target)
        elif isinstance(target, nn.Flatten) and target.start_dim == 1 or _flatten_call(nxt):
            flattened = True
        elif not (isinstance(target, PASS_MODULES) or (nxt.op == "call_function" and nxt.target in PASS_FUNCTIONS)
                  or (nxt.op == "call_method" and nxt.target == "relu")):
            return f"its output feeds {_describe(nxt, modules)}, which a per-channel scale does not pass"
        node = nxt


def _link(first: str, second: str, modules: dict, clamps: tuple, flattened: bool) -> Link | str:
    a, b = modules[first], modules[second]
    channels = a.weight.shape[0]
    if isinstance(b, nn.modules.conv._ConvTransposeNd) or not isinstance(b, (nn.Linear,) + CONV_TYPES):
        return f"the next layer {second} is a {type(b).__name__} (Conv and Linear only)"
    width = b.in_features if isinstance(b, nn.Linear) else b.in_channels
    if width % channels or (width != channels and not flattened):
        return f"the next layer {second} reads {width} inputs from {channels} channels"
    return Link(first, second, clamps, width // channels)


def _flatten_call(node: fx.Node) -> bool:
    start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else None)
    return ((node.op == "call_function" and node.target is torch.flatten) or
            (node.op == "call_method" and node.target == "flatten")) and start == 1


def _describe(node: fx.Node, modules: dict) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    return str(getattr(node.target, "__name__", node.target))


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear) or (isinstance(module, CONV_TYPES) and module.groups == 1):
        return "conv"
    if isinstance(module, CONV_TYPES) and module.groups == module.in_channels == module.out_channels:
        return "depthwise"
    return "unsupported"


def _sets(names: list[str], links: dict[str, Link], kinds: dict[str, str]) -> tuple[tuple[str, ...], ...]:
    """AIMET's cls sets of every chain of links, chains in execution order."""
    has_input = {link.second for link in links.values()}
    out = []
    for start in names:
        if start in has_input or start not in links:
            continue
        chain = [start]
        while chain[-1] in links:
            chain.append(links[chain[-1]].second)
        out.extend(_chain_sets(chain, kinds))
    return tuple(out)


def _chain_sets(chain: list[str], kinds: dict[str, str]) -> list[tuple[str, ...]]:
    """AIMET's `convert_layer_group_to_cls_sets` on one chain."""
    sets, queue = [], list(chain)

    def pop() -> str | None:
        return queue.pop(0) if queue else None

    first = None
    while queue:
        while queue and (first is None or kinds[first] == "unsupported"):
            first = pop()
        second = pop()
        if first is None or second is None:
            break
        if kinds[first] == "conv":
            if kinds[second] == "conv":
                sets.append((first, second))
                first = second
            elif kinds[second] == "depthwise":
                if queue and kinds[queue[0]] == "conv":
                    sets.append((first, second, queue[0]))
                    first = pop()
                else:
                    first = second
            else:
                first = None
        elif kinds[first] == "depthwise":
            if kinds[second] == "conv":
                sets.append((first, second))
            first = second
        else:
            first = second
    return sets


# --- scaling ---------------------------------------------------------------------------------


def output_range(weight: torch.Tensor) -> torch.Tensor:
    """max |W| per output channel (rows)."""
    return weight.abs().reshape(weight.shape[0], -1).amax(dim=1)


def input_range(weight: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """max |W| per input channel of a groups=1 conv or Linear; Linear inputs grouped by `repeat`."""
    per_column = weight.abs().reshape(weight.shape[0], weight.shape[1], -1).amax(dim=(0, 2))
    return per_column.reshape(-1, repeat).amax(dim=1)


def _safe(scale: torch.Tensor) -> torch.Tensor:
    """AIMET's guard: 0, NaN and infinity become 1 (no scaling)."""
    scale = torch.nan_to_num(scale, nan=1.0, posinf=1.0, neginf=1.0)
    return torch.where(scale == 0, torch.ones_like(scale), scale)


def pair_scale(first: torch.Tensor, second: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """s = r1 / sqrt(r1 r2) (float64 as AIMET's numpy)."""
    r1, r2 = output_range(first).double(), input_range(second, repeat).double()
    return _safe(r1 / torch.sqrt(r1 * r2))


def triplet_scales(first: torch.Tensor, depthwise: torch.Tensor, last: torch.Tensor,
                   repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(s12, s23) of conv -> depthwise -> conv."""
    r0, r1, r2 = output_range(first).double(), output_range(depthwise).double(), input_range(last, repeat).double()
    cube = torch.pow(r0 * r1 * r2, 1.0 / 3)
    return _safe(r0 / cube), _safe(cube / r2)


def equalize(weights: dict[str, tuple[torch.Tensor, torch.Tensor | None]], graph: EqualizationGraph,
             enabled: set[str]) -> Equalized:
    """Scale the sets whose first layer is in `enabled`, in order; inputs are not modified.

    Args:
        weights: {layer: (weight, bias)} of every layer of the sets (BatchNorm folded).
        graph: from equalization_graph.
        enabled: first layers whose set is applied.
    """
    out = {name: (w.detach().clone(), None if b is None else b.detach().clone()) for name, (w, b) in weights.items()}
    clamps: dict[str, torch.Tensor] = {}
    applied, notes = [], {}
    for group in graph.sets:
        if group[0] not in enabled:
            continue
        applied.append(group)
        if len(group) == 2:
            first, second = group
            link = graph.links[first]
            s = pair_scale(out[first][0], out[second][0], link.repeat)
            _scale_rows(out, first, s, clamps, link)
            _scale_inputs(out, second, s, link.repeat)
        else:
            first, middle, last = group
            s12, s23 = triplet_scales(out[first][0], out[middle][0], out[last][0], graph.links[middle].repeat)
            _scale_rows(out, first, s12, clamps, graph.links[first])
            _scale_rows(out, middle, s23 / s12, clamps, graph.links[middle], bias_scale=s23)
            _scale_inputs(out, last, s23, graph.links[middle].repeat)
        notes[group[0]] = "equalized with " + " → ".join(group[1:])
        for member in group[1:]:
            notes.setdefault(member, f"rescaled by {group[0]}'s equalization")
    changed = {name for group in applied for name in group}
    owner = {module: link.first for link in graph.links.values() for module in link.clamps if module in clamps}
    return Equalized({name: value for name, value in out.items() if name in changed}, clamps, applied, notes, owner)


def _scale_rows(out: dict, name: str, s: torch.Tensor, clamps: dict, link: Link,
                bias_scale: torch.Tensor | None = None) -> None:
    """Output channels of `name` divided by s (weights) and by bias_scale (bias; default s)."""
    weight, bias = out[name]
    shape = (-1,) + (1,) * (weight.dim() - 1)
    weight = (weight.double() / s.reshape(shape)).to(weight.dtype)
    bias_scale = s if bias_scale is None else bias_scale
    if bias is not None:
        bias = (bias.double() / bias_scale).to(bias.dtype)
    out[name] = (weight, bias)
    for module in link.clamps:  # outputs leave divided by bias_scale: the ReLU6 bound follows
        clamps[module] = (clamps.get(module, torch.full_like(bias_scale, 6.0).double()) / bias_scale).float()


def _scale_inputs(out: dict, name: str, s: torch.Tensor, repeat: int) -> None:
    weight, bias = out[name]
    per_column = s.repeat_interleave(repeat)
    shape = (1, -1) + (1,) * (weight.dim() - 2)
    out[name] = ((weight.double() * per_column.reshape(shape)).to(weight.dtype), bias)
