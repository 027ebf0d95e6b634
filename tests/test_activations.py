"""Activation quantization: calibration against torch.ao's MinMaxObserver, fake-quant against
torch's kernel, end to end against a hand-written quantized forward, plans and labels."""

import json
from dataclasses import replace

import pytest
import torch
from torch.ao.quantization.observer import MinMaxObserver

from lightviz.core import activations
from lightviz.core.activations import (
    InputFakeQuant,
    calibration_batches,
    float_plan,
    input_qparams,
    wa_label,
)
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.quant import QParams
from lightviz.core.specs import (
    ActivationSpec,
    LayerConfig,
    Plan,
    QuantSpec,
    plan_from_token,
    plan_to_token,
)
from lightviz.io import zoo
from lightviz.io.datasets import digits_split


def fresh(name):
    model = zoo.build_sample(name)
    model.load_state_dict(zoo.load_model(name).model.state_dict())
    return model.eval()


@pytest.fixture(scope="module")
def cnn():
    return Engine(fresh("digits-cnn"))


@pytest.fixture(scope="module")
def test_data():
    return digits_split()[1]


def observer_for(bits, scheme):
    """torch.ao's observer for b-bit per-tensor activations in lightviz's code ranges."""
    if scheme == "symmetric":
        half = 2 ** (bits - 1) - 1
        return MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-half, quant_max=half)
    return MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=2**bits - 1)


@pytest.mark.parametrize("scheme", ["asymmetric", "symmetric"])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_calibration_minmax_tensor_matches_minmax_observer(cnn, bits, scheme):
    """Scale and zero-point of every layer's input equal MinMaxObserver's fed the same batches."""
    spec = ActivationSpec(bits=bits, scheme=scheme, calib_batches=3, batch_size=20)
    plan = replace(uniform_plan(4), activations=spec)
    x = digits_split()[0].x
    ours = cnn.activation_qparams(plan, x)

    model = cnn.compress(float_plan(plan.fold_bn))  # the folded float model calibration runs
    modules = dict(model.named_modules())
    observers = {layer.name: observer_for(bits, scheme) for layer in cnn.layers}
    handles = [modules[name].register_forward_pre_hook(lambda m, args, o=obs: o(args[0]))
               for name, obs in observers.items()]
    with torch.inference_mode():
        for i in range(3):  # batches of 20, as the spec says
            model(x[i * 20:(i + 1) * 20])
    for handle in handles:
        handle.remove()
    assert set(ours) == set(observers)
    for name, observer in observers.items():
        scale, zero_point = observer.calculate_qparams()
        assert torch.equal(ours[name].qparams.scale, scale), name
        assert torch.equal(ours[name].qparams.zero_point, zero_point.to(torch.int32)), name
        assert ours[name].lo == float(torch.clamp_max(observer.min_val, 0))


@pytest.mark.parametrize("scheme", ["asymmetric", "symmetric"])
@pytest.mark.parametrize("bits", [8, 4, 3])
def test_activation_fake_quant_tensor_matches_torch_kernel(bits, scheme):
    """The input hook equals torch.fake_quantize_per_tensor_affine with the same qparams, to the bit."""
    g = torch.Generator().manual_seed(bits)
    x = torch.cat([torch.randn(4000, generator=g) * 3, torch.randint(-64, 65, (1000,), generator=g).float() / 16])
    stats = activations.InputStats("layer", -2.0, 5.0, x, x.numel(), 1)  # range narrower than x: saturation
    spec = ActivationSpec(bits=bits, scheme=scheme)
    item = input_qparams(stats, spec)
    qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if scheme == "symmetric" else (0, 2**bits - 1)
    expected = torch.fake_quantize_per_tensor_affine(x, item.scale, item.zero_point, qmin, qmax)
    (got,) = InputFakeQuant(spec.quant, item.qparams)(None, (x,))
    assert torch.equal(got, expected)
    assert got.unique().numel() <= qmax - qmin + 1 and (item.lo, item.hi) == (-2.0, 5.0)


def test_quantized_mlp_equals_hand_written_forward(test_data):
    """digits-mlp W8A8 = a forward that fake-quantizes each Linear's input with torch's kernel."""
    engine = Engine(fresh("digits-mlp"))
    plan = replace(uniform_plan(8), activations=ActivationSpec(bits=8))
    x = test_data.calibration_inputs
    qp = engine.activation_qparams(plan, x)
    results = engine.compress_layers(plan)
    model = engine.model

    def fq(name, h):
        return torch.fake_quantize_per_tensor_affine(h, qp[name].scale, qp[name].zero_point, 0, 255)

    def linear(name, h):
        module = dict(model.named_modules())[name]
        return torch.nn.functional.linear(fq(name, h), results[name].weight_hat, module.bias)

    with torch.inference_mode():
        h = test_data.x.flatten(1)
        h = torch.relu(linear("fc1", h))
        h = torch.relu(linear("fc2", h))
        expected = linear("fc3", h)
    assert torch.equal(engine.logits(plan, test_data), expected)


def test_w8a8_close_to_float_and_low_bits_lower(cnn, test_data):
    w8 = cnn.evaluate(uniform_plan(8), test_data)
    w8a8 = cnn.evaluate(replace(uniform_plan(8), activations=ActivationSpec(bits=8)), test_data)
    w4a4 = cnn.evaluate(replace(uniform_plan(4), activations=ActivationSpec(bits=4)), test_data)
    w2a2 = cnn.evaluate(replace(uniform_plan(2), activations=ActivationSpec(bits=2)), test_data)
    print(f"\ndigits-cnn accuracy: float {w8.float_accuracy:.4f}, W8 {w8.accuracy:.4f}, W8A8 {w8a8.accuracy:.4f} "
          f"(KL {w8a8.kl:.2g}), W4A4 {w4a4.accuracy:.4f} (KL {w4a4.kl:.2g}), W2A2 {w2a2.accuracy:.4f}")
    assert abs(w8a8.accuracy - w8a8.float_accuracy) <= 0.005 and w8a8.agreement >= 0.99 and w8a8.kl < 1e-3
    assert w4a4.kl > 10 * w8a8.kl and w4a4.agreement < w8a8.agreement
    assert w2a2.accuracy < w8a8.accuracy - 0.05
    assert w8a8.size_bytes == w8.size_bytes  # activations cost no storage


def test_float_model_has_no_hooks_and_calibration_is_cached(test_data, monkeypatch):
    model = fresh("digits-cnn")
    engine = Engine(model)
    calls = []
    original = activations.collect_input_stats
    monkeypatch.setattr(activations, "collect_input_stats", lambda *a, **k: calls.append(1) or original(*a, **k))
    spec = ActivationSpec(bits=6, range_method="percentile", percentile=99.9)
    for bits in (8, 4, 3):  # weight settings change; the calibration does not
        engine.evaluate(replace(uniform_plan(bits), activations=spec), test_data)
    engine.evaluate(replace(uniform_plan(4), activations=replace(spec, bits=4)), test_data)
    assert len(calls) == 1
    engine.evaluate(replace(uniform_plan(4), activations=replace(spec, calib_batches=2)), test_data)
    assert len(calls) == 2
    assert all(not module._forward_pre_hooks and not module._forward_hooks for module in model.modules())


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_clipping_methods_clip_inside_the_minmax_range(cnn, method):
    x = digits_split()[0].x
    plan = replace(uniform_plan(8), activations=ActivationSpec(bits=4, range_method=method))
    full = cnn.activation_qparams(replace(plan, activations=ActivationSpec(bits=4)), x)
    clipped = cnn.activation_qparams(plan, x)
    for name in full:
        assert full[name].lo <= clipped[name].lo <= 0 <= clipped[name].hi <= full[name].hi
    assert any(clipped[name].hi < full[name].hi for name in full)


def test_compress_without_calibration_inputs_explains():
    engine = Engine(fresh("digits-mlp"))
    with pytest.raises(ValueError, match="calibration inputs"):
        engine.compress(Plan(activations=ActivationSpec()))


def test_calibration_uses_the_training_split_for_digits_and_first_batches():
    train, test = digits_split()
    assert test.calibration_inputs is train.x
    batches = calibration_batches(train.x, ActivationSpec(calib_batches=3, batch_size=100))
    assert [len(b) for b in batches] == [100, 100, 100] and torch.equal(batches[1], train.x[100:200])
    assert sum(len(b) for b in calibration_batches(train.x[:50], ActivationSpec(calib_batches=4))) == 50


def test_plan_json_without_activations_still_loads_and_round_trips():
    old = json.dumps({"default": {"quant": {"bits": 4}}, "overrides": {}, "global_prune": False, "fold_bn": True})
    assert Plan.from_json(old).activations is None
    plan = Plan(activations=ActivationSpec(bits=4, range_method="entropy", calib_batches=2))
    assert Plan.from_json(plan.to_json()) == plan and plan_from_token(plan_to_token(plan)) == plan
    assert "activations" not in Plan().to_dict()  # float activations: JSON and links unchanged
    with pytest.raises(ValueError, match="invalid plan"):
        Plan.from_dict({"activations": {"bits": 8, "granularity": "channel"}})


@pytest.mark.parametrize("kwargs, message", [
    ({"bits": 0}, "activation bits must be an integer from 1 to 16"),
    ({"bits": None}, "activation bits must be an integer from 1 to 16"),
    ({"bits": 1, "scheme": "symmetric"}, "binarization"),
    ({"calib_batches": 0}, "calib_batches must be an integer from 1 to 100000; got 0"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"range_method": "kl"}, "range_method must be one of"),
])
def test_activation_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActivationSpec(**kwargs)


def test_wa_label():
    names = ["a", "b"]
    w4 = Plan(default=LayerConfig(quant=QuantSpec(bits=4)))
    assert wa_label(replace(w4, activations=ActivationSpec(bits=8))) == "W4A8"
    assert wa_label(w4) == "W4A32"  # float32 activations, as W4A16 means float16 ones
    assert wa_label(Plan(default=LayerConfig(keep_float=True), activations=ActivationSpec(bits=8))) == "W32A8"
    mixed = w4.with_override("a", LayerConfig(quant=QuantSpec(bits=8)))
    assert wa_label(mixed, names) == "W4-8A32"
    everything = mixed.with_override("b", LayerConfig(quant=QuantSpec(bits=8)))
    assert wa_label(everything, names) == "W8A32"  # the default no layer uses is ignored
    assert wa_label(w4.with_override("a", LayerConfig(keep_float=True)), names) == "W4-32A32"


def test_qparams_of_a_constant_input_are_finite():
    stats = activations.InputStats("x", 0.0, 0.0, torch.zeros(10), 10, 1)
    item = input_qparams(stats, ActivationSpec(bits=8))
    assert item.scale == torch.finfo(torch.float32).eps and item.zero_point == 0
    (out,) = InputFakeQuant(ActivationSpec().quant, item.qparams)(None, (torch.zeros(3),))
    assert torch.equal(out, torch.zeros(3))
    assert isinstance(item.qparams, QParams)
