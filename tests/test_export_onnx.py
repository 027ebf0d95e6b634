"""ONNX QDQ export: onnxruntime agrees with lightviz's simulation on every sample model, and the
graph stores what the plan says (integer codes, DequantizeLinear forms, containers, input Q/DQ)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lightviz.analysis.mixed import allocate
from lightviz.analysis.sensitivity import sensitivity
from lightviz.cli import main
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.evaldata import subset
from lightviz.core.specs import ActivationSpec, LayerConfig, Plan
from lightviz.io.datasets import eval_data_for
from lightviz.io.onnx_export import export_onnx
from lightviz.io.onnx_runtime import runtime_check
from lightviz.io.zoo import load_model

SAMPLES = ["digits-mlp", "digits-cnn", "digits-mobilenet", "digits-resnet"]
FLOOR = 0.995
PLANS = {
    "W8A8": replace(uniform_plan(8), activations=ActivationSpec(bits=8)),
    "W8": uniform_plan(8),
    "W4 channel": uniform_plan(4),
    "W4 group": uniform_plan(4, granularity="group", group_size=32),
}
_cache: dict = {}


def sample(name: str):
    """(bundle, engine, data) of a sample model, shared by the tests of this module."""
    if name not in _cache:
        bundle = load_model(name)
        _cache[name] = bundle, Engine(bundle.model), eval_data_for(bundle, None)
    return _cache[name]


def mixed_plan(engine, data) -> Plan:
    """A mixed-precision plan from `allocate` (4 or 8 bits per layer), on a subset for speed."""
    small = subset(data, 64)
    return allocate(engine, small, sensitivity(engine, small, bits=(4, 8)), avg_bits=6.5, refine=1).plan


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def dequantized(model: onnx.ModelProto, name: str) -> np.ndarray:
    """(codes - zero_point) * scale of a layer's weight, recomputed from the graph's initializers."""
    arrays = initializers(model)
    node = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == f"{name}.weight_quantized")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    codes = arrays[f"{name}.weight_quantized"].astype(np.float32)
    scale, zero = arrays[f"{name}.weight_scale"], arrays[f"{name}.weight_zero_point"].astype(np.float32)
    if "block_size" in attrs:
        scale = np.repeat(scale, attrs["block_size"], axis=1)[:, : codes.shape[1]]
        zero = np.repeat(zero, attrs["block_size"], axis=1)[:, : codes.shape[1]]
    elif scale.ndim == 1:
        shape = [1] * codes.ndim
        shape[attrs.get("axis", 1)] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (codes - zero) * scale


@pytest.mark.parametrize("name", SAMPLES)
def test_onnxruntime_agrees_with_lightviz_on_every_sample_model(name):
    _, engine, data = sample(name)
    plans = {**PLANS, "mixed (allocate)": mixed_plan(engine, data)}
    assert len({plans["mixed (allocate)"].config_for(layer.name).quant.bits for layer in engine.layers}) == 2
    for label, plan in plans.items():
        export = export_onnx(engine, plan, data, model_name=name)
        onnx.checker.check_model(export.model, full_check=True)
        check = runtime_check(engine, plan, data, export)
        assert check.n_samples == 450
        assert check.agreement >= FLOOR, f"{name} {label}: {check}"
        # weight-only plans run the same float arithmetic: differences are float summation order only
        assert check.max_logit_diff < (0.5 if plan.activations is not None else 1e-4), f"{name} {label}: {check}"


@pytest.mark.parametrize("name", SAMPLES)
def test_cli_export_onnx_checks_in_onnxruntime_and_writes_a_checked_model(name, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", "--model", name, "--bits", "8", "--act-bits", "8", "--format", "onnx",
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["check"]["agreement"] >= FLOOR and report["check"]["n_samples"] == 450
    assert report["bytes"] == out.stat().st_size
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert Plan.from_json(meta["lightviz.plan"]).activations == ActivationSpec(bits=8)
    assert {layer["weight"] for layer in report["layers"]} == {"int8"}
    assert all(layer["input"] == "uint8 0..255" for layer in report["layers"])


def test_weights_are_integer_codes_that_dequantize_to_the_engine_weights_exactly():
    _, engine, data = sample("digits-cnn")
    plan = Plan(default=LayerConfig(quant=uniform_plan(4).default.quant,
                                    prune=uniform_plan(4, sparsity=0.5).default.prune),
                overrides={"features.1.0": LayerConfig(quant=uniform_plan(8, "asymmetric", "group",
                                                                          group_size=20).default.quant),
                           "features.3.0": LayerConfig(quant=uniform_plan(3, granularity="tensor").default.quant),
                           "classifier": LayerConfig(keep_float=True)})
    export = export_onnx(engine, plan, data)
    rows = {row.name: row for row in export.layers}
    assert (rows["features.0.0"].weight, rows["features.0.0"].form) == ("int4", "per-axis (axis 0)")
    assert rows["features.1.0"].weight == "uint8" and rows["features.1.0"].form.startswith("blocked")
    assert (rows["features.3.0"].weight, rows["features.3.0"].codes) == ("int4", "-3..3")
    assert (rows["classifier"].weight, rows["classifier"].form) == ("float32", "float")
    arrays = initializers(export.model)
    results = engine.compress_layers(plan)
    for name in ("features.0.0", "features.1.0", "features.3.0"):
        assert str(arrays[f"{name}.weight_quantized"].dtype) == rows[name].weight  # stored in its container
        weight_hat = results[name].weight_hat.numpy()
        assert np.array_equal(dequantized(export.model, name).reshape(weight_hat.shape), weight_hat)
    pruned = ~results["features.0.0"].mask.numpy()
    assert (dequantized(export.model, "features.0.0")[pruned] == 0).all()  # pruned weights exactly zero
    assert np.array_equal(arrays["classifier.weight"], results["classifier"].weight_hat.numpy())  # float stays float


def test_one_bit_weights_are_plus_minus_one_codes_with_the_mean_magnitude_scale():
    _, engine, data = sample("digits-mlp")
    export = export_onnx(engine, uniform_plan(1), data)
    arrays = initializers(export.model)
    codes = arrays["fc1.weight_quantized"]
    assert set(np.unique(codes)) == {-1, 1}
    weight = engine.model.fc1.weight.detach()
    assert np.allclose(arrays["fc1.weight_scale"], weight.abs().mean(dim=1).numpy(), rtol=0, atol=0)  # XNOR-Net alpha
    assert export.layers[0].weight == "int4"


def test_batchnorm_is_folded_as_the_plan_says_and_activation_ranges_are_the_calibrated_ones():
    _, engine, data = sample("digits-cnn")
    plan = PLANS["W8A8"]
    folded = export_onnx(engine, plan, data)
    unfolded = export_onnx(engine, replace(plan, fold_bn=False), data)
    ops = lambda model: [node.op_type for node in model.graph.node]  # noqa: E731
    assert "BatchNormalization" not in ops(folded.model)
    assert ops(unfolded.model).count("BatchNormalization") == 3
    assert runtime_check(engine, replace(plan, fold_bn=False), data, unfolded).agreement >= FLOOR
    arrays = initializers(folded.model)
    for name, item in engine.activation_qparams(plan, data).items():
        assert float(arrays[f"{name}.input_scale"]) == item.scale
        assert int(arrays[f"{name}.input_zero_point"]) == item.zero_point


def test_narrow_activation_codes_are_clipped_into_their_range():
    _, engine, data = sample("digits-mlp")
    plan = replace(uniform_plan(8), activations=ActivationSpec(bits=4))
    export = export_onnx(engine, plan, data)
    assert all(row.input == "uint8 0..15, clipped" for row in export.layers)
    assert [n.op_type for n in export.model.graph.node].count("Clip") == 3
    check = runtime_check(engine, plan, data, export)
    assert check.agreement >= 0.98, check  # integer kernels round the bias differently at 4 bits


def test_group_needs_opset_21_and_the_refusal_names_the_alternatives(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code = main(["export", "--model", "digits-mlp", "--bits", "4", "--granularity", "group", "--group-size", "16",
                 "--format", "onnx", "--opset", "20", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--opset 21" in err[0] and "--format lightviz" in err[0] and "channel" in err[0]
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary file left
    _, engine, _ = sample("digits-mlp")
    with pytest.raises(ValueError, match="opset must be one of"):
        export_onnx(engine, uniform_plan(8), input_shape=(1, 8, 8), opset=12)


@pytest.mark.parametrize("flags,message", [
    (["--format", "onnx", "--out", "{dir}/m.bin"], "must end with .onnx"),
    (["--format", "lightviz", "--out", "{dir}/m.onnx"], "must end with .safetensors"),
    (["--format", "onnx", "--out", "{dir}/missing/m.onnx"], "does not exist"),
    (["--format", "lightviz", "--physical", "--out", "{dir}/m.safetensors"], "--physical goes with --format onnx"),
    (["--format", "onnx", "--physical", "--out", "{dir}/m.onnx"], "prunes none"),
])
def test_cli_export_refusals_are_one_line_and_leave_nothing(flags, message, tmp_path, capsys):
    code = main(["export", "--model", "digits-mlp", *[f.format(dir=tmp_path) for f in flags]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_failing_export_leaves_an_existing_file_untouched(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    assert main(["export", "--model", "digits-mlp", "--bits", "4", "--granularity", "group", "--format", "onnx",
                 "--opset", "18", "--out", str(out)]) == 2
    assert out.read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1
