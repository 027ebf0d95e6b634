"""Run a model from any layer onward, reusing the activations computed before that layer.

Sensitivity analysis changes one layer at a time; everything upstream of that layer computes
the same values every time. `TracedGraph` traces the model with torch.fx and knows, at each
layer's position in the graph, the values *live* there: the nodes computed before the layer
and used by it or by anything after it (the layer's input, plus e.g. a residual branch's
input). `run(start, env, ...)` executes the graph from a position, given those values; it can
record them at later positions on the way (`record`). For a sequential net the live set is one
tensor.

- `PrefixCache` runs the float model once, keeps the live values at every layer, and
  `run_from(layer, params)` executes only the graph's tail with the layer's parameters
  replaced (sensitivity, `lightviz.analysis.sensitivity`).
- `lightviz.core.incremental.PlanRunner` keeps them for whole compressed plans (Explore).

Works for any model torch.fx can trace with one tensor input; the constructors raise otherwise
and the caller falls back to a full forward. Inputs run in the same batches as
`engine.run_model`, so the tail's logits are bit-identical to a full forward.

In-place ops (ReLU(inplace=True), `x += y`) in a tail could overwrite a cached value; those
values are found from the graph and copied for each run.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
>>> cache = PrefixCache(model, torch.randn(5, 4), ["0", "2"])
>>> torch.equal(cache.run_from("2", {}), model(cache.batches[0]))
True
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch import fx, nn
from torch.func import functional_call

from lightviz.core.device import model_device
from lightviz.core.batches import eval_batch_size

_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                      operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor}
_FRESH_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                  nn.Linear, nn.Embedding)  # outputs are new tensors, never views of the input

Snapshot = dict[fx.Node, torch.Tensor]  # the values live at one layer's position, for one batch
PreHook = Callable[[nn.Module, tuple], "tuple | None"]  # a forward pre-hook (activation fake-quant)


class TracedGraph:
    """A model traced by torch.fx, runnable from the position of any of `layers`.

    Args:
        model: a private model (e.g. the engine's float copy); it is traced, not modified.
        layers: names of call_module targets to split at.

    Raises:
        Exception: whatever torch.fx raises for an untraceable model; or ValueError when the
            graph has not exactly one input or a layer is never called.
    """

    def __init__(self, model: nn.Module, layers: list[str]) -> None:
        self.module = fx.symbolic_trace(model)
        self.device = model_device(model)  # batches move there one at a time; logits come back to the CPU
        self.nodes = list(self.module.graph.nodes)
        self.modules = dict(self.module.named_modules())
        if [n.op for n in self.nodes].count("placeholder") != 1:
            raise ValueError("the traced model must take exactly one input tensor")
        index = {node: i for i, node in enumerate(self.nodes)}
        self.start: dict[str, int] = {}
        for layer in layers:
            calls = [i for i, n in enumerate(self.nodes) if n.op == "call_module" and n.target == layer]
            if not calls:
                raise ValueError(f"layer {layer!r} is not called in the traced graph")
            self.start[layer] = calls[0]
        self.last_use = {n: max((index[u] for u in n.users), default=-1) for n in self.nodes}
        self.live = {layer: [n for n in self.nodes[:i] if self.last_use[n] >= i and n.op != "get_attr"]
                     for layer, i in self.start.items()}
        self.copied = {layer: self._mutated_in_tail(layer) for layer in self.start}
        self._starts: dict[int, list[str]] = {}
        for layer, i in self.start.items():
            self._starts.setdefault(i, []).append(layer)

    def snapshot(self, layer: str, env: dict) -> Snapshot:
        """The values live at `layer`'s position in `env`, copied where a tail would overwrite them."""
        copied = self.copied[layer]
        return {n: (env[n].clone() if n in copied else env[n]) for n in self.live[layer]}

    def resume(self, layer: str, snapshot: Snapshot) -> dict:
        """A fresh environment to run from `layer` (values a tail overwrites are copied again)."""
        copied = self.copied[layer]
        return {n: (v.clone() if n in copied else v) for n, v in snapshot.items()}

    def run(self, start: int, env: dict, xb: torch.Tensor, overrides: dict[str, dict[str, torch.Tensor]],
            pre_hooks: dict[str, PreHook] | None = None,
            record: Callable[[str, dict], None] | None = None) -> torch.Tensor:
        """The graph's output for batch `xb`, executing nodes from index `start` with `env` holding
        the values live there. `overrides` replace modules' parameters (functional_call),
        `pre_hooks` transform their inputs, `record(layer, env)` sees the environment at the
        position of every layer after `start` (and at `start` itself)."""
        for i in range(start, len(self.nodes)):
            if record is not None:
                for layer in self._starts.get(i, ()):
                    record(layer, env)
            node = self.nodes[i]
            if node.op == "output":
                return self._run_node(node, env, xb, overrides, pre_hooks)
            env[node] = self._run_node(node, env, xb, overrides, pre_hooks)
            self._free(env, node, i)
        raise ValueError("the traced graph has no output")

    # --- execution -----------------------------------------------------------------------

    def _free(self, env: dict, node: fx.Node, i: int) -> None:
        """Drop the values nothing after node i needs (snapshots keep their own references)."""
        for arg in node.all_input_nodes:
            if self.last_use[arg] <= i:
                env.pop(arg, None)

    def _run_node(self, node: fx.Node, env: dict, xb: torch.Tensor, overrides: dict,
                  pre_hooks: dict | None) -> object:
        if node.op == "placeholder":
            return xb.to(self.device)
        if node.op == "get_attr":
            value = self.module
            for atom in node.target.split("."):
                value = getattr(value, atom)
            return value
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "output":
            return args[0]
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            self_obj, *rest = args
            return getattr(self_obj, node.target)(*rest, **kwargs)
        module = self.modules[node.target]
        hook = pre_hooks.get(node.target) if pre_hooks else None
        if hook is not None:  # as a forward pre-hook on the module would
            args = hook(module, args) or args
        if node.target in overrides:
            return functional_call(module, overrides[node.target], args, kwargs)
        return module(*args, **kwargs)

    # --- in-place safety -----------------------------------------------------------------

    def _mutated_in_tail(self, layer: str) -> set[fx.Node]:
        """Live values an in-place op in the layer's tail may write to (through views too)."""
        start, live = self.start[layer], set(self.live[layer])
        hit = set()
        for node in self.nodes[start:]:
            if not self._mutates_first_arg(node):
                continue
            source = node.args[0] if node.args else None
            while isinstance(source, fx.Node) and source not in live and not self._fresh(source):
                source = source.args[0] if source.args else None  # a view or alias of its first arg
            if isinstance(source, fx.Node) and source in live:
                hit.add(source)
        return hit

    def _mutates_first_arg(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return bool(getattr(self.modules[node.target], "inplace", False))
        if node.op == "call_method":
            return node.target.endswith("_") and not node.target.endswith("__")
        if node.op == "call_function":
            name = getattr(node.target, "__name__", "")
            return (node.target in _INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace"))
                    or (name.endswith("_") and not name.endswith("__")))
        return False

    def _fresh(self, node: fx.Node) -> bool:
        """Whether a node's value is certainly a new tensor (not a view of an input)."""
        return node.op in ("placeholder", "get_attr") or (
            node.op == "call_module" and isinstance(self.modules[node.target], _FRESH_MODULES))


class PrefixCache(TracedGraph):
    """A traced float model with the values live at each layer cached, per batch.

    Args:
        model: a private model (the engine's float copy); it is traced, not modified.
        x: inputs (N, ...).
        layers: names of call_module targets to split at.
        batch: batch size of the passes; default `eval_batch_size(x)`, as engine.run_model,
                for bit-identical logits.

    Raises:
        Exception: as TracedGraph.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, layers: list[str], batch: int | None = None) -> None:
        super().__init__(model, layers)
        batch = batch or eval_batch_size(x)
        self.batches = [x[i:i + batch] for i in range(0, len(x), batch)]
        self.snapshots: dict[str, list[Snapshot]] = {layer: [] for layer in self.start}

        def record(layer: str, env: dict) -> None:
            self.snapshots[layer].append(self.snapshot(layer, env))

        with torch.inference_mode():
            self.float_logits = torch.cat([self.run(0, {}, xb, {}, record=record).cpu()
                                           for xb in self.batches]).float()

    def run_from(self, layer: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits with `layer`'s parameters replaced by `params` (e.g. {"weight": w_hat}),
        computing only the graph from `layer` onward."""
        outs = []
        with torch.inference_mode():
            for xb, snap in zip(self.batches, self.snapshots[layer]):
                outs.append(self.run(self.start[layer], self.resume(layer, snap), xb, {layer: params}).cpu())
        return torch.cat(outs).float()

    def run_full(self, layer: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The same logits as `run_from`, computing the whole graph (the reference for speed)."""
        with torch.inference_mode():
            return torch.cat([self.run(0, {}, xb, {layer: params}).cpu() for xb in self.batches]).float()
