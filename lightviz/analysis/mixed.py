"""Mixed precision: bits per layer from a sensitivity table, under a size budget or an allowed drop.

Each layer picks one bit-width among those its sensitivity rows measured. Choosing them is a
*multiple-choice knapsack*: minimize the sum of per-layer costs-to-accuracy subject to the sum
of per-layer sizes staying within the budget. Sizes are exact (size.weight_size, the same
accounting as Engine.evaluate); the objective treats layers as independent.

Objective: the per-layer KL(p_float || p) of the single-layer plans, by default. KL is
smooth, never negative and roughly additive over layers for small perturbations (a
second-order expansion of the loss), while accuracy drops on a few hundred samples are
noisy, often 0 or negative at 6-8 bits, and tie everywhere. `objective="accuracy_drop"`
uses max(drop, 0) instead; for a language model `"perplexity_increase"` (relative);
`objective="gradient"` uses the predicted KL (`score`) of gradsens.gradient_sensitivity, which
needs no forward pass per layer and setting.

Units: a sensitivity table run over units of layers (`sensitivity(..., units=blocks(engine))`,
a language model's blocks) allocates one bit-width per unit; layers outside every unit (an
LM's embeddings and head) keep what the base plan gives them, and a bits-per-weight budget
counts the allocated layers' weights only (how LM users count bits).

Solvers:
- `knapsack`: exact dynamic programming over layers that keeps only the Pareto-optimal
  (size, objective) partial assignments; sizes are integers, so nothing is discretized. If
  the frontier ever exceeds MAX_STATES (many layers and options), it is thinned to the best
  state per size bucket and the result says exact=False.
- `greedy`: start every layer at its largest option and repeatedly step the layer whose next
  smaller option costs the least objective per byte saved, until the budget holds; then step
  back up while something fits. Near the knapsack with many layers, coarse with few.

>>> knapsack([[1, 2], [1, 3]], [[5.0, 1.0], [4.0, 0.5]], budget=4)  # option index per layer, exact
([1, 0], True)
>>> greedy([[1, 2], [1, 3]], [[5.0, 1.0], [4.0, 0.5]], budget=4)
[1, 0]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from lightviz.analysis.parallel import Backend, LocalBackend, evaluate_plan
from lightviz.core.activations import float_plan
from lightviz.core.engine import Engine, Evaluation
from lightviz.core.evaldata import EvalData, subset
from lightviz.core.size import weight_size
from lightviz.core.specs import LayerConfig, Plan, PruneSpec
from lightviz.core.task import task_of

OBJECTIVES = ("kl", "accuracy_drop", "perplexity_increase", "gradient")
METHODS = ("knapsack", "greedy")
MAX_STATES = 200_000
REFINE = 8  # knapsack choices measured before one is returned


@dataclass(frozen=True)
class Options:
    """Per layer, the bit-widths it may take, their storage and their objective value."""

    layers: list[str]  # units: layer names, or group names (see `members`)
    bits: list[list[int]]
    size_bytes: list[list[int]]  # layer storage incl. qparams and float bias
    weight_bits: list[list[int]]  # weight storage in bits (what avg bits per weight counts)
    value: list[list[float]]
    rest_bytes: int  # everything outside the units (as Engine.size_bytes counts it under the base plan)
    n_weights: int  # weights of the units' layers
    members: dict[str, list[str]] | None = None  # {unit: its layers} when units group layers


@dataclass(frozen=True, eq=False)
class Allocation:
    """A mixed-precision plan, how it was chosen, and what it measured."""

    plan: Plan
    bits: dict[str, int]
    budget: str  # e.g. "size <= 12,345 B"
    objective: str
    method: str
    exact: bool
    predicted: float  # sum of per-layer objective values
    evaluation: Evaluation
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"bits": self.bits, "budget": self.budget, "objective": self.objective, "method": self.method,
                "exact": self.exact, "predicted": self.predicted, **self.evaluation.to_dict(),
                "notes": self.notes, "plan": self.plan.to_dict()}


def layer_options(engine: Engine, sens: pd.DataFrame, base: Plan, objective: str = "kl") -> Options:
    """The choices the sensitivity table offers (its "bits" rows), with exact sizes."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
    rows = sens[sens["kind"] == "bits"].dropna(subset=["bits"])
    if objective == "gradient" and "score" not in rows:
        raise ValueError("objective 'gradient' reads the `score` column of gradsens.gradient_sensitivity rows")
    if objective not in ("kl", "gradient") and (objective not in rows or rows[objective].isna().any()):
        raise ValueError(f"objective {objective!r} needs a sensitivity table with that column"
                         + (" (labeled data)" if objective == "accuracy_drop" else "") + "; use objective 'kl'")
    if objective == "kl" and "kl" not in rows:
        raise ValueError("objective 'kl' needs measured sensitivity rows (sensitivity.sensitivity)")
    members = sens.attrs.get("units")
    units = members or {layer.name: [layer.name] for layer in engine.layers}
    missing = [name for name in units if name not in set(rows["layer"])]
    if missing:
        raise ValueError(f"the sensitivity table has no bits rows for layers {missing}; run it over all layers")
    quant = base.default.quant
    bits, sizes, wbits, values = [], [], [], []
    for unit, names in units.items():
        mine = rows[rows["layer"] == unit].drop_duplicates("bits").sort_values("bits")
        unit_bits = [int(b) for b in mine["bits"]]
        parts = [[_layer_size(engine, name, replace(quant, bits=b, format="int"), base.fold_bn) for name in names]
                 for b in unit_bits]
        bits.append(unit_bits)
        sizes.append([sum(part.total_bytes for part in group) for group in parts])
        wbits.append([sum(part.weight_bits for part in group) for group in parts])
        column = {"kl": mine.get("kl"), "gradient": mine.get("score")}.get(objective)
        if column is None:
            column = mine[objective].clip(lower=0.0)
        values.append([float(v) for v in column])
        if not np.isfinite(values[-1]).all():
            raise ValueError(f"the sensitivity's {objective} of {unit} is not a finite number (the model's outputs "
                             "overflow float32 on these inputs: weights near its limit, about 3.4e38); mixed "
                             "precision cannot rank such layers")
    inside = [name for names in units.values() for name in names]
    reference = base if members else float_plan(base.fold_bn)
    for name in inside if members else ():
        reference = reference.with_override(name, LayerConfig(keep_float=True))
    results = engine.compress_layers(reference)
    rest = engine.size_bytes(reference, results) - sum(results[name].size.total_bytes for name in inside)
    return Options(list(units), bits, sizes, wbits, values, rest,
                   sum(results[name].size.n_weights for name in inside), members)


def _layer_size(engine: Engine, name: str, quant, fold_bn: bool):
    info = engine.by_name[name]
    bias = engine.reference_weight(name, fold_bn)[1]
    return weight_size(info.shape, quant, None, None, info.axis, 0 if bias is None else bias.numel())


def knapsack(costs: list[list[int]], values: list[list[float]], budget: int,
             max_states: int = MAX_STATES) -> tuple[list[int], bool]:
    """Option index per layer minimizing the summed value with summed cost <= budget.

    Returns (choice, exact). Raises ValueError when even the cheapest options exceed budget.
    """
    choices, exact = candidates(costs, values, budget, 1, max_states)
    return choices[0], exact


def candidates(costs: list[list[int]], values: list[list[float]], budget: int, k: int,
               max_states: int = MAX_STATES) -> tuple[list[list[int]], bool]:
    """The k Pareto-optimal choices within budget with the smallest summed value, best first."""
    cost, value, choice, exact = _frontier(costs, values, budget, max_states)
    if not len(cost):
        raise ValueError(f"the budget is too small: the cheapest choice needs {sum(min(c) for c in costs):,} "
                         f"and the budget is {budget:,}")
    return [choice[i].tolist() for i in np.lexsort((cost, value))[:k]], exact


def _frontier(costs: list[list[int]], values: list[list[float]], budget: int | None,
              max_states: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Pareto-optimal (cost, value, choice) of all layers together, cost ascending."""
    cost, value = np.zeros(1, dtype=np.int64), np.zeros(1)
    choice, exact = np.zeros((1, 0), dtype=np.int64), True
    cheapest_rest = np.cumsum([min(c) for c in costs][::-1])[::-1].tolist() + [0]
    for j, (layer_costs, layer_values) in enumerate(zip(costs, values)):
        k = len(layer_costs)
        cost = (cost[:, None] + np.asarray(layer_costs, dtype=np.int64)[None, :]).reshape(-1)
        value = (value[:, None] + np.asarray(layer_values)[None, :]).reshape(-1)
        choice = np.concatenate([np.repeat(choice, k, axis=0), np.tile(np.arange(k), len(choice))[:, None]], axis=1)
        keep = np.ones(len(cost), dtype=bool) if budget is None else cost + cheapest_rest[j + 1] <= budget
        order = np.lexsort((value[keep], cost[keep]))  # cost ascending, then value ascending
        cost, value, choice = cost[keep][order], value[keep][order], choice[keep][order]
        if len(cost):
            previous_best = np.concatenate([[np.inf], np.minimum.accumulate(value)[:-1]])
            pareto = value < previous_best  # strictly better than every cheaper state
            cost, value, choice = cost[pareto], value[pareto], choice[pareto]
        if len(cost) > max_states:  # thin: best state per cost bucket (no longer exact)
            buckets = (cost - cost[0]) * max_states // max(int(cost[-1] - cost[0]), 1)
            first = np.unique(buckets, return_index=True)[1]
            cost, value, choice, exact = cost[first], value[first], choice[first], False
    return cost, value, choice, exact


def greedy(costs: list[list[int]], values: list[list[float]], budget: int) -> list[int]:
    """Option index per layer, greedily.

    Down: from every layer's largest option, step down the layer whose next smaller option
    adds the least objective per unit of cost saved, until the budget holds. Up: the last
    step can overshoot, so then step up, best objective saved per unit of cost, while it fits.
    """
    order = [sorted(range(len(c)), key=c.__getitem__) for c in costs]  # option indices, cost ascending
    position = [len(o) - 1 for o in order]

    def at(j: int, p: int) -> tuple[int, float]:
        return costs[j][order[j][p]], values[j][order[j][p]]

    total = sum(at(j, p)[0] for j, p in enumerate(position))
    if sum(min(c) for c in costs) > budget:
        raise ValueError(f"the budget is too small: the cheapest choice needs {sum(min(c) for c in costs):,} "
                         f"and the budget is {budget:,}")
    while total > budget:
        rates = [((at(j, p - 1)[1] - at(j, p)[1]) / max(at(j, p)[0] - at(j, p - 1)[0], 1e-12), j)
                 for j, p in enumerate(position) if p > 0]
        j = min(rates)[1]
        total -= at(j, position[j])[0] - at(j, position[j] - 1)[0]
        position[j] -= 1
    while True:
        moves = [((at(j, p + 1)[1] - at(j, p)[1]) / max(at(j, p + 1)[0] - at(j, p)[0], 1e-12), j)
                 for j, p in enumerate(position)
                 if p + 1 < len(order[j]) and total + at(j, p + 1)[0] - at(j, p)[0] <= budget]
        moves = [move for move in moves if move[0] < 0]  # only steps that lower the objective
        if not moves:
            return [o[p] for o, p in zip(order, position)]
        j = min(moves)[1]
        total += at(j, position[j] + 1)[0] - at(j, position[j])[0]
        position[j] += 1


def mixed_plan(base: Plan, bits: dict[str, int]) -> Plan:
    """Base quantization at the most common bits as default, other layers as overrides; no pruning."""
    quant = replace(base.default.quant, format="int", bits=base.default.quant.bits or 8)
    common = max(Counter(bits.values()).items(), key=lambda item: (item[1], item[0]))[0]
    default = LayerConfig(quant=replace(quant, bits=common), prune=PruneSpec())
    overrides = {name: LayerConfig(quant=replace(quant, bits=b), prune=PruneSpec())
                 for name, b in bits.items() if b != common}
    return replace(base, default=default, overrides=overrides, global_prune=False)


def uniform_at(base: Plan, bits: int) -> Plan:
    """The uniform plan at `bits` with the base's quantization (what mixed plans compete with)."""
    default = LayerConfig(quant=replace(base.default.quant, bits=bits, format="int"), prune=PruneSpec())
    return replace(base, default=default, overrides=(), global_prune=False)


def allocate(engine: Engine, data: EvalData, sens: pd.DataFrame, base: Plan | None = None, *,
             size_bytes: int | None = None, avg_bits: float | None = None, max_drop: float | None = None,
             objective: str = "kl", method: str = "knapsack", refine: int = REFINE,
             max_samples: int | None = None, backend: Backend | None = None) -> Allocation:
    """Bits per layer under exactly one budget, as a Plan, evaluated on `data`.

    Args:
        engine, data: the model and its evaluation data (`max_samples`: a seeded subset).
        sens: `sensitivity.sensitivity(...)` rows with kind "bits" for every layer.
        base: scheme, granularity, range method, folding and activations of the result.
        size_bytes: the whole model's storage at most this (as Engine.evaluate counts it).
        avg_bits: storage bits per weight (values, scales, zero-points) at most this.
        max_drop: the smallest plan on the knapsack frontier whose *measured* accuracy drop is
            at most this (agreement drop without labels; for a language model, the relative
            perplexity increase), found by bisection over the frontier.
        objective: "kl", "accuracy_drop", "perplexity_increase" or "gradient" (see module doc;
            `sens` from gradient_sensitivity for "gradient"). method: "knapsack" or "greedy".
        refine: the knapsack's objective is a proxy (layers are not independent), so its
            `refine` best choices within the budget are evaluated and the best *measured* one
            is returned (accuracy, then agreement, then lower KL); 1 gives the plain optimum.
        backend: where those candidates are evaluated (parallel.py; default here). The
            max_drop bisection measures one plan after another, here.
    """
    base = base or Plan()
    given = {"size_bytes": size_bytes, "avg_bits": avg_bits, "max_drop": max_drop}
    if sum(v is not None for v in given.values()) != 1:
        raise ValueError(f"give exactly one budget of size_bytes, avg_bits, max_drop; got {given}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    data = subset(data, max_samples)
    options = layer_options(engine, sens, base, objective)
    if max_drop is not None:
        return _within_drop(engine, data, options, base, objective, float(max_drop))
    if size_bytes is not None:
        if not size_bytes > 0:
            raise ValueError(f"size_bytes must be a positive number of bytes; got {size_bytes!r}")
        costs, budget = options.size_bytes, int(size_bytes) - options.rest_bytes
        text = f"size <= {int(size_bytes):,} B"
        smallest = options.rest_bytes + sum(min(c) for c in costs)
        if smallest > size_bytes:
            raise ValueError(f"size_bytes {int(size_bytes):,} is below the smallest plan these bits allow: "
                             f"{smallest:,} B (every layer at its fewest bits); raise the budget or allow fewer bits")
    else:
        if not (isinstance(avg_bits, (int, float)) and 0 < avg_bits <= 64):
            raise ValueError(f"avg_bits must be a number of bits per weight in (0, 64]; got {avg_bits!r}")
        costs, budget = options.weight_bits, int(np.floor(avg_bits * options.n_weights))
        text = f"<= {avg_bits:g} bits per weight"
        smallest = sum(min(c) for c in costs) / options.n_weights
        if smallest > avg_bits:
            raise ValueError(f"avg_bits {avg_bits:g} is below the smallest these bits allow: {smallest:.3f} bits "
                             "per weight (every layer at its fewest bits, scales included); raise it or allow "
                             "fewer bits")
    if not (isinstance(refine, int) and refine >= 1):
        raise ValueError(f"refine must be a positive integer; got {refine!r}")
    if method == "greedy":
        choice = greedy(costs, options.value, budget)
        return _result(engine, data, options, base, choice, text, objective, method, False)
    choices, exact = candidates(costs, options.value, budget, refine)
    plans = [_plan(engine, options, base, _bits(options, choice)) for choice in choices]
    evaluations = (backend or LocalBackend()).map(evaluate_plan, engine, data, plans)
    found = [_result(engine, data, options, base, choice, text, objective, method, exact, evaluation)
             for choice, evaluation in zip(choices, evaluations)]
    best = max(found, key=_measured)
    if len(found) > 1:
        best.notes.append(f"best measured of the knapsack's {len(found)} best choices "
                          f"(#{found.index(best) + 1} by predicted {objective})")
    return best


def _within_drop(engine: Engine, data: EvalData, options: Options, base: Plan, objective: str,
                 max_drop: float) -> Allocation:
    if not 0.0 <= max_drop <= 1.0:
        raise ValueError(f"max_drop must be a fraction from 0 to 1 (0.01 = 1 point); got {max_drop!r}")
    cost, value, choices, exact = _frontier(options.size_bytes, options.value, None, MAX_STATES)
    text = (f"perplexity increase <= {max_drop:.2%}" if task_of(data).is_lm else f"accuracy drop <= {max_drop:.2%}")

    def measure(i: int) -> Allocation:
        return _result(engine, data, options, base, choices[i].tolist(), text, objective, "knapsack", exact)

    lo, hi = 0, len(cost) - 1  # frontier: cost up, predicted objective down
    best = measure(hi)
    if _drop(best) > max_drop:
        best.notes.append(f"even the largest choice drops {_drop(best):.2%}: no smaller plan meets the limit")
        return best
    while lo < hi:  # bisection: the cheapest frontier point that still meets the limit
        mid = (lo + hi) // 2
        found = measure(mid)
        if _drop(found) <= max_drop:
            best, hi = found, mid
        else:
            lo = mid + 1
    return best


def _measured(allocation: Allocation) -> tuple[float, float, float]:
    ev = allocation.evaluation
    if ev.task == "causal_lm":
        return (-ev.perplexity, ev.agreement, -ev.kl)
    return (ev.accuracy if ev.accuracy is not None else ev.agreement, ev.agreement, -ev.kl)


def _drop(allocation: Allocation) -> float:
    ev = allocation.evaluation
    if ev.task == "causal_lm":
        return ev.perplexity / ev.float_perplexity - 1.0
    return ev.float_accuracy - ev.accuracy if ev.accuracy is not None else 1.0 - ev.agreement


def _bits(options: Options, choice: list[int]) -> dict[str, int]:
    return {name: options.bits[j][i] for j, (name, i) in enumerate(zip(options.layers, choice))}


def _plan(engine: Engine, options: Options, base: Plan, bits: dict[str, int]) -> Plan:
    """The plan of a choice: with units of layers, every layer of a unit gets its bits and the
    others keep the base's settings."""
    if not options.members:
        return mixed_plan(base, bits)
    layer_bits = {name: b for unit, b in bits.items() for name in options.members[unit]}
    plan = mixed_plan(base, layer_bits)
    for layer in engine.layers:
        if layer.name not in layer_bits:
            plan = plan.with_override(layer.name, base.config_for(layer.name))
    return plan


def _result(engine: Engine, data: EvalData, options: Options, base: Plan, choice: list[int], budget: str,
            objective: str, method: str, exact: bool, evaluation: Evaluation | None = None) -> Allocation:
    bits = _bits(options, choice)
    plan = _plan(engine, options, base, bits)
    predicted = float(sum(options.value[j][i] for j, i in enumerate(choice)))
    evaluation = evaluation if evaluation is not None else engine.evaluate(plan, data)
    return Allocation(plan, bits, budget, objective, method, exact, predicted, evaluation)
