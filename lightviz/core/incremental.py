"""Explore's one-layer changes: the logits of a compressed plan, recomputing only what follows the
first layer (in the order the model calls them) where it differs from the last plan run.

A change to one layer leaves every value computed before that layer as it was. `PlanRunner`
traces the float model once (BatchNorm folded as the plan says; lightviz.core.prefix), runs a
plan's compressed weights through the graph with `functional_call` (no copy of the model per
plan), and keeps, for the last plan it ran, the values live at each layer's position, per
batch, within a byte budget (for the last few plans: sessions sharing a server take turns).
The next plan starts from the latest kept position before its first changed layer.

| step          | what happens                                                                    |
|---------------|---------------------------------------------------------------------------------|
| signature     | per layer in call order: its effective quant and prune spec (global pruning     |
|               | counts included), plus the plan's activation spec: equal prefix = equal values  |
| start         | the latest kept layer position whose layers before it all match a kept plan     |
| run           | batches stream through the graph from there; values at later layer positions    |
|               | are kept; over budget, older plans go first, then the earliest positions        |
| check         | the first run from the input and the first resumed run are compared bit-for-bit |
|               | with a full forward of `Engine.compress(plan)`; on a mismatch the runner stops  |

Memory: the kept values are bounded by `budget_bytes` (shared tensors counted once); a run
holds, beyond them, one batch's activations. `RunInfo` says what a run reused and holds.

>>> import torch
>>> from torch import nn
>>> from lightviz.core.engine import Engine, uniform_plan
>>> from lightviz.core.evaldata import EvalData
>>> engine = Engine(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), prefix_bytes=2**20)
>>> data = EvalData(torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), None, "x", "16 inputs")
>>> a = engine.logits(uniform_plan(8), data)
>>> b = engine.logits(uniform_plan(8).with_override("2", uniform_plan(4).default), data)
>>> engine.last_run.start_layer, engine.last_run.layers_run
('2', 1)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import torch

from lightviz.core.activations import InputFakeQuant, float_plan
from lightviz.core.batches import eval_batch_size, run_model
from lightviz.core.evaldata import EvalData
from lightviz.core.prefix import PreHook, Snapshot, TracedGraph
from lightviz.core.specs import Plan

MAX_PLANS = 4  # plans whose activations are kept (sessions on a server take turns)


@dataclass(frozen=True)
class RunInfo:
    """How one plan's logits were computed.

    Attributes:
        start_layer: the first layer computed (None: from the input).
        layers_run, layers: compressible layers computed, and all of them.
        held_bytes: activations kept for the next plan; budget_bytes: their bound.
        seconds: time of the run.
        note: why nothing was reused, when nothing was.
    """

    start_layer: str | None
    layers_run: int
    layers: int
    held_bytes: int
    budget_bytes: int
    seconds: float
    note: str = ""

    def describe(self) -> str:
        """One line for a caption, e.g. 'recomputed 6 of 21 layers, from layer4.0.conv1; ...'."""
        where = "from the input" if self.start_layer is None else f"from {self.start_layer}"
        return (f"recomputed {self.layers_run} of {self.layers} layers {where} in {self.seconds:.2f} s; "
                f"{_mib(self.held_bytes)} of activations kept for the next change (limit {_mib(self.budget_bytes)})"
                + (f"; {self.note}" if self.note else ""))


class PlanRunner:
    """Logits of compressed plans of one engine on one dataset, reusing the last plan's prefix.

    Args:
        engine: the float model's Engine (its model is traced through a private folded copy).
        data: the evaluation data.
        fold_bn: BatchNorm folding of the plans this runner serves.
        budget_bytes: bound on the activations kept between runs.

    Raises:
        Exception: whatever tracing raises (the engine then runs full forwards).
    """

    def __init__(self, engine, data: EvalData, fold_bn: bool, budget_bytes: int) -> None:
        self.engine, self.data, self.fold_bn, self.budget = engine, data, fold_bn, int(budget_bytes)
        self.graph = TracedGraph(engine.compress(float_plan(fold_bn)), [layer.name for layer in engine.layers])
        self.order = sorted(self.graph.start, key=self.graph.start.get)  # layers in call order
        batch = eval_batch_size(data.x)
        self.batches = [data.x[i:i + batch] for i in range(0, len(data.x), batch)]
        self.lock = threading.Lock()
        self.checked = {"full": False, "resumed": False}
        self.broken = ""  # why this runner gave up (a check failed)
        self._chains: OrderedDict[tuple, dict[str, list[Snapshot]]] = OrderedDict()  # plan -> kept; LRU
        self._refs: dict[int, list] = {}  # id(tensor) -> [references, bytes, tensor]: shared tensors counted once
        self._held = 0

    def logits(self, plan: Plan, results: dict, pre_hooks: dict[str, PreHook] | None,
               progress=None) -> tuple[torch.Tensor, RunInfo] | None:
        """(logits, how they were computed), or None when this runner cannot serve the plan
        right now (in use by another session, or a check failed: run a full forward)."""
        if self.broken or plan.fold_bn != self.fold_bn or not self.lock.acquire(blocking=False):
            return None
        try:
            return self._logits(plan, results, pre_hooks, progress)
        finally:
            self.lock.release()

    # --- one run ----------------------------------------------------------------------------------

    def _logits(self, plan: Plan, results: dict, pre_hooks, progress) -> tuple[torch.Tensor, RunInfo] | None:
        started = time.perf_counter()
        signature = self._plan_signature(plan, results)
        source, start_layer = self._start(signature)
        start = 0 if start_layer is None else self.graph.start[start_layer]
        kept: dict[str, list[Snapshot]] = {}
        if source is not None:  # share the source plan's kept values up to the start
            for layer, snapshots in self._chains[source].items():
                if self.graph.start[layer] <= start:
                    for snapshot in snapshots:
                        self._add(kept, layer, snapshot)
        self._forget(signature)
        self._chains[signature] = kept
        overrides = {name: {"weight": result.weight_hat} for name, result in results.items()}
        dropped: set[str] = set()

        def record(layer: str, env: dict) -> None:
            if self.graph.start[layer] <= start or layer in dropped:
                return
            self._add(kept, layer, self.graph.snapshot(layer, env))
            self._fit_budget(signature, start_layer, dropped)

        outs = []
        with torch.inference_mode():
            for b, xb in enumerate(self.batches):
                env = {} if start_layer is None else self.graph.resume(start_layer, kept[start_layer][b])
                outs.append(self.graph.run(start, env, xb, overrides, pre_hooks, record).cpu())
                if progress is not None:
                    progress(min((b + 1) * len(self.batches[0]), len(self.data)), len(self.data))
        logits = torch.cat(outs).float()
        check = "full" if start_layer is None else "resumed"
        if not self.checked[check]:  # once each: the traced run must be the engine's full forward, bit for bit
            reference = run_model(self.engine.compress(plan, self.data.calibration_inputs
                                                       if plan.activations is not None else None), self.data.x)
            if not torch.equal(logits, reference):
                self.broken = f"the traced run differed from a full forward ({check}); running full forwards"
                for chain in list(self._chains):
                    self._forget(chain)
                return None
            self.checked[check] = True
        layers_run = sum(1 for layer in self.order if self.graph.start[layer] >= start)
        return logits, RunInfo(start_layer, layers_run, len(self.order), self._held, self.budget,
                               time.perf_counter() - started)

    def _plan_signature(self, plan: Plan, results: dict) -> tuple:
        return (plan.activations,) + tuple((results[name].quant, results[name].prune) for name in self.order)

    def _start(self, signature: tuple) -> tuple[tuple | None, str | None]:
        """(kept plan, layer) to start from: the latest kept layer whose predecessors (in call
        order) all match that plan, over the plans kept; (None, None) to run from the input."""
        best: tuple[tuple | None, str | None] = (None, None)
        for chain, kept in reversed(self._chains.items()):  # most recent first: it wins ties
            if chain[0] != signature[0]:
                continue
            found = None
            for k, layer in enumerate(self.order):  # signature[1 + k] is layer k's
                if layer in kept:
                    found = layer
                if signature[1 + k] != chain[1 + k]:
                    break
            if found is not None and (best[1] is None or self.graph.start[found] > self.graph.start[best[1]]):
                best = (chain, found)
        return best

    # --- the kept activations -------------------------------------------------------------------

    def _add(self, kept: dict[str, list[Snapshot]], layer: str, snapshot: Snapshot) -> None:
        kept.setdefault(layer, []).append(snapshot)
        for value in snapshot.values():
            if isinstance(value, torch.Tensor):
                entry = self._refs.setdefault(id(value), [0, value.numel() * value.element_size(), value])
                entry[0] += 1
                if entry[0] == 1:
                    self._held += entry[1]

    def _drop(self, kept: dict[str, list[Snapshot]], layer: str) -> None:
        for snapshot in kept.pop(layer, []):
            for value in snapshot.values():
                entry = self._refs.get(id(value)) if isinstance(value, torch.Tensor) else None
                if entry is not None:
                    entry[0] -= 1
                    if entry[0] == 0:
                        self._held -= entry[1]
                        del self._refs[id(value)]

    def _forget(self, chain: tuple) -> None:
        kept = self._chains.pop(chain, None)
        for layer in list(kept or ()):
            self._drop(kept, layer)

    def _fit_budget(self, current: tuple, protect: str | None, dropped: set[str]) -> None:
        """Within the budget (and MAX_PLANS plans): forget the least recently run plans first;
        then drop the current plan's layers, earliest first (a late position saves the most work
        per byte), its own start last."""
        while len(self._chains) > MAX_PLANS or (self._held > self.budget and len(self._chains) > 1):
            self._forget(next(iter(self._chains)))  # the oldest; the current plan is the newest
        kept = self._chains[current]
        while self._held > self.budget and kept:
            candidates = [layer for layer in self.order if layer in kept and layer != protect]
            victim = candidates[0] if candidates else protect
            self._drop(kept, victim)
            dropped.add(victim)


def input_hooks(plan: Plan, qparams: dict) -> dict[str, PreHook] | None:
    """The activation fake-quant pre-hooks `Engine.compress` installs, by layer name."""
    if plan.activations is None:
        return None
    return {name: InputFakeQuant(plan.activations.quant, item.qparams) for name, item in qparams.items()}


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"
