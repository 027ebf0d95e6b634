"""Where an analysis's many evaluations run: one after another here (`LocalBackend`), or as Ray
tasks on a local Ray instance or a cluster (`lightviz.analysis.ray_backend.RayBackend`).

Every analysis over many plans or layers (a sweep, per-layer sensitivity, mixed-precision
candidates; later method comparisons or gradient sensitivity) is one call:

    results = backend.map(task, engine, data, items, progress=..., on_result=...)

| argument  | what it is                                                                          |
|-----------|-------------------------------------------------------------------------------------|
| task      | a module-level function task(engine, data, item) -> result (Ray pickles it by name) |
| engine    | the float model's Engine; Ray sends `engine.model` to its object store once          |
| data      | the EvalData every task evaluates on; sent to the object store once                 |
| items     | what varies: plans, slices of layers, ...; small and picklable                      |
| progress  | progress(done, total) after each item finishes                                      |
| on_result | on_result(index, result) as each item finishes, in finishing order                 |

Results come back as a list in item order, whatever order tasks finished in, so a run is the
same rows in the same order on any backend. A task must be a pure function of its arguments
(a worker builds its own Engine from the weights and reuses it for the tasks it runs).

An exception from `progress` or `on_result` (Ctrl-C, Streamlit stopping a stale run) cancels
what is still queued or running and propagates; nothing partial is returned.

>>> import torch
>>> from lightviz.core.engine import Engine, uniform_plan
>>> from lightviz.core.evaldata import EvalData
>>> engine = Engine(torch.nn.Sequential(torch.nn.Linear(4, 3)))
>>> data = EvalData(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), None, "x", "eight inputs")
>>> results = LocalBackend().map(evaluate_plan, engine, data, [uniform_plan(8), uniform_plan(2)])
>>> [round(r.agreement, 2) for r in results][0]
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from lightviz.core.engine import Engine, Evaluation
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import Plan

Task = Callable[[Engine, EvalData, Any], Any]
ProgressFn = Callable[[int, int], None]
ResultFn = Callable[[int, Any], None]


class Backend(Protocol):
    """What the analyses need from a place to run tasks."""

    name: str  # "local" or "ray"

    @property
    def workers(self) -> int:
        """How many tasks run at once (slices are cut to keep them busy)."""

    def describe(self) -> str:
        """One line: where the tasks run."""

    def map(self, task: Task, engine: Engine, data: EvalData, items: Sequence[Any], *,
            progress: ProgressFn | None = None, on_result: ResultFn | None = None) -> list:
        """task(engine, data, item) for every item; the results in item order."""


class LocalBackend:
    """Run every task here, in order, with the caller's engine (its caches are shared)."""

    name = "local"
    workers = 1

    def describe(self) -> str:
        return "this process"

    def map(self, task: Task, engine: Engine, data: EvalData, items: Sequence[Any], *,
            progress: ProgressFn | None = None, on_result: ResultFn | None = None) -> list:
        results = []
        for index, item in enumerate(items):
            results.append(task(engine, data, item))
            if on_result is not None:
                on_result(index, results[-1])
            if progress is not None:
                progress(index + 1, len(items))
        return results


def evaluate_plan(engine: Engine, data: EvalData, plan: Plan) -> Evaluation:
    """A task: `engine.evaluate(plan, data)`."""
    return engine.evaluate(plan, data)


def slices(names: Sequence[str], workers: int, per_worker: int = 2) -> list[list[str]]:
    """Contiguous slices of `names`, about `per_worker` per worker (at most one per name).

    >>> slices(list("abcdefg"), workers=2)
    [['a', 'b'], ['c', 'd'], ['e', 'f'], ['g']]
    >>> slices(list("abc"), workers=1, per_worker=1)
    [['a', 'b', 'c']]
    """
    count = max(1, min(len(names), workers * per_worker))
    size = -(-len(names) // count)
    return [list(names[i:i + size]) for i in range(0, len(names), size)]
