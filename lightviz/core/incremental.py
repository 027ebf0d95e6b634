"""Explore's one-layer changes: the logits of a compressed plan, recomputing only what follows the
first layer (in the order the model calls them) where it differs from the last plan run.

A change to one layer leaves every value computed before that layer as it was. `PlanRunner`
traces the float model once (BatchNorm folded as the plan says; lightviz.core.prefix), runs a
plan's compressed weights through the graph with `functional_call` (no copy of the model per
plan), and keeps, for the last plan it ran, the values live at each layer's position, per
batch, within a byte budget. The next plan starts from the latest kept position before its
first changed layer.

| step          | what happens                                                                    |
|---------------|---------------------------------------------------------------------------------|
| signature     | per layer in call order: its effective quant and prune spec (global pruning     |
|               | counts included), plus the plan's activation spec: equal prefix = equal values  |
| start         | the latest kept layer position whose layers before it all match the last plan   |
| run           | batches stream through the graph from there; values at later layer positions    |
|               | are kept, the earliest dropped first while over budget, never the start's own   |
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
from dataclasses import dataclass

import torch

from lightviz.core.activations import InputFakeQuant, float_plan
from lightviz.core.batches import eval_batch_size, run_model
from lightviz.core.evaldata import EvalData
from lightviz.core.prefix import PreHook, Snapshot, TracedGraph
from lightviz.core.specs import Plan


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
        self._signature: tuple | None = None
        self._kept: dict[str, list[Snapshot]] = {}
        self._refs: dict[int, list] = {}  # id(tensor) -> [count, bytes]: shared tensors counted once
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
        start_layer = self._start(signature)
        self._keep_only_before(start_layer)
        start = 0 if start_layer is None else self.graph.start[start_layer]
        overrides = {name: {"weight": result.weight_hat} for name, result in results.items()}
        dropped: set[str] = set()

        def record(layer: str, env: dict) -> None:
            if self.graph.start[layer] <= start or layer in dropped:
                return
            self._add(layer, self.graph.snapshot(layer, env))
            self._fit_budget(protect=start_layer, dropped=dropped)

        outs = []
        with torch.inference_mode():
            for b, xb in enumerate(self.batches):
                env = {} if start_layer is None else self.graph.resume(start_layer, self._kept[start_layer][b])
                outs.append(self.graph.run(start, env, xb, overrides, pre_hooks, record).cpu())
                if progress is not None:
                    progress(min((b + 1) * len(self.batches[0]), len(self.data)), len(self.data))
        logits = torch.cat(outs).float()
        self._signature = signature
        check = "full" if start_layer is None else "resumed"
        if not self.checked[check]:  # once each: the traced run must be the engine's full forward, bit for bit
            reference = run_model(self.engine.compress(plan, self.data.calibration_inputs
                                                       if plan.activations is not None else None), self.data.x)
            if not torch.equal(logits, reference):
                self.broken = f"the traced run differed from a full forward ({check}); running full forwards"
                self._keep_only_before(None)
                return None
            self.checked[check] = True
        layers_run = sum(1 for layer in self.order if self.graph.start[layer] >= start)
        return logits, RunInfo(start_layer, layers_run, len(self.order), self._held, self.budget,
                               time.perf_counter() - started)

    def _plan_signature(self, plan: Plan, results: dict) -> tuple:
        return (plan.activations,) + tuple((results[name].quant, results[name].prune) for name in self.order)

    def _start(self, signature: tuple) -> str | None:
        """The latest kept layer whose predecessors (in call order) all match the last plan."""
        if self._signature is None or signature[0] != self._signature[0]:
            return None
        best = None
        for k, layer in enumerate(self.order):  # signature[1 + k] is layer k's
            if layer in self._kept:
                best = layer
            if signature[1 + k] != self._signature[1 + k]:
                break
        else:
            return best  # nothing changed: the last kept position still serves
        return best

    # --- the kept activations -------------------------------------------------------------------

    def _add(self, layer: str, snapshot: Snapshot) -> None:
        self._kept.setdefault(layer, []).append(snapshot)
        for value in snapshot.values():
            if isinstance(value, torch.Tensor):
                entry = self._refs.setdefault(id(value), [0, value.numel() * value.element_size(), value])
                entry[0] += 1
                if entry[0] == 1:
                    self._held += entry[1]

    def _drop(self, layer: str) -> None:
        for snapshot in self._kept.pop(layer, []):
            for value in snapshot.values():
                entry = self._refs.get(id(value)) if isinstance(value, torch.Tensor) else None
                if entry is not None:
                    entry[0] -= 1
                    if entry[0] == 0:
                        self._held -= entry[1]
                        del self._refs[id(value)]

    def _fit_budget(self, protect: str | None, dropped: set[str]) -> None:
        """Drop whole layers, earliest first (a late position saves the most work per byte), until
        the kept activations fit the budget; the run's own start is dropped last."""
        while self._held > self.budget and self._kept:
            candidates = [layer for layer in self.order if layer in self._kept and layer != protect]
            victim = candidates[0] if candidates else protect
            self._drop(victim)
            dropped.add(victim)

    def _keep_only_before(self, start_layer: str | None) -> None:
        """Forget what the last plan kept after `start_layer` (all of it for None)."""
        limit = -1 if start_layer is None else self.graph.start[start_layer]
        for layer in [layer for layer in self._kept if self.graph.start[layer] > limit]:
            self._drop(layer)
        if start_layer is None:
            self._signature = None


def input_hooks(plan: Plan, qparams: dict) -> dict[str, PreHook] | None:
    """The activation fake-quant pre-hooks `Engine.compress` installs, by layer name."""
    if plan.activations is None:
        return None
    return {name: InputFakeQuant(plan.activations.quant, item.qparams) for name, item in qparams.items()}


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"
