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

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.layers import BATCHNORMS, CONVS
from lightviz.core.specs import Plan
from lightviz.io.channel_flow import ChannelFlow, depthwise
from lightviz.io.codes import LayerCodes, layer_codes, row_blocks, rows_kept


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
    plan_cut = ChannelFlow(traced, engine, plan, producers, inputs).run()
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


# --- surgery ----------------------------------------------------------------------------------


def _expected_removed(cut: ChannelFlow, modules: dict) -> int:
    """Parameters the cut removes, counted from shapes and channel counts alone (before cutting)."""
    total = 0
    for node in cut.nodes:
        gone = len(cut.removable.get(node, ()))
        if not gone:
            continue
        if node.op == "call_module":
            module = modules[node.target]
            if node.target in cut.producers or depthwise(module):
                per_row = module.weight[0].numel() + (1 if getattr(module, "bias", None) is not None else 0)
                total += gone * per_row
            elif isinstance(module, BATCHNORMS) and module.affine:
                total += 2 * gone
        for user in node.users:
            if user.op != "call_module" or user.target not in cut.engine.by_name:
                continue
            module = modules[user.target]
            if depthwise(module) or node not in cut._tensor_args(user)[:1]:
                continue
            rows = module.weight.shape[0] - len(cut.removable.get(cut.node_of.get(user.target), ()))
            total += gone * rows * module.weight[0, 0].numel()  # kept C_out x kernel per input channel
            seen = cut._seen_by(user.target, {c: cut.const[node][c] for c in cut.removable[node]})
            if getattr(module, "bias", None) is None and any(v != 0.0 for v in seen.values()):
                total -= rows  # a bias appears to absorb the constants
    return total


def _apply(model: nn.Module, traced, cut: ChannelFlow, codes: dict[str, LayerCodes], plan: Plan) -> tuple[dict, int]:
    """Cut `model`'s modules as the analysis allows; returns (changes, parameters removed)."""
    modules = dict(model.named_modules())
    grouped = {name for name, module in modules.items() if depthwise(module)}
    changes, removed_params = {}, 0
    for node in cut.nodes:
        gone = sorted(cut.removable.get(node, ()))
        if not gone or node.op != "call_module":
            continue
        module = modules[node.target]
        if node.target in cut.producers or depthwise(module):
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
            if user.target in grouped or node not in cut._tensor_args(user)[:1]:
                continue
            seen = cut._seen_by(user.target, {c: cut.const[node][c] for c in gone})
            removed_params += _cut_inputs(module, gone, seen, user.target, codes)
            changes[user.target] = (changes.get(user.target, "") + "; " if user.target in changes else "") + \
                f"{len(gone)} input {'features' if isinstance(module, nn.Linear) else 'channels'} removed"
    return changes, removed_params


def _cut_rows(module: nn.Module, gone: list[int], name: str, codes: dict[str, LayerCodes]) -> int:
    rows = module.weight.shape[0]
    keep = _keep(rows, gone)
    is_depthwise = depthwise(module)
    before = module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
    module.weight = nn.Parameter(module.weight.detach()[keep].clone(), requires_grad=False)
    if module.bias is not None:
        module.bias = nn.Parameter(module.bias.detach()[keep].clone(), requires_grad=False)
    if isinstance(module, nn.Linear):
        module.out_features = len(keep)
    else:
        module.out_channels = len(keep)
        if is_depthwise:
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


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels
