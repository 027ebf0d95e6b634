"""Two plans of one model side by side: plan A (pinned) against plan B (current).

Every number is the engine's: the headline deltas are `evaluate(B) - evaluate(A)` on the same
data, field by field, so they equal the difference of two `python -m lightviz evaluate` runs.
The per-layer table lines the two `layer_table`s up by layer and flags the layers whose
setting differs; the overlaid histogram bins the float weights and both compressed versions
of one layer over shared bins.

>>> from torch import nn
>>> from lightviz.core.engine import Engine, uniform_plan
>>> engine = Engine(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
>>> diff = layer_differences(engine.layer_table(uniform_plan(8)), engine.layer_table(uniform_plan(4)))
>>> diff[["name", "setting_a", "setting_b", "differs"]].values.tolist()
[['1', 'int8 symm/channel', 'int4 symm/channel', True]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lightviz.analysis.explore import HIST_BINS, Binned
from lightviz.core.engine import Engine, Evaluation, LayerResult
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import Plan

DELTA_FIELDS = ("accuracy", "float_accuracy", "perplexity", "float_perplexity", "agreement", "kl", "size_bytes",
                "float_size_bytes", "compression_ratio", "avg_bits_per_weight")
DIFF_COLUMNS = ["name", "setting_a", "setting_b", "differs", "sqnr_db_a", "sqnr_db_b", "sqnr_delta",
                "mse_a", "mse_b", "size_bytes_a", "size_bytes_b", "size_delta", "format_a", "format_b"]


@dataclass(frozen=True, eq=False)
class PlanComparison:
    """Plan A and plan B evaluated on the same data.

    Attributes:
        a, b: the plans; B is the one being tried (the app's current plan).
        eval_a, eval_b: Engine.evaluate of each.
        deltas: {field: B - A} for DELTA_FIELDS (None where a side has no accuracy).
        layers: one row per layer (DIFF_COLUMNS), in model order.
    """

    a: Plan
    b: Plan
    eval_a: Evaluation
    eval_b: Evaluation
    deltas: dict
    layers: pd.DataFrame

    @property
    def changed_layers(self) -> list[str]:
        return self.layers.loc[self.layers["differs"], "name"].tolist()


def evaluation_deltas(eval_a: Evaluation, eval_b: Evaluation) -> dict:
    """{field: B - A} of the headline numbers; None when either side has none (no labels; a
    classifier's perplexity, a language model's accuracy).

    >>> from lightviz.core.engine import Evaluation
    >>> a = Evaluation(0.9, 0.95, 0.97, 0.1, 10, 400, 1000, 8.0)
    >>> b = Evaluation(0.8, 0.95, 0.90, 0.3, 10, 200, 1000, 4.0)
    >>> d = evaluation_deltas(a, b)
    >>> round(d["accuracy"], 6), d["size_bytes"], d["compression_ratio"]
    (-0.1, -200, 2.5)
    """
    first, second = eval_a.to_dict(), eval_b.to_dict()
    return {key: None if first.get(key) is None or second.get(key) is None else second[key] - first[key]
            for key in DELTA_FIELDS}


def layer_differences(table_a: pd.DataFrame, table_b: pd.DataFrame) -> pd.DataFrame:
    """The two layer tables (Engine.layer_table) side by side, one row per layer (DIFF_COLUMNS).

    `differs` is True where the layer's setting (bits, scheme, granularity, range, sparsity,
    pruning method, kept float) is not the same under both plans; a layer with the same
    setting can still differ in error when global pruning spreads sparsity differently.
    """
    if table_a["name"].tolist() != table_b["name"].tolist():
        raise ValueError("the two layer tables list different layers: compare plans of one model")
    rows = []
    for a, b in zip(table_a.itertuples(index=False), table_b.itertuples(index=False)):
        setting_a, setting_b = setting_label(a), setting_label(b)
        rows.append({
            "name": a.name, "setting_a": setting_a, "setting_b": setting_b, "differs": setting_a != setting_b,
            "sqnr_db_a": float(a.sqnr_db), "sqnr_db_b": float(b.sqnr_db),
            "sqnr_delta": _difference(float(b.sqnr_db), float(a.sqnr_db)),
            "mse_a": float(a.mse), "mse_b": float(b.mse),
            "size_bytes_a": int(a.size_bytes), "size_bytes_b": int(b.size_bytes),
            "size_delta": int(b.size_bytes) - int(a.size_bytes), "format_a": a.format, "format_b": b.format,
        })
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)


def setting_label(row) -> str:
    """One layer-table row's setting in words, e.g. 'int4 symm/channel, unstructured 50%'."""
    if row.keep_float or row.bits is None or (isinstance(row.bits, float) and math.isnan(row.bits)):
        text = "float32"
    else:
        text = f"int{int(row.bits)} {row.scheme[:4]}/{row.granularity}"
        if row.range_method != "minmax":
            text += f" {row.range_method}"
    if not row.keep_float and row.sparsity > 0:
        text += f", {row.prune_method} {row.sparsity:.0%}"
    return text


def _difference(b: float, a: float) -> float:
    """b - a, with exact layers (infinite SQNR) giving NaN unless both are exact (0)."""
    if math.isinf(a) and math.isinf(b) and a == b:
        return 0.0
    if math.isinf(a) or math.isinf(b):
        return float("nan")
    return b - a


def compare_plans(engine: Engine, data: EvalData, a: Plan, b: Plan) -> PlanComparison:
    """Evaluate both plans on `data` and line them up (the engine caches both)."""
    eval_a, eval_b = engine.evaluate(a, data), engine.evaluate(b, data)
    layers = layer_differences(engine.layer_table(a), engine.layer_table(b))
    return PlanComparison(a, b, eval_a, eval_b, evaluation_deltas(eval_a, eval_b), layers)


# --- one layer's weights under both plans ---------------------------------------------------


@dataclass(frozen=True)
class OverlaidHistogram(Binned):
    """Float weights and both plans' kept weights of one layer over shared bins.

    Attributes:
        edges: (bins + 1,) shared edges; float_counts, a_counts, b_counts: (bins,).
        pruned_a, pruned_b: weights each plan set to exactly zero.
        levels_a, levels_b: how many distinct values each plan's kept weights take.
    """

    edges: np.ndarray
    float_counts: np.ndarray
    a_counts: np.ndarray
    b_counts: np.ndarray
    n_weights: int
    pruned_a: int
    pruned_b: int
    levels_a: int
    levels_b: int


def overlaid_histogram(result_a: LayerResult, result_b: LayerResult, bins: int = HIST_BINS) -> OverlaidHistogram:
    """Histograms of one layer's float weights and of its kept weights under A and under B.

    The float reference is A's (the same as B's unless only one plan folds BatchNorm).
    """
    if result_a.layer.name != result_b.layer.name:
        raise ValueError(f"compare one layer: got {result_a.layer.name!r} and {result_b.layer.name!r}")
    w = result_a.weight.detach().double().reshape(-1).numpy()
    kept = [_kept(result) for result in (result_a, result_b)]
    lo = min([w.min(initial=0.0)] + [k.min(initial=0.0) for k in kept])
    hi = max([w.max(initial=0.0)] + [k.max(initial=0.0) for k in kept])
    pad = (hi - lo) * 0.02 or 1e-6
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    counts = [np.histogram(values, edges)[0] for values in (w, *kept)]
    pruned = [0 if r.mask is None else int((~r.mask).sum()) for r in (result_a, result_b)]
    levels = [int(np.unique(k).size) for k in kept]
    return OverlaidHistogram(edges, counts[0], counts[1], counts[2], int(w.size), pruned[0], pruned[1],
                             levels[0], levels[1])


def _kept(result: LayerResult) -> np.ndarray:
    values = result.weight_hat.detach().double().reshape(-1).numpy()
    return values if result.mask is None else values[result.mask.reshape(-1).numpy()]
