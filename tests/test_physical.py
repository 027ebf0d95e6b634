"""Physical filter pruning: the smaller model computes what the masked model computes, has the
parameters the removal plan counts, and says which filters stay masked and why."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import onnx
import pytest
import torch
from torch import nn

from lightviz.cli import main
from lightviz.core.activations import quantize_inputs_
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.specs import ActivationSpec
from lightviz.io.codes import rows_kept
from lightviz.io.datasets import eval_data_for
from lightviz.io.physical import make_physical
from lightviz.io.zoo import load_model

SAMPLES = ["digits-mlp", "digits-cnn", "digits-mobilenet", "digits-resnet"]


def outputs(engine, plan, physical, data):
    masked = engine.compress(plan, data.calibration_inputs if plan.activations is not None else None)
    smaller = physical.model
    if plan.activations is not None:
        smaller = quantize_inputs_(copy.deepcopy(smaller), engine.activation_qparams(plan, data), plan.activations)
    with torch.inference_mode():
        return masked(data.x), smaller.eval()(data.x)


@pytest.mark.parametrize("name", SAMPLES)
def test_smaller_model_equals_the_masked_model_with_the_counted_parameters(name):
    bundle = load_model(name)
    engine, data = Engine(bundle.model), eval_data_for(bundle, 128)
    for plan in (uniform_plan(8, sparsity=0.5, prune_method="filter"),
                 replace(uniform_plan(4, "asymmetric", "tensor", sparsity=0.25, prune_method="filter"),
                         fold_bn=False, activations=ActivationSpec(bits=8))):
        physical = make_physical(engine, plan, bundle.input_shape, data)
        masked, smaller = outputs(engine, plan, physical, data)
        torch.testing.assert_close(smaller, masked, rtol=1e-5, atol=1e-5)
        assert physical.params_after == sum(p.numel() for p in physical.model.parameters())
        assert physical.params_after == physical.expected_params < physical.params_before
        results = engine.compress_layers(plan)
        for layer, removed in physical.removed.items():
            pruned = int((~rows_kept(results[layer].mask, results[layer].layer)).sum())
            assert 0 < removed <= pruned
            assert (removed == pruned) == (layer not in physical.kept)
        assert engine.layers[-1].name in physical.kept  # the logits are the model's output
        assert "output needs them" in physical.kept[engine.layers[-1].name]


def test_a_chain_of_linear_layers_loses_every_pruned_filter_but_the_logits():
    bundle = load_model("digits-mlp")
    engine = Engine(bundle.model)
    plan = uniform_plan(None, sparsity=0.5, prune_method="filter")
    physical = make_physical(engine, plan, bundle.input_shape)
    assert physical.removed == {"fc1": 64, "fc2": 32}
    assert (physical.model.fc1.out_features, physical.model.fc2.in_features, physical.model.fc2.out_features,
            physical.model.fc3.in_features) == (64, 64, 32, 32)
    # 17,226 parameters - fc1's 64 rows (64 + 1 each) - fc2's 32 rows (128 + 1) - fc2's 64 columns of its 32
    # remaining rows - fc3's 32 columns of its 10 rows
    assert physical.params_after == 17226 - 64 * 65 - 32 * 129 - 64 * 32 - 32 * 10


def test_reasons_name_the_padding_and_the_residual_add():
    bundle = load_model("digits-resnet")
    engine = Engine(bundle.model)
    physical = make_physical(engine, uniform_plan(8, sparsity=0.5, prune_method="filter"), bundle.input_shape)
    reasons = " ".join(physical.kept.values())
    assert "pads its input with zeros" in reasons
    assert "residual Add whose other branch keeps those channels" in reasons


def test_a_constant_channel_reaches_a_padded_conv_only_when_it_is_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    engine = Engine(model)
    physical = make_physical(engine, uniform_plan(None, sparsity=0.5, prune_method="filter"), (1, 6, 6))
    assert physical.removed == {"0": 2}  # no bias: the pruned channels are exactly 0, the padding does not matter
    with_bias = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    with torch.no_grad():
        with_bias[0].bias.copy_(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    physical = make_physical(Engine(with_bias), uniform_plan(None, sparsity=0.5, prune_method="filter"), (1, 6, 6))
    assert physical.removed == {} and "pads its input" in physical.kept["0"]


def test_cli_physical_onnx_is_smaller_and_agrees_in_onnxruntime(tmp_path, capsys):
    path, masked = tmp_path / "physical.onnx", tmp_path / "masked.onnx"
    flags = ["--model", "digits-mlp", "--sparsity", "0.5", "--prune-method", "filter", "--format", "onnx", "--json"]
    assert main(["export", *flags, "--out", str(masked), "--no-check"]) == 0
    capsys.readouterr()
    assert main(["export", *flags, "--physical", "--out", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["check"]["agreement"] == 1.0 and report["check"]["max_logit_diff"] < 1e-4
    assert report["physical"]["removed"] == {"fc1": 64, "fc2": 32}
    weights = {init.name: tuple(init.dims) for init in onnx.load(path).graph.initializer}
    assert (weights["fc1.weight_quantized"], weights["fc2.weight_quantized"], weights["fc3.weight_quantized"]) == \
        ((64, 64), (32, 64), (10, 32))
    assert path.stat().st_size < 0.7 * masked.stat().st_size  # codes of 6,570 parameters instead of 17,226
