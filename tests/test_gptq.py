"""GPTQ: equal to a plain implementation of the published algorithm, never worse than
round-to-nearest on the layer's output, on random layers and on every sample model's layers."""

import pytest
import torch

import lightviz as lv
from lightviz.core.activations import float_plan
from lightviz.core.formats import FORMATS, round_elements
from lightviz.core.methods.compute import round_gptq
from lightviz.core.methods.gptq import gptq, layer_output_error
from lightviz.core.methods.grid import WeightGrid
from lightviz.core.methods.patches import hessian, patches, weight_groups
from lightviz.core.methods.spec import MethodSpec
from lightviz.core.quant import choose_qparams, code_range, fake_quantize
from lightviz.core.specs import LayerConfig, Plan, QuantSpec

SAMPLES = ["digits-mlp", "digits-cnn", "digits-mobilenet", "digits-resnet"]
SPECS = [QuantSpec(bits=4), QuantSpec(bits=3, scheme="asymmetric", granularity="group", group_size=32),
         QuantSpec(format="mxfp4"), QuantSpec(format="nf4", granularity="group", group_size=32)]


def scale_map(weight, spec, qparams):
    """(scale, zero-point) of every weight, written out for rows of full groups (K % group == 0)."""
    rows, k = weight.shape
    if spec.granularity == "channel":
        return qparams.scale.reshape(rows, 1).expand(rows, k), qparams.zero_point.reshape(rows, 1).expand(rows, k)
    group = spec.group_size
    per = qparams.scale.reshape(rows, k // group).repeat_interleave(group, dim=1)
    return per, qparams.zero_point.reshape(rows, k // group).repeat_interleave(group, dim=1)


def round_column(values, scale, zero_point, spec):
    """One column to the grid, as written in DESIGN.md (integers) or formats.py's table."""
    x = values.float()
    if spec.format != "int":
        return round_elements(x * torch.reciprocal(scale), FORMATS[spec.format]) * scale
    qmin, qmax = code_range(spec)
    return (torch.round(x * torch.reciprocal(scale)) + zero_point).clamp(qmin, qmax).sub(zero_point) * scale


def reference_gptq(weight, h, rounder, damp=0.01, act_order=False):
    """Algorithm 1 of Frantar et al. (2022), column by column: no lazy batches, one group."""
    w, h = weight.double().clone(), h.double().clone()
    k = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    order = torch.argsort(torch.diag(h), descending=True, stable=True) if act_order else torch.arange(k)
    w, h = w[:, order], h[order][:, order]
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))  # as the authors' code computes H^-1
    u = torch.linalg.cholesky(inverse, upper=True)  # H^-1 = U^T U
    q = torch.zeros_like(w)
    for i in range(k):
        q[:, i] = rounder(w[:, i], int(order[i])).double()
        error = (w[:, i] - q[:, i]) / u[i, i]
        w[:, i:] -= error[:, None] * u[i, i:][None, :]
    return q[:, torch.argsort(order)].float()


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_gptq_random_layers_equal_the_reference_and_beat_nearest(spec, act_order):
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        weight = torch.randn(24, 96, generator=g)
        x = torch.randn(256, 96, generator=g) @ (torch.eye(96) + 0.3 * torch.randn(96, 96, generator=g))  # correlated
        h = x.T.double() @ x.double()
        qparams = choose_qparams(weight, spec)
        scale, zero_point = scale_map(weight, spec, qparams)
        grid = WeightGrid.of(weight, spec, qparams)
        got = gptq(weight[None], h[None], lambda cols, idx: grid.round(cols[0], idx)[None], block_size=32,
                   act_order=act_order, dtype=torch.float64)[0]  # exact arithmetic: the same roundings
        expected = reference_gptq(weight, h, lambda col, i: round_column(col, scale[:, i], zero_point[:, i].float(),
                                                                         spec), act_order=act_order)
        assert (got - expected).abs().max().item() <= 1e-5, (seed, spec.label)
        nearest = fake_quantize(weight, spec, 0, qparams)
        assert layer_output_error(weight, got, x) <= layer_output_error(weight, nearest, x), (seed, spec.label)
        assert torch.equal(grid.round(got, slice(None)), got)  # every value is a grid value


CALIBRATION = 128  # the engine's default number of calibration inputs


@pytest.fixture(scope="module")
def layer_inputs():
    """{model: (engine, {layer: its float input on CALIBRATION images}, modules)}."""
    out = {}
    for name in SAMPLES:
        bundle = lv.load_model(name)
        engine = lv.Engine(bundle.model)
        model = engine.compress(float_plan(True))
        modules, seen = dict(model.named_modules()), {}
        for layer in engine.layers:
            modules[layer.name].register_forward_pre_hook(
                lambda module, args, n=layer.name: seen.setdefault(n, args[0].detach()))
        with torch.no_grad():
            model(lv.eval_data_for(bundle).calibration_inputs[:CALIBRATION])
        out[name] = engine, seen, modules
    return out


@pytest.mark.parametrize("name", SAMPLES)
def test_gptq_on_every_sample_layer_equals_reference_and_beats_nearest(name, layer_inputs):
    engine, inputs, modules = layer_inputs[name]
    for bits in (4, 3):
        spec = QuantSpec(bits=bits)
        for layer in engine.layers:
            module, x = modules[layer.name], inputs[layer.name]
            weight = module.weight.detach()
            qparams = choose_qparams(weight, spec)
            got = round_gptq(module, weight, None, spec, qparams, x, MethodSpec("gptq"), dtype=torch.float64)
            fast = round_gptq(module, weight, None, spec, qparams, x, MethodSpec("gptq"))  # float32, the default
            rows, x_rows = weight_groups(module, weight).double(), patches(module, x).double()  # (G, O, K), (G, n, K)
            got_rows = weight_groups(module, got).double()
            nearest_rows = weight_groups(module, fake_quantize(weight, spec, 0, qparams)).double()
            error = torch.bmm(x_rows, (rows - got_rows).transpose(1, 2)).pow(2).sum()  # ||WX - W_hat X||^2
            nearest = torch.bmm(x_rows, (rows - nearest_rows).transpose(1, 2)).pow(2).sum()
            fast_rows = weight_groups(module, fast).double()
            fast_error = torch.bmm(x_rows, (rows - fast_rows).transpose(1, 2)).pow(2).sum()
            assert error <= nearest and fast_error <= nearest, (name, layer.name, bits)
            assert fast_error <= error * 1.02, (name, layer.name, bits)  # float32 updates: the same quality
            scale = qparams.scale.reshape(rows.shape[0], rows.shape[1])
            # The reference takes the same Hessian (accumulated in float32 as the authors' code does): in
            # near-singular layers (fewer positions than columns, dead ReLUs) a float64 one would differ
            # by ~1e-7 and can move a rounding; the algorithm is what is compared here.
            hessians = hessian(module, x)
            for g in range(min(rows.shape[0], 4)):  # depthwise layers: the first groups (same code path)
                h = hessians[g]
                expected = reference_gptq(rows[g].float(), h, lambda col, i: round_column(col, scale[g], 0.0, spec))
                assert (got_rows[g].float() - expected).abs().max().item() <= 1e-5, (layer.name, g)


def test_engine_gptq_reads_the_quantized_upstream_inputs(layer_inputs):
    """The pipeline rounds fc1 on the model's input, then fc2 on what the *quantized* fc1 produces."""
    engine, _, _ = layer_inputs["digits-mlp"]
    data = lv.eval_data_for(lv.load_model("digits-mlp"))
    plan = Plan(default=LayerConfig(quant=QuantSpec(bits=3), method=MethodSpec("gptq", calib_samples=64)))
    results = engine.compress_layers(plan, calibration=data)
    model = engine.compress(float_plan(True))
    modules = dict(model.named_modules())
    x = data.calibration_inputs[:64].flatten(1)
    spec, method = QuantSpec(bits=3), MethodSpec("gptq")
    fc1 = round_gptq(modules["fc1"], modules["fc1"].weight.detach(), None, spec,
                     choose_qparams(modules["fc1"].weight.detach(), spec), x, method)
    assert torch.equal(results["fc1"].weight_hat, fc1)
    hidden = torch.relu(torch.nn.functional.linear(x, fc1, modules["fc1"].bias))
    fc2 = round_gptq(modules["fc2"], modules["fc2"].weight.detach(), None, spec,
                     choose_qparams(modules["fc2"].weight.detach(), spec), hidden, method)
    assert torch.equal(results["fc2"].weight_hat, fc2)
    assert "GPTQ on 64 calibration inputs" in results["fc2"].extras.note


def test_gptq_refuses_a_singular_hessian_without_damping():
    weight, x = torch.randn(1, 3, 8), torch.randn(1, 4, 8)  # 4 inputs for 8 columns: H is singular
    with pytest.raises(ValueError, match="raise damp"):
        gptq(weight, x.transpose(1, 2) @ x, lambda cols, idx: cols.round(), damp=0.0)


@pytest.mark.parametrize("conv", [torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
                                  torch.nn.Conv1d(3, 5, 3, stride=2, padding=1)], ids=["conv2d", "conv1d"])
def test_sampled_patches_and_hessian_equal_the_unfolded_rows(conv, monkeypatch):
    """Gathering chosen positions equals unfolding everything and indexing; over the position
    limit the Hessian is X^T X / n of exactly the seeded sample of rows."""
    from lightviz.core.methods import patches as patch_module

    x = torch.randn((3, conv.in_channels, 7, 9) if isinstance(conv, torch.nn.Conv2d) else (3, 3, 11))
    every = patches(conv, x)
    n = every.shape[1]
    chosen = patch_module.sample_positions(n, n // 3, seed=5)
    assert torch.equal(patches(conv, x, chosen), every[:, chosen])
    assert torch.allclose(hessian(conv, x), (every.transpose(1, 2) @ every).double() / n, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(patch_module, "MAX_HESSIAN_POSITIONS", n // 3)
    rows = every[:, patch_module.sample_positions(n, n // 3, seed=7)]
    assert torch.allclose(hessian(conv, x, seed=7), (rows.transpose(1, 2) @ rows).double() / rows.shape[1], rtol=1e-5)
