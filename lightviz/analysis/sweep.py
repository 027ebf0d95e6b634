"""Sweeps over uniform configurations, and the accuracy-vs-size Pareto frontier.

>>> configs = sweep_configs([4, 8], ["symmetric"], ["channel"], [0.0])
>>> [plan.default.quant.bits for plan in configs]
[4, 8]
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Callable, Iterable

import pandas as pd

from lightviz.analysis.parallel import Backend, LocalBackend
from lightviz.core.engine import Engine, Progress
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import Plan, PruneSpec
from lightviz.core.task import task_of

SWEEP_COLUMNS = [
    "label", "bits", "scheme", "granularity", "sparsity", "prune_method",
    "accuracy", "float_accuracy", "agreement", "kl", "size_bytes", "float_size_bytes",
    "compression_ratio", "avg_bits_per_weight", "plan",
]
# A language model's rows: perplexity in place of accuracy, and bits per quantized weight.
LM_SWEEP_COLUMNS = [
    "label", "bits", "scheme", "granularity", "group_size", "scale_dtype", "sparsity", "prune_method",
    "perplexity", "float_perplexity", "agreement", "kl", "size_bytes", "float_size_bytes",
    "compression_ratio", "avg_bits_per_weight", "quantized_bits_per_weight", "plan",
]


def chart_column(data: EvalData) -> str:
    """The y column a trade-off chart of `data` plots: a language model's perplexity; accuracy with
    labels, else agreement with the float model.

    >>> from lightviz.io.datasets import generated_inputs
    >>> chart_column(generated_inputs((4,), n=2))
    'agreement'
    """
    if task_of(data).is_lm:
        return "perplexity"
    return "accuracy" if data.labeled else "agreement"


def sweep_columns(data: EvalData) -> list[str]:
    """The columns of a sweep on `data`: SWEEP_COLUMNS, or LM_SWEEP_COLUMNS for token data."""
    return LM_SWEEP_COLUMNS if task_of(data).is_lm else SWEEP_COLUMNS


def sweep_configs(bits: Iterable[int | None], schemes: Iterable[str], granularities: Iterable[str],
                  sparsities: Iterable[float], prune_method: str = "unstructured",
                  base: Plan | None = None) -> list[Plan]:
    """One uniform Plan per combination, on top of `base` (its range method, folding, ...)."""
    base = base or Plan()
    plans = []
    for b, scheme, granularity, sparsity in itertools.product(bits, schemes, granularities, sparsities):
        quant = replace(base.default.quant, bits=b, scheme=scheme, granularity=granularity)
        prune = PruneSpec(sparsity=sparsity, method=prune_method, m=base.default.prune.m)
        plan = replace(base, default=replace(base.default, quant=quant, prune=prune, keep_float=False),
                       overrides=())
        if plan not in plans:
            plans.append(plan)
    return plans


def run_sweep(engine: Engine, data: EvalData, plans: list[Plan],
              progress: Callable[[int, int], None] | None = None,
              detail: Callable[[int, float, str], None] | None = None,
              backend: Backend | None = None) -> pd.DataFrame:
    """Evaluate each plan; one tidy row per configuration (columns `sweep_columns(data)`).

    Args:
        progress: called with (configurations done, configurations) after each one.
        detail: called with (configuration index, fraction, text) while one is evaluated
            (Engine.evaluate's progress), for large models where one takes seconds; here only.
        backend: where the plans are evaluated (parallel.py): default here, one after another;
            a RayBackend evaluates one plan per task. The rows are the same either way.
    """
    if backend is not None and not isinstance(backend, LocalBackend):
        rows = backend.map(plan_row, engine, data, plans, progress=progress)
        return pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    rows = []
    for i, plan in enumerate(plans):
        inner = None if detail is None else (lambda fraction, text, i=i: detail(i, fraction, text))
        rows.append(plan_row(engine, data, plan, progress=inner))
        if progress:
            progress(i + 1, len(plans))
    return pd.DataFrame(rows, columns=sweep_columns(data))


def plan_row(engine: Engine, data: EvalData, plan: Plan, label: str | None = None,
             progress: Progress | None = None) -> dict:
    """A sweep row for any plan (uniform or not); `progress` as Engine.evaluate's."""
    evaluation = engine.evaluate(plan, data, progress)
    quant, prune = plan.default.quant, plan.default.prune
    columns = sweep_columns(data)
    row = {
        "label": label or plan_label(plan), "bits": quant.bits, "scheme": quant.scheme,
        "granularity": quant.granularity, "sparsity": prune.sparsity, "prune_method": prune.method,
        **{key: value for key, value in evaluation.to_dict().items() if key in columns},
        "plan": plan.to_json(),
    }
    if task_of(data).is_lm:
        row.update(group_size=quant.group_size if quant.granularity == "group" else None,
                   scale_dtype=quant.scale_dtype)
    return row


def plan_label(plan: Plan) -> str:
    """Short name of a plan, e.g. 'int4 sym/channel, unstructured 50%' (+ overrides)."""
    config = plan.default
    text = "float32" if config.keep_float else config.quant.label
    if config.prune.active and not config.keep_float:
        text += f", {'global ' if plan.global_prune else ''}{config.prune.label}"
    if plan.activations is not None:  # quantized layer inputs, e.g. ", act int8 asym"
        text += f", act int{plan.activations.bits} {plan.activations.scheme[:4]}"
    if plan.overrides:
        text += f" +{len(plan.overrides)} layer override{'s' if len(plan.overrides) > 1 else ''}"
    return text


def pareto_front(df: pd.DataFrame, x: str = "size_bytes", y: str = "accuracy",
                 higher_is_better: bool | None = None) -> pd.DataFrame:
    """Rows not dominated by another (no other row is at most as large and at least as good).

    Sorted by `x`. Rows with a missing `y` are ignored. Better is higher, except for
    perplexity (lower); `higher_is_better` says so for any other column.

    >>> rows = pd.DataFrame({"size_bytes": [1, 2, 3], "perplexity": [9.0, 5.0, 6.0]})
    >>> pareto_front(rows, y="perplexity")["size_bytes"].tolist()
    [1, 2]
    """
    higher = y != "perplexity" if higher_is_better is None else higher_is_better
    sign = 1.0 if higher else -1.0
    rows = df.dropna(subset=[y]).sort_values([x, y], ascending=[True, not higher])
    best, keep = float("-inf"), []
    for index, value in zip(rows.index, rows[y]):
        if sign * value > best:
            keep.append(index)
            best = sign * value
    return rows.loc[keep]
