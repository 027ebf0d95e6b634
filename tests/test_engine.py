"""Engine: the float model is sacred, folding is exact, the cache is per layer and bounded."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lightviz.core.engine import Engine, eval_batch_size, run_model, uniform_plan
from lightviz.core.evaldata import EvalData
from lightviz.core.layers import find_layers
from lightviz.core.specs import LayerConfig, Plan, PruneSpec, QuantSpec
from lightviz.io import zoo
from lightviz.io.datasets import digits_split

SAMPLES = ["digits-mlp", "digits-cnn", "digits-mobilenet", "digits-resnet"]


@pytest.fixture(scope="module")
def test_data():
    return digits_split()[1]


def fresh(name):
    """A private copy of a sample model, so tests can't disturb the shared cached one."""
    model = zoo.build_sample(name)
    model.load_state_dict(zoo.load_model(name).model.state_dict())
    return model.eval()


@pytest.mark.parametrize("name", SAMPLES)
def test_float_model_bit_identical_after_many_compress_calls(name, test_data):
    model = fresh(name)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    engine = Engine(model)
    plans = [Plan(), uniform_plan(2, "asymmetric", "tensor", sparsity=0.5),
             uniform_plan(4, sparsity=0.5, prune_method="filter"), uniform_plan(3, sparsity=0.5, prune_method="n:m"),
             Plan(default=LayerConfig(prune=PruneSpec(0.7)), global_prune=True, fold_bn=False),
             uniform_plan(None, range_method="mse"), uniform_plan(5, granularity="group", group_size=16)]
    for plan in plans:
        engine.evaluate(plan, test_data)
        engine.compress(plan)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert not model.training


@pytest.mark.parametrize("name", ["digits-cnn", "digits-mobilenet", "digits-resnet"])
def test_bn_folding_preserves_the_function(name, test_data):
    engine = Engine(fresh(name))
    assert any(layer.bn for layer in engine.layers), "sample has BatchNorm to fold"
    folded = engine.compress(uniform_plan(None))  # float weights, BatchNorm folded into Identity
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    reference, got = run_model(engine.model, test_data.x), run_model(folded, test_data.x)
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)


def test_float_plan_without_folding_costs_exactly_the_float_size(test_data):
    engine = Engine(fresh("digits-cnn"))
    evaluation = engine.evaluate(uniform_plan(None).__class__(default=LayerConfig(quant=QuantSpec(bits=None)),
                                                              fold_bn=False), test_data)
    assert evaluation.size_bytes == evaluation.float_size_bytes == engine.float_size_bytes
    assert evaluation.accuracy == evaluation.float_accuracy and evaluation.agreement == 1.0


def test_size_bytes_int8_is_about_a_quarter(test_data):
    engine = Engine(fresh("digits-mlp"))  # no BatchNorm: every parameter is a Linear weight or bias
    evaluation = engine.evaluate(uniform_plan(8, granularity="tensor"), test_data)
    layers = engine.layers
    weights = sum(layer.n_weights for layer in layers)
    biases = sum(layer.out_channels for layer in layers)
    expected = sum(-(-(layer.n_weights * 8 + 32 + layer.out_channels * 32) // 8) for layer in layers)
    assert evaluation.size_bytes == expected
    assert evaluation.float_size_bytes == (weights + biases) * 4


def test_changing_one_layer_recomputes_only_that_layer():
    engine = Engine(fresh("digits-resnet"))
    plan = uniform_plan(4)
    engine.compress_layers(plan)
    misses = engine.stats["misses"]
    name = engine.layers[3].name
    changed = plan.with_override(name, LayerConfig(quant=QuantSpec(bits=2)))
    results = engine.compress_layers(changed)
    assert engine.stats["misses"] == misses + 1
    assert results[name].quant.bits == 2
    assert all(r.quant.bits == 4 for n, r in results.items() if n != name)


def test_cache_is_bounded_in_bytes():
    engine = Engine(fresh("digits-cnn"), cache_bytes=200_000)
    for bits in range(1, 17):
        for scheme in ("symmetric", "asymmetric"):
            engine.compress_layers(uniform_plan(bits, scheme))
    assert engine._cached_bytes <= 200_000
    assert len(engine._cache) < 16 * 2 * len(engine.layers)


def test_pruned_weights_stay_exactly_zero_after_quantization():
    engine = Engine(fresh("digits-cnn"))
    for scheme in ("symmetric", "asymmetric"):
        for method in ("unstructured", "filter", "n:m"):
            plan = uniform_plan(3, scheme, sparsity=0.5, prune_method=method)
            for result in engine.compress_layers(plan).values():
                assert result.mask is not None
                assert (result.weight_hat[~result.mask] == 0).all()


def test_global_prune_matches_global_unstructured_on_folded_weights():
    engine = Engine(fresh("digits-cnn"))
    plan = Plan(default=LayerConfig(quant=QuantSpec(bits=None), prune=PruneSpec(0.6)), global_prune=True)
    results = engine.compress_layers(plan)
    modules = []
    for layer in engine.layers:  # the reference: torch's global_unstructured over the folded weights
        module = nn.Module()
        module.weight = nn.Parameter(engine.reference_weight(layer.name, True)[0].clone())
        modules.append(module)
    torch_prune.global_unstructured([(m, "weight") for m in modules], torch_prune.L1Unstructured, amount=0.6)
    for layer, module in zip(engine.layers, modules):
        assert int((~results[layer.name].mask).sum()) == int((module.weight_mask == 0).sum())


def test_per_layer_keep_float_and_overrides(test_data):
    engine = Engine(fresh("digits-cnn"))
    first = engine.layers[0].name
    plan = uniform_plan(2).with_override(first, LayerConfig(keep_float=True))
    table = engine.layer_table(plan)
    row = table.set_index("name").loc[first]
    assert row["keep_float"] and pd_isnull(row["bits"]) and row["sqnr_db"] == float("inf")
    assert engine.evaluate(plan, test_data).size_bytes > engine.evaluate(uniform_plan(2), test_data).size_bytes


def pd_isnull(value):
    return value is None or value != value


def test_unknown_override_layer_is_refused():
    engine = Engine(fresh("digits-mlp"))
    with pytest.raises(ValueError, match="plan overrides layers this model does not have"):
        engine.compress_layers(Plan(overrides={"nope": LayerConfig()}))


def test_model_without_compressible_layers_is_refused():
    with pytest.raises(ValueError, match="no compressible layers"):
        Engine(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))


def test_layers_roles_cover_depthwise_pointwise_transposed_embedding():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False), nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, groups=2),
                          nn.ConvTranspose2d(8, 3, 2), nn.Conv1d(3, 3, 1), nn.Embedding(10, 4), nn.Linear(4, 2))
    roles = [layer.role for layer in find_layers(model)]
    assert roles == ["depthwise conv", "pointwise conv", "grouped conv", "transposed conv", "pointwise conv",
                     "embedding", "linear"]
    assert [layer.axis for layer in find_layers(model)][3] == 1


def test_depthwise_per_tensor_collapse_on_mobilenet(test_data):
    """Folded BatchNorm makes per-channel ranges differ: 4-bit per tensor loses clearly more."""
    engine = Engine(fresh("digits-mobilenet"))
    per_tensor = engine.evaluate(uniform_plan(4, granularity="tensor"), test_data)
    per_channel = engine.evaluate(uniform_plan(4, granularity="channel"), test_data)
    print(f"\ndigits-mobilenet W4 folded: per tensor {per_tensor.accuracy:.2%}, per channel "
          f"{per_channel.accuracy:.2%}, float {per_channel.float_accuracy:.2%}")
    assert per_channel.accuracy - per_tensor.accuracy >= 0.10
    assert per_channel.float_accuracy - per_channel.accuracy <= 0.05


def test_unlabeled_data_reports_fidelity_only():
    engine = Engine(fresh("digits-mlp"))
    data = EvalData(x=torch.rand(20, 1, 8, 8), y=None, name="u", description="unlabeled")
    evaluation = engine.evaluate(uniform_plan(3), data)
    assert evaluation.accuracy is None and evaluation.float_accuracy is None
    assert 0.0 <= evaluation.agreement <= 1.0 and evaluation.kl >= 0.0


def test_evaluate_reports_progress_through_each_stage_it_runs():
    engine = Engine(fresh("digits-mlp"))
    data = EvalData(x=torch.rand(600, 1, 8, 8), y=torch.randint(0, 10, (600,)), name="r", description="random")
    calls = []
    first = engine.evaluate(uniform_plan(4), data, progress=lambda fraction, text: calls.append((fraction, text)))
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0) and fractions[0] > 0
    texts = [text for _, text in calls]
    assert texts[0] == f"Compressing layers: 1 of {len(engine.layers)} layers"
    assert "Running the float model: 256 of 600 samples" in texts  # batches of eval_batch_size
    assert texts[-1] == "Running the compressed model: 600 of 600 samples"
    calls.clear()  # the float pass is cached now: only the new plan's pass runs
    engine.evaluate(uniform_plan(3), data, progress=lambda fraction, text: calls.append((fraction, text)))
    assert not any("float" in text for _, text in calls) and calls[-1][1].startswith("Running the compressed")
    assert engine.evaluate(uniform_plan(4), data) == first  # same numbers with or without a callback


def test_logits_cache_is_per_data_object_not_per_content():
    engine = Engine(fresh("digits-mlp"))
    a = EvalData(x=torch.rand(8, 1, 8, 8), y=None, name="a", description="a")
    b = EvalData(x=a.x.clone(), y=None, name="a", description="a")
    logits = engine.logits(uniform_plan(4), a)
    assert engine.cached_logits(uniform_plan(4), a) is logits
    assert engine.cached_logits(uniform_plan(4), b) is None and engine.cached_logits(None, a) is None


def test_run_model_batches_big_inputs_and_reports_samples():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 128 * 128, 5)).eval()
    x = torch.randn(300, 3, 128, 128)
    seen = []
    out = run_model(model, x, progress=lambda done, total: seen.append((done, total)))
    batch = eval_batch_size(x)
    assert batch == 85 and len(seen) == 4 and seen[-1] == (300, 300)
    with torch.inference_mode():
        assert torch.equal(out, torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]))


def test_plan_json_round_trip_and_validation():
    plan = Plan(default=LayerConfig(quant=QuantSpec(bits=3, scheme="asymmetric", granularity="group", group_size=32,
                                                    range_method="percentile", percentile=99.5),
                                    prune=PruneSpec(0.5, "n:m", m=8)),
                overrides={"a": LayerConfig(keep_float=True), "b": LayerConfig(quant=QuantSpec(bits=None))},
                global_prune=True, fold_bn=False)
    assert Plan.from_json(plan.to_json()) == plan and hash(Plan.from_json(plan.to_json())) == hash(plan)
    with pytest.raises(ValueError, match="scheme must be one of 'symmetric', 'asymmetric'; got 'sym'"):
        Plan.from_json('{"default": {"quant": {"scheme": "sym"}}}')
    with pytest.raises(ValueError, match="unknown plan keys"):
        Plan.from_json('{"bits": 4}')
    with pytest.raises(ValueError, match="not valid JSON"):
        Plan.from_json("{")


def test_run_sweep_reports_configurations_and_progress_inside_each():
    from lightviz.analysis.sweep import run_sweep, sweep_configs

    engine, data = Engine(fresh("digits-mlp")), digits_split()[1]
    plans = sweep_configs([2, 4], ["symmetric"], ["channel"], [0.0])
    done, inside = [], []
    table = run_sweep(engine, data, plans, progress=lambda i, n: done.append((i, n)),
                      detail=lambda i, fraction, text: inside.append((i, fraction, text)))
    assert done == [(1, 2), (2, 2)] and [i for i, _, _ in inside] == sorted(i for i, _, _ in inside)
    for config in (0, 1):
        last = [(fraction, text) for i, fraction, text in inside if i == config][-1]
        assert last == (pytest.approx(1.0), "Running the compressed model: 450 of 450 samples")
    assert table["accuracy"].tolist() == [engine.evaluate(plan, data).accuracy for plan in plans]
