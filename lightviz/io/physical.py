"""Make filter pruning physical: remove pruned output channels, and the inputs that read them,
for a smaller dense model with the same outputs as the masked one.

A pruned filter's output is not zero but a constant: its bias (BatchNorm folded in). Removing it
must keep every output, so lightviz follows each constant channel through the traced graph
(torch.fx), in dataflow order:

| on the way          | what happens to a constant channel                                      |
|---------------------|-------------------------------------------------------------------------|
| ReLU, ReLU6, GELU...| stays constant: f(v)                                                    |
| BatchNorm (kept)    | stays constant (its channel is removed too)                             |
| pooling             | stays constant (average pooling with zero padding: only v = 0)          |
| flatten             | becomes constant features                                               |
| depthwise conv      | stays constant when v = 0 or no padding (its channel is removed too)    |
| residual Add        | constant only when both branches are constant there                     |
| conv / linear       | absorbs it: bias += v * sum of the weights it met; exact for linear, a  |
|                     | 1x1 or unpadded conv, or v = 0; a padded conv sees v only inside borders|
| anything else       | the channel is needed: it stays, masked                                 |

Where a pruned channel cannot go, the layer keeps it masked and `kept` says why.

>>> from lightviz.core.engine import Engine, uniform_plan
>>> model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
>>> physical = make_physical(Engine(model), uniform_plan(8, sparsity=0.5, prune_method="filter"), (1, 8, 8))
>>> physical.removed, physical.model[0].out_channels, physical.model[3].in_features
({'0': 4}, 4, 144)
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from lightviz.core.activations import InputQParams
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.layers import BATCHNORMS, CONVS
from lightviz.core.quant import fake_quantize
from lightviz.core.specs import Plan
from lightviz.io.codes import LayerCodes, layer_codes, row_blocks, rows_kept

ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.Hardswish,
               nn.Hardsigmoid, nn.ELU, nn.Mish, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
ELEMENTWISE_FUNCTIONS = (torch.relu, F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.leaky_relu, torch.sigmoid,
                         torch.tanh, F.hardtanh, F.elu)
ELEMENTWISE_METHODS = ("relu", "relu_", "sigmoid", "tanh", "contiguous")
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
         nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
ADDS = (operator.add, operator.iadd, torch.add)


@dataclass(frozen=True, eq=False)
class PhysicalModel:
    """The smaller model and what changed.

    Attributes:
        model: the smaller dense model: compressed weights, no activation quantization hooks.
        codes: each layer's integer codes, sliced like its weight (for the ONNX export).
        removed: {filter-pruned layer: filters physically removed}.
        kept: {filter-pruned layer: why (some of) its pruned filters stay, masked}.
        changes: {module: what was cut from it}.
        params_before, params_after: parameters of the masked and of the smaller model.
        expected_params: params_after as counted from the removal plan (shapes x channels).
    """

    model: nn.Module
    codes: dict[str, LayerCodes]
    removed: dict[str, int]
    kept: dict[str, str]
    changes: dict[str, str]
    params_before: int
    params_after: int
    expected_params: int

    def to_dict(self) -> dict:
        return {"removed": self.removed, "kept_masked": self.kept, "changes": self.changes,
                "params_before": self.params_before, "params_after": self.params_after,
                "expected_params": self.expected_params}


def make_physical(engine: Engine, plan: Plan, input_shape: tuple[int, ...],
                  calibration: EvalData | torch.Tensor | None = None) -> PhysicalModel:
    """Remove what the plan's filter pruning allows (see the module docstring).

    Raises:
        ValueError: the plan prunes no filters, or activations need calibration data.
    """
    results = engine.compress_layers(plan)
    pruned = {name: ~rows_kept(r.mask, r.layer) for name, r in results.items()
              if r.prune.method == "filter" and r.mask is not None and not bool(rows_kept(r.mask, r.layer).all())}
    if not pruned:
        raise ValueError("--physical removes filters pruned with --prune-method filter, and this plan prunes none; "
                         "use --prune-method filter with --sparsity above 0")
    modules = dict(engine.model.named_modules())
    untied = {name: mask for name, mask in pruned.items()
              if isinstance(modules[name], nn.Linear) or (isinstance(modules[name], CONVS) and modules[name].groups == 1)}
    tied = {name: f"{int(mask.sum())} of {len(mask)} pruned filters stay masked: a {results[name].layer.role}'s "
                  "filters are tied to its input channels (remove the previous layer's filters instead)"
            for name, mask in pruned.items() if name not in untied}
    producers = untied
    inputs = engine.activation_qparams(plan, calibration) if plan.activations is not None else {}
    model = engine.compress(replace(plan, activations=None))
    codes = layer_codes(engine, plan)
    before = _params(model)
    try:
        traced = torch.fx.symbolic_trace(model)
        ShapeProp(traced).propagate(torch.zeros(1, *input_shape))
    except Exception as error:  # noqa: BLE001 - any tracing failure keeps every mask
        reason = f"the model cannot be traced by torch.fx ({type(error).__name__}), so its dataflow is unknown"
        return PhysicalModel(model, codes, {}, {**{name: reason for name in producers}, **tied}, {}, before, before,
                             before)
    plan_cut = _Analysis(traced, engine, plan, producers, inputs).run()
    expected = _expected_removed(plan_cut, dict(model.named_modules()))
    changes, _ = _apply(model, traced, plan_cut, codes, plan)
    removed = {name: len(plan_cut.removable[plan_cut.node_of[name]]) for name in producers}
    kept = dict(tied)
    for name, mask in producers.items():
        left = int(mask.sum()) - removed[name]
        if left:
            why = "; ".join(sorted(plan_cut.reasons_from(plan_cut.node_of[name]))) or "its channels are needed"
            kept[name] = f"{left} of {int(mask.sum())} pruned filters stay masked: {why}"
    return PhysicalModel(model, codes, {k: v for k, v in removed.items() if v}, kept, changes, before,
                         _params(model), before - expected)


# --- analysis ---------------------------------------------------------------------------------


class _Analysis:
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

    def run(self) -> _Analysis:
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
            if _depthwise(module):
                seen = self._seen_by(node.target, source)
                weight, bias = module.weight.detach(), module.bias
                return {c: v * float(weight[c].sum()) + (0.0 if bias is None else float(bias[c]))
                        for c, v in seen.items() if v == 0.0 or not any(_padding(module))}
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
        shape = _shape(self._tensor_args(node)[0])
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
                if _depthwise(module):
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
        if isinstance(module, nn.Linear) or not any(_padding(module)):
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
            shape = _shape(node)
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
        shape = _shape(source)
        size = 1
        for dim in (shape or (0, 0))[2:]:
            size *= dim
        return {c * size + j for c in gone for j in range(size)}

    def _new_source(self, node) -> bool:
        """A compressible layer (not depthwise): its output constants are its own, not its input's."""
        return node.op == "call_module" and node.target in self.engine.by_name and \
            not _depthwise(self.modules[node.target])

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


# --- surgery ----------------------------------------------------------------------------------


def _expected_removed(cut: _Analysis, modules: dict) -> int:
    """Parameters the cut removes, counted from shapes and channel counts alone (before cutting)."""
    total = 0
    for node in cut.nodes:
        gone = len(cut.removable.get(node, ()))
        if not gone:
            continue
        if node.op == "call_module":
            module = modules[node.target]
            if node.target in cut.producers or _depthwise(module):
                per_row = module.weight[0].numel() + (1 if getattr(module, "bias", None) is not None else 0)
                total += gone * per_row
            elif isinstance(module, BATCHNORMS) and module.affine:
                total += 2 * gone
        for user in node.users:
            if user.op != "call_module" or user.target not in cut.engine.by_name:
                continue
            module = modules[user.target]
            if _depthwise(module) or node not in cut._tensor_args(user)[:1]:
                continue
            rows = module.weight.shape[0] - len(cut.removable.get(cut.node_of.get(user.target), ()))
            total += gone * rows * module.weight[0, 0].numel()  # kept C_out x kernel per input channel
            seen = cut._seen_by(user.target, {c: cut.const[node][c] for c in cut.removable[node]})
            if getattr(module, "bias", None) is None and any(v != 0.0 for v in seen.values()):
                total -= rows  # a bias appears to absorb the constants
    return total


def _apply(model: nn.Module, traced, cut: _Analysis, codes: dict[str, LayerCodes], plan: Plan) -> tuple[dict, int]:
    """Cut `model`'s modules as the analysis allows; returns (changes, parameters removed)."""
    modules = dict(model.named_modules())
    depthwise = {name for name, module in modules.items() if _depthwise(module)}
    changes, removed_params = {}, 0
    for node in cut.nodes:
        gone = sorted(cut.removable.get(node, ()))
        if not gone or node.op != "call_module":
            continue
        module = modules[node.target]
        if node.target in cut.producers or _depthwise(module):
            removed_params += _cut_rows(module, gone, node.target, codes)
            changes[node.target] = f"{len(gone)} of {len(gone) + _out_channels(module)} output channels removed"
        elif isinstance(module, BATCHNORMS):
            keep = _keep(module.num_features, gone)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                tensor = getattr(module, attr)
                if tensor is not None:
                    removed_params += (tensor.numel() - len(keep)) if attr in ("weight", "bias") else 0
                    setattr(module, attr, nn.Parameter(tensor[keep].clone(), requires_grad=False)
                            if attr in ("weight", "bias") else tensor[keep].clone())
            module.num_features = len(keep)
            changes[node.target] = f"{len(gone)} channels removed"
    for node in cut.nodes:  # consumers: drop the inputs that went away, absorb their constants
        for user in node.users:
            gone = sorted(cut.removable.get(node, ()))
            if not gone or user.op != "call_module" or user.target not in cut.engine.by_name:
                continue
            module = modules[user.target]
            if user.target in depthwise or node not in cut._tensor_args(user)[:1]:
                continue
            seen = cut._seen_by(user.target, {c: cut.const[node][c] for c in gone})
            removed_params += _cut_inputs(module, gone, seen, user.target, codes)
            changes[user.target] = (changes.get(user.target, "") + "; " if user.target in changes else "") + \
                f"{len(gone)} input {'features' if isinstance(module, nn.Linear) else 'channels'} removed"
    return changes, removed_params


def _cut_rows(module: nn.Module, gone: list[int], name: str, codes: dict[str, LayerCodes]) -> int:
    rows = module.weight.shape[0]
    keep = _keep(rows, gone)
    depthwise = _depthwise(module)
    before = module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
    module.weight = nn.Parameter(module.weight.detach()[keep].clone(), requires_grad=False)
    if module.bias is not None:
        module.bias = nn.Parameter(module.bias.detach()[keep].clone(), requires_grad=False)
    if isinstance(module, nn.Linear):
        module.out_features = len(keep)
    else:
        module.out_channels = len(keep)
        if depthwise:
            module.in_channels = module.groups = len(keep)
    if name in codes:
        codes[name] = _slice_codes(codes[name], module, rows_keep=keep)
    return before - module.weight.numel() - (module.bias.numel() if module.bias is not None else 0)


def _cut_inputs(module: nn.Module, gone: list[int], seen: dict[int, float], name: str,
                codes: dict[str, LayerCodes]) -> int:
    weight = module.weight.detach()
    columns = weight.shape[1]
    keep = _keep(columns, gone)
    values = torch.zeros(columns)
    for c, v in seen.items():
        values[c] = v
    shift = (weight * values.reshape(1, -1, *([1] * (weight.dim() - 2)))).sum(dim=tuple(range(1, weight.dim())))
    added = 0
    if bool(shift.ne(0).any()):
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros(weight.shape[0]), requires_grad=False)
            added = weight.shape[0]
        module.bias = nn.Parameter(module.bias.detach() + shift, requires_grad=False)
    before = weight.numel()
    module.weight = nn.Parameter(weight[:, keep].clone(), requires_grad=False)
    if isinstance(module, nn.Linear):
        module.in_features = len(keep)
    else:
        module.in_channels = len(keep)
    if name in codes:
        codes[name] = _slice_codes(codes[name], module, cols_keep=keep)
    return before - module.weight.numel() - added


def _slice_codes(item: LayerCodes, module: nn.Module, rows_keep: list[int] | None = None,
                 cols_keep: list[int] | None = None) -> LayerCodes:
    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = t[rows_keep] if rows_keep is not None else t
        return t[:, cols_keep] if cols_keep is not None else t

    qparams = item.qparams
    if qparams is not None and rows_keep is not None and item.quant.granularity != "tensor":
        kept = torch.zeros(item.weight_hat.shape[0], dtype=torch.bool)
        kept[rows_keep] = True
        blocks = row_blocks(kept, item.quant, tuple(item.weight_hat.shape), 0)
        qparams = type(qparams)(scale=qparams.scale[blocks], zero_point=qparams.zero_point[blocks])
    mask = cut(item.mask)
    mask = None if mask is None or bool(mask.all()) else mask
    layer = replace(item.layer, shape=tuple(module.weight.shape))
    bias = None if getattr(module, "bias", None) is None else module.bias.detach().clone()
    return replace(item, layer=layer, codes=cut(item.codes), qparams=qparams, mask=mask,
                   weight_hat=module.weight.detach().clone(), bias=bias)


# --- small helpers ----------------------------------------------------------------------------


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _keep(n: int, gone: list[int]) -> list[int]:
    dropped = set(gone)
    return [i for i in range(n) if i not in dropped]


def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, CONVS) and module.groups > 1 and module.groups == module.in_channels == module.out_channels


def _padding(module: nn.Module) -> tuple[int, ...]:
    padding = getattr(module, "padding", 0)
    if isinstance(padding, str):
        return (0,) if padding == "valid" else (1,)
    return _tuple(padding)


def _tuple(value) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


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


def _shape(node) -> tuple[int, ...] | None:
    meta = getattr(node, "meta", {}).get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _describe(node, modules: dict) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    if node.op == "output":
        return "the model's output"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{name} ({node.op.replace('call_', '')})"
