"""Constant channels through a traced graph: which output channels of pruned filters are constant,
where those constants flow, and which consumers can let them go (physical.py cuts them).

A pruned filter outputs its bias, the same number at every position. `ChannelFlow` follows such
channels node by node (torch.fx, dataflow order) and then finds, as a fixed point over the graph,
the channels every user agrees to drop; `reasons_from` says why the others stay.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from lightviz.core.activations import InputQParams
from lightviz.core.engine import Engine
from lightviz.core.layers import BATCHNORMS, CONVS
from lightviz.core.quant import fake_quantize
from lightviz.core.specs import Plan

ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.Hardswish,
               nn.Hardsigmoid, nn.ELU, nn.Mish, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
ELEMENTWISE_FUNCTIONS = (torch.relu, F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.leaky_relu, torch.sigmoid,
                         torch.tanh, F.hardtanh, F.elu)
ELEMENTWISE_METHODS = ("relu", "relu_", "sigmoid", "tanh", "contiguous")
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
         nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
ADDS = (operator.add, operator.iadd, torch.add)


# --- analysis ---------------------------------------------------------------------------------


class ChannelFlow:
    """Constant channels of every node, and which of them every user lets go (a fixed point)."""

    def __init__(self, traced, engine: Engine, plan: Plan, producers: dict[str, torch.Tensor],
                 inputs: dict[str, InputQParams]) -> None:
        self.nodes = list(traced.graph.nodes)
        self.modules = dict(traced.named_modules())
        self.engine, self.plan, self.producers, self.inputs = engine, plan, producers, inputs
        self.node_of = {n.target: n for n in self.nodes if n.op == "call_module" and n.target in producers}
        self.const: dict = {}
        self.removable: dict = {}
        self.reasons: dict = {}

    def run(self) -> ChannelFlow:
        for node in self.nodes:
            self.const[node] = self._constants(node)
        self.removable = {node: set(values) for node, values in self.const.items()}
        changed = True
        while changed:
            changed = False
            for node in reversed(self.nodes):
                if not self.removable[node]:
                    continue
                allowed = set(self.removable[node])
                for user in node.users:
                    allowed &= self._droppable(user, node)
                if not (node.op == "call_module" and node.target in self.producers):
                    # a channel that passes through (ReLU, BatchNorm, pooling, Add, depthwise) goes
                    # only if every input lets it go too
                    for source in self._tensor_args(node):
                        allowed &= self._forward(node, source)
                if allowed != self.removable[node]:
                    self.removable[node] = allowed
                    changed = True
        return self

    def reasons_from(self, node) -> set[str]:
        """Why channels stop somewhere downstream of `node` (following the propagating ops)."""
        found, stack, seen = set(), [node], set()
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            found |= self.reasons.get(current, set())
            stack.extend(user for user in current.users if self.const.get(user) and not self._new_source(user))
        return found

    # constants ---------------------------------------------------------------------------------

    def _constants(self, node) -> dict[int, float]:
        args = self._tensor_args(node)
        source = self.const.get(args[0], {}) if args else {}
        if node.op == "call_module":
            module = self.modules[node.target]
            if node.target in self.producers:
                bias = getattr(module, "bias", None)
                rows = torch.nonzero(self.producers[node.target]).reshape(-1).tolist()
                return {c: 0.0 if bias is None else float(bias.detach()[c]) for c in rows}
            if depthwise(module):
                seen = self._seen_by(node.target, source)
                weight, bias = module.weight.detach(), module.bias
                return {c: v * float(weight[c].sum()) + (0.0 if bias is None else float(bias[c]))
                        for c, v in seen.items() if v == 0.0 or not any(padding(module))}
            if isinstance(module, BATCHNORMS) and module.running_mean is not None:
                return {c: _batchnorm(module, c, v) for c, v in source.items()}
            if isinstance(module, ELEMENTWISE):
                return _apply_elementwise(module, source)
            if isinstance(module, POOLS):
                return dict(source)
            if isinstance(module, AVG_POOLS):
                return dict(source) if not any(_tuple(module.padding)) else {c: v for c, v in source.items() if v == 0}
            if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
                return self._flatten(node, source)
        elif node.op == "call_function":
            if node.target in ELEMENTWISE_FUNCTIONS:
                return _apply_elementwise(lambda x: node.target(x), source)
            if node.target in ADDS:
                return self._add(node)
            if node.target is torch.flatten and _flatten_args(node):
                return self._flatten(node, source)
        elif node.op == "call_method" and node.target in ELEMENTWISE_METHODS:
            return _apply_elementwise(lambda x: getattr(x, node.target.rstrip("_"))(), source)
        return {}

    def _add(self, node) -> dict[int, float]:
        tensors = self._tensor_args(node)
        scalars = [a for a in node.args if isinstance(a, (int, float))]
        if len(tensors) == 2 and not scalars and len(node.args) == 2:
            left, right = (self.const.get(t, {}) for t in tensors)
            return {c: left[c] + right[c] for c in left.keys() & right.keys()}
        if len(tensors) == 1 and len(scalars) == 1 and len(node.args) == 2:
            return {c: v + float(scalars[0]) for c, v in self.const.get(tensors[0], {}).items()}
        return {}

    def _flatten(self, node, source: dict[int, float]) -> dict[int, float]:
        shape = shape_of(self._tensor_args(node)[0])
        if shape is None or len(shape) < 3:
            return {}
        size = 1
        for dim in shape[2:]:
            size *= dim
        return {c * size + j: v for c, v in source.items() for j in range(size)}

    def _seen_by(self, layer: str, values: dict[int, float]) -> dict[int, float]:
        """Constants as the layer sees them: fake-quantized by its input quantization, if any."""
        item = self.inputs.get(layer)
        if item is None or not values:
            return dict(values)
        keys = list(values)
        x = torch.tensor([values[c] for c in keys], dtype=torch.float32)
        q = fake_quantize(x, self.plan.activations.quant, qparams=item.qparams)
        return dict(zip(keys, q.tolist()))

    # who lets what go --------------------------------------------------------------------------

    def _droppable(self, user, node) -> set[int]:
        values = self.const[node]
        if user.op == "call_module":
            module = self.modules[user.target]
            if user.target in self.engine.by_name and self._tensor_args(user)[:1] == [node]:
                if depthwise(module):
                    return set(self.removable[user]) & set(values)
                if isinstance(module, (nn.Linear, *CONVS)) and getattr(module, "groups", 1) == 1:
                    return self._absorbable(user.target, module, values, node)
            elif self.const.get(user) is not None and self._propagates(user):
                return self._mapped(user, node)
        elif self._propagates(user):
            return self._mapped(user, node)
        self._why(node, f"{_describe(user, self.modules)} needs them")
        return set()

    def _absorbable(self, name: str, module: nn.Module, values: dict[int, float], node) -> set[int]:
        config = self.plan.config_for(name)
        if config.effective_quant.bits is not None and config.effective_quant.granularity == "group":
            self._why(node, f"{name} is quantized per group, and removing its inputs would break its groups")
            return set()
        seen = self._seen_by(name, values)
        if isinstance(module, nn.Linear) or not any(padding(module)):
            return set(seen)
        zero = {c for c, v in seen.items() if v == 0.0}
        if len(zero) < len(seen):
            self._why(node, f"they output a constant (bias, BatchNorm folded in) that is not 0, and {name} pads "
                            "its input with zeros, so removing them would change its outputs at the borders")
        return zero

    def _propagates(self, user) -> bool:
        return bool(self.const.get(user)) or self._is_add(user)

    def _mapped(self, user, node) -> set[int]:
        """Channels of `node` that go away when `user`'s output channels in removable go."""
        out = self.removable.get(user, set())
        if self._is_flatten(user):
            shape = shape_of(node)
            size = 1
            for dim in (shape or (0, 0))[2:]:
                size *= dim
            return {c for c in self.const[node] if all(c * size + j in out for j in range(size))}
        dropped = set(self.const[node]) & out
        if len(dropped) < len(self.const[node]) and self._is_add(user):
            self._why(node, "they feed a residual Add whose other branch keeps those channels")
        return dropped

    def _forward(self, node, source) -> set[int]:
        """`source`'s removable channels as `node`'s channels (features, after a flatten)."""
        gone = self.removable.get(source, set())
        if not self._is_flatten(node):
            return set(gone)
        shape = shape_of(source)
        size = 1
        for dim in (shape or (0, 0))[2:]:
            size *= dim
        return {c * size + j for c in gone for j in range(size)}

    def _new_source(self, node) -> bool:
        """A compressible layer (not depthwise): its output constants are its own, not its input's."""
        return node.op == "call_module" and node.target in self.engine.by_name and \
            not depthwise(self.modules[node.target])

    def _is_add(self, node) -> bool:
        return node.op == "call_function" and node.target in ADDS

    def _is_flatten(self, node) -> bool:
        if node.op == "call_module":
            return isinstance(self.modules[node.target], nn.Flatten)
        return node.op == "call_function" and node.target is torch.flatten

    def _why(self, node, text: str) -> None:
        self.reasons.setdefault(node, set()).add(text)

    @staticmethod
    def _tensor_args(node) -> list:
        return [a for a in node.args if isinstance(a, torch.fx.Node)]


# --- small helpers ----------------------------------------------------------------------------


def depthwise(module: nn.Module) -> bool:
    return isinstance(module, CONVS) and module.groups > 1 and module.groups == module.in_channels == module.out_channels


def padding(module: nn.Module) -> tuple[int, ...]:
    padding = getattr(module, "padding", 0)
    if isinstance(padding, str):
        return (0,) if padding == "valid" else (1,)
    return _tuple(padding)


def _tuple(value) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _batchnorm(module: nn.Module, c: int, v: float) -> float:
    x = torch.tensor([v], dtype=torch.float32)
    scale = 1.0 / torch.sqrt(module.running_var[c:c + 1] + module.eps)
    out = (x - module.running_mean[c:c + 1]) * scale
    if module.weight is not None:
        out = out * module.weight.detach()[c:c + 1] + module.bias.detach()[c:c + 1]
    return float(out)


def _apply_elementwise(fn, values: dict[int, float]) -> dict[int, float]:
    if not values:
        return {}
    keys = list(values)
    with torch.no_grad():
        out = fn(torch.tensor([values[c] for c in keys], dtype=torch.float32).clone())
    return dict(zip(keys, out.tolist()))


def _flatten_args(node) -> bool:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def shape_of(node) -> tuple[int, ...] | None:
    meta = getattr(node, "meta", {}).get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _describe(node, modules: dict) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    if node.op == "output":
        return "the model's output"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{name} ({node.op.replace('call_', '')})"
