"""Mixed precision: the knapsack is exact, sizes are honest, and at the size of a uniform plan
the mixed plan is at least as accurate (digits-cnn, digits-mobilenet; numbers printed)."""

import itertools

import pytest
import torch

from lightviz.analysis.mixed import (
    allocate,
    greedy,
    knapsack,
    layer_options,
    mixed_plan,
    uniform_at,
)
from lightviz.analysis.sensitivity import sensitivity
from lightviz.core.engine import Engine
from lightviz.core.specs import Plan
from lightviz.io import zoo
from lightviz.io.datasets import digits_split

BITS = [2, 3, 4, 6, 8]


def brute_force(costs, values, budget):
    best = None
    for choice in itertools.product(*(range(len(c)) for c in costs)):
        cost = sum(c[i] for c, i in zip(costs, choice))
        value = sum(v[i] for v, i in zip(values, choice))
        if cost <= budget and (best is None or value < best[0] - 1e-12):
            best = (value, choice)
    return best


def test_knapsack_equals_brute_force_on_random_instances():
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        layers, k = 1 + trial % 5, 2 + trial % 3
        costs = torch.randint(1, 50, (layers, k), generator=g).tolist()
        values = torch.rand(layers, k, generator=g).tolist()
        budget = int(sum(min(c) for c in costs) + torch.randint(0, 60, (1,), generator=g))
        choice, exact = knapsack(costs, values, budget)
        expected = brute_force(costs, values, budget)
        assert exact and sum(c[i] for c, i in zip(costs, choice)) <= budget
        assert sum(v[i] for v, i in zip(values, choice)) == pytest.approx(expected[0], abs=1e-12)


def test_knapsack_rejects_an_impossible_budget():
    with pytest.raises(ValueError, match="budget is too small"):
        knapsack([[5, 9]], [[1.0, 0.0]], budget=4)


@pytest.fixture(scope="module")
def test_data():
    return digits_split()[1]


@pytest.fixture(scope="module")
def analysed(test_data):
    """name -> (engine, sensitivity over BITS), computed once per model."""
    made = {}

    def get(name):
        if name not in made:
            engine = Engine(zoo.load_model(name).model)
            made[name] = engine, sensitivity(engine, test_data, bits=BITS)
        return made[name]

    return get


@pytest.mark.parametrize("name", ["digits-cnn", "digits-mobilenet"])
@pytest.mark.parametrize("uniform_bits", [4, 3])
def test_mixed_at_uniform_size_is_at_least_as_accurate(analysed, test_data, name, uniform_bits):
    engine, sens = analysed(name)
    uniform = engine.evaluate(uniform_at(Plan(), uniform_bits), test_data)
    mixed = allocate(engine, test_data, sens, size_bytes=uniform.size_bytes)
    plain = allocate(engine, test_data, sens, size_bytes=uniform.size_bytes, refine=1)
    ev, pv = mixed.evaluation, plain.evaluation
    print(f"\n{name} at the size of uniform {uniform_bits}-bit per-channel ({uniform.size_bytes:,} B): "
          f"uniform {uniform.accuracy:.2%} (KL {uniform.kl:.4f}); mixed {ev.accuracy:.2%} (KL {ev.kl:.4f}, "
          f"{ev.size_bytes:,} B, bits {list(mixed.bits.values())}); plain knapsack optimum {pv.accuracy:.2%} "
          f"(KL {pv.kl:.4f}); float {uniform.float_accuracy:.2%}")
    assert ev.size_bytes <= uniform.size_bytes and pv.size_bytes <= uniform.size_bytes
    assert ev.accuracy >= uniform.accuracy
    assert pv.kl <= uniform.kl  # the plain optimum is closer to the float model than uniform


@pytest.mark.parametrize("name", ["digits-cnn", "digits-mobilenet"])
def test_greedy_is_near_the_knapsack(analysed, test_data, name):
    engine, sens = analysed(name)
    options = layer_options(engine, sens, Plan())
    gaps = {}
    for bits in (4, 3):
        budget = engine.evaluate(uniform_at(Plan(), bits), test_data).size_bytes - options.rest_bytes
        best, _ = knapsack(options.size_bytes, options.value, budget)
        near = greedy(options.size_bytes, options.value, budget)
        value = [sum(v[i] for v, i in zip(options.value, choice)) for choice in (best, near)]
        assert sum(c[i] for c, i in zip(options.size_bytes, near)) <= budget
        assert value[0] <= value[1] + 1e-12  # the knapsack is optimal
        gaps[bits] = value[1] / value[0]
    print(f"\n{name}: greedy objective / knapsack objective at the 4-bit size {gaps[4]:.3f}, at 3-bit {gaps[3]:.3f}")
    assert gaps[4] <= 1.1
    if name == "digits-mobilenet":  # 12 layers: fine steps; digits-cnn's 4 layers at 3 bits are too coarse
        assert gaps[3] <= 1.1


def test_allocation_sizes_are_exact_and_budgets_hold(analysed, test_data):
    engine, sens = analysed("digits-cnn")
    options = layer_options(engine, sens, Plan())
    by_bits = engine.evaluate(uniform_at(Plan(), 3), test_data)
    result = allocate(engine, test_data, sens, avg_bits=4.0, refine=1)
    predicted = options.rest_bytes + sum(options.size_bytes[j][options.bits[j].index(b)]
                                         for j, b in enumerate(result.bits.values()))
    assert result.evaluation.size_bytes == predicted and result.evaluation.avg_bits_per_weight <= 4.0
    assert result.exact and result.method == "knapsack"
    within = allocate(engine, test_data, sens, max_drop=0.01)
    ev = within.evaluation
    assert ev.float_accuracy - ev.accuracy <= 0.01 and ev.size_bytes < by_bits.size_bytes * 1.1
    assert Plan.from_json(within.plan.to_json()) == within.plan


def test_allocate_validates_budgets(analysed, test_data):
    engine, sens = analysed("digits-cnn")
    with pytest.raises(ValueError, match="exactly one budget"):
        allocate(engine, test_data, sens, avg_bits=4, size_bytes=10_000)
    with pytest.raises(ValueError, match="avg_bits 1 is below the smallest these bits allow"):
        allocate(engine, test_data, sens, avg_bits=1)
    with pytest.raises(ValueError, match="size_bytes 100 is below the smallest plan"):
        allocate(engine, test_data, sens, size_bytes=100)
    with pytest.raises(ValueError, match="objective must be one of"):
        allocate(engine, test_data, sens, avg_bits=4, objective="loss")
    with pytest.raises(ValueError, match="no bits rows for layers"):
        allocate(engine, test_data, sens[sens["layer"] != "classifier"], avg_bits=4)


def test_mixed_plan_uses_the_most_common_bits_as_default():
    plan = mixed_plan(Plan(), {"a": 4, "b": 4, "c": 8})
    assert plan.default.quant.bits == 4 and [name for name, _ in plan.overrides] == ["c"]
    assert plan.config_for("c").quant.bits == 8 and plan.config_for("c").quant.granularity == "channel"
