"""fake_quantize against torch.ao's observers + torch's fake-quant kernels, to the bit."""

import pytest
import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from lightviz.core.layers import find_layers
from lightviz.core.quant import (
    EPS,
    block_count,
    choose_qparams,
    clip_range,
    code_range,
    dequantize,
    fake_quantize,
    quantize,
)
from lightviz.core.specs import QuantSpec
from lightviz.io import zoo

BITS = range(2, 9)
SCHEMES = ("symmetric", "asymmetric")


def reference_fake_quantize(weight, bits, scheme, granularity, axis=0):
    """torch.ao observer -> calculate_qparams -> torch.fake_quantize_per_{tensor,channel}_affine."""
    if scheme == "symmetric":
        qmin, qmax, dtype = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1, torch.qint8
        qscheme = torch.per_tensor_symmetric if granularity == "tensor" else torch.per_channel_symmetric
    else:
        qmin, qmax, dtype = 0, 2**bits - 1, torch.quint8
        qscheme = torch.per_tensor_affine if granularity == "tensor" else torch.per_channel_affine
    if granularity == "tensor":
        observer = MinMaxObserver(dtype=dtype, qscheme=qscheme, quant_min=qmin, quant_max=qmax)
        observer(weight)
        scale, zero_point = observer.calculate_qparams()
        return torch.fake_quantize_per_tensor_affine(weight, scale, zero_point.int(), qmin, qmax)
    observer = PerChannelMinMaxObserver(ch_axis=axis, dtype=dtype, qscheme=qscheme, quant_min=qmin, quant_max=qmax)
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point.int(), axis, qmin, qmax)


def random_weights():
    g = torch.Generator().manual_seed(0)
    yield "randn", torch.randn(16, 8, 3, 3, generator=g) * torch.rand(16, 1, 1, 1, generator=g) * 3
    yield "shifted", torch.randn(12, 40, generator=g) + 0.7  # all-positive-ish: zero-point matters
    yield "negative", -torch.rand(6, 20, generator=g)  # max < 0: zero must stay in range
    ties = torch.randint(-40, 41, (16, 8, 3, 3), generator=g).float() / 8  # multiples of 1/8
    yield "ties", ties
    zero_channel = torch.randn(8, 5, 3, 3, generator=g)
    zero_channel[3] = 0
    yield "zero-channel", zero_channel
    yield "all-zero", torch.zeros(4, 9)


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", BITS)
def test_fake_quantize_matches_torch_ao(bits, scheme, granularity):
    spec = QuantSpec(bits=bits, scheme=scheme, granularity=granularity)
    for label, weight in random_weights():
        expected = reference_fake_quantize(weight, bits, scheme, granularity)
        assert torch.equal(fake_quantize(weight, spec), expected), label


def test_fake_quantize_exact_ties_at_half_steps():
    # s = 1 exactly (amax 127 at 8 bits): x.5 values are exact ties, rounded half to even.
    weight = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5]])
    spec = QuantSpec(bits=8, granularity="tensor")
    assert fake_quantize(weight, spec).tolist() == [[127.0, 0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 4.0]]
    assert torch.equal(fake_quantize(weight, spec), reference_fake_quantize(weight, 8, "symmetric", "tensor"))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fake_quantize_channel_conv_transpose_axis(scheme):
    weight = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(1))  # (C_in, C_out, kh, kw)
    spec = QuantSpec(bits=4, scheme=scheme, granularity="channel")
    assert torch.equal(fake_quantize(weight, spec, axis=1), reference_fake_quantize(weight, 4, scheme, "channel", axis=1))


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-mobilenet", "digits-resnet"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_fake_quantize_every_sample_weight(name, scheme):
    model = zoo.load_model(name).model
    modules = dict(model.named_modules())
    for layer in find_layers(model):
        weight = modules[layer.name].weight.detach()
        for bits in (2, 4, 8):
            for granularity in ("tensor", "channel"):
                got = fake_quantize(weight, QuantSpec(bits=bits, scheme=scheme, granularity=granularity))
                assert torch.equal(got, reference_fake_quantize(weight, bits, scheme, granularity)), (layer.name, bits)


def test_fake_quantize_group_is_channel_of_regrouped_rows():
    weight = torch.randn(4, 10, generator=torch.Generator().manual_seed(2))
    spec = QuantSpec(bits=4, scheme="asymmetric", granularity="group", group_size=4)
    got = fake_quantize(weight, spec)
    # groups: columns 0-3, 4-7 (full), then 8-9 (the short last group of each row)
    for cols in (slice(0, 4), slice(4, 8), slice(8, 10)):
        expected = reference_fake_quantize(weight[:, cols].contiguous(), 4, "asymmetric", "channel")
        assert torch.equal(got[:, cols], expected)
    assert block_count((4, 10), spec) == len(choose_qparams(weight, spec)) == 12


def test_quantize_dequantize_roundtrip_equals_fake_quantize():
    weight = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(3))
    for spec in (QuantSpec(bits=3, scheme="asymmetric"), QuantSpec(bits=5, granularity="group", group_size=7),
                 QuantSpec(bits=1, scheme="asymmetric", granularity="tensor")):
        qparams = choose_qparams(weight, spec)
        codes = quantize(weight, spec, qparams=qparams)
        qmin, qmax = code_range(spec)
        assert codes.dtype == torch.int32 and int(codes.min()) >= qmin and int(codes.max()) <= qmax
        assert torch.equal(dequantize(codes, qparams, spec), fake_quantize(weight, spec))


def test_worked_example_from_design():
    # w in [-10, 10], 8 bits symmetric: s = 10/127, q(-5) = -64, dequantized -5.0394, max error s/2.
    weight = torch.linspace(-10, 10, 2001)
    spec = QuantSpec(bits=8, granularity="tensor")
    qparams = choose_qparams(weight, spec)
    scale = qparams.scale.item()
    assert scale == pytest.approx(10 / 127, rel=1e-7)
    assert quantize(torch.tensor([-5.0]), spec, qparams=qparams).item() == -64
    assert fake_quantize(torch.tensor([-10.0, -5.0, 10.0]), spec)[1].item() == pytest.approx(-5.0394, abs=1e-4)
    assert (fake_quantize(weight, spec) - weight).abs().max().item() <= scale / 2 + 1e-6


def test_symmetric_one_bit_is_binarization():
    weight = torch.tensor([[1.0, -3.0, 2.0, 0.0], [0.5, 0.5, -0.5, 0.5]])
    got = fake_quantize(weight, QuantSpec(bits=1, granularity="channel"))
    # sign(w) * mean|w| per row, sign(0) = +1 (XNOR-Net): a 1-bit code has two levels, never 0
    assert got.tolist() == [[1.5, -1.5, 1.5, 1.5], [0.5, 0.5, -0.5, 0.5]]
    codes = quantize(weight, QuantSpec(bits=1, granularity="channel"))
    assert codes.tolist() == [[1, -1, 1, 1], [1, 1, -1, 1]]


def test_symmetric_one_bit_keeps_pruned_weights_zero_in_the_engine():
    from torch import nn

    from lightviz.core.engine import Engine, uniform_plan

    model = nn.Sequential(nn.Linear(8, 4, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(32.0).reshape(4, 8) - 15.5)
    result = Engine(model).compress_layer(uniform_plan(1, sparsity=0.5), "0")
    assert torch.equal(result.weight_hat == 0, ~result.mask)  # pruned: exactly 0; kept: ±alpha
    assert set(result.weight_hat[result.mask].abs().unique().tolist()) <= set(result.qparams.scale.tolist())


def test_asymmetric_one_bit_two_levels():
    # range [-1, 3]: s = 4 / (2^1 - 1) = 4, z = clamp(-round(-1 / 4), 0, 1) = 0: levels 0 and 4
    weight = torch.tensor([-1.0, 0.2, 1.9, 2.1, 3.0])
    got = fake_quantize(weight, QuantSpec(bits=1, scheme="asymmetric", granularity="tensor"))
    assert got.tolist() == [0.0, 0.0, 0.0, 4.0, 4.0]


def test_zero_stays_exact_all_schemes_and_methods():
    weight = torch.randn(8, 30, generator=torch.Generator().manual_seed(4))
    weight[weight.abs() < 0.5] = 0.0
    for scheme in SCHEMES:
        for method in ("minmax", "percentile", "mse", "entropy"):
            spec = QuantSpec(bits=3, scheme=scheme, range_method=method, percentile=99.0)
            assert (fake_quantize(weight, spec)[weight == 0] == 0).all(), (scheme, method)


def test_all_zero_block_dequantizes_to_zeros_with_eps_scale():
    spec = QuantSpec(bits=8, scheme="asymmetric", granularity="channel")
    weight = torch.zeros(3, 5)
    assert torch.equal(fake_quantize(weight, spec), weight)
    assert choose_qparams(weight, spec).scale.tolist() == [EPS] * 3


def test_fake_quantize_leaves_input_untouched_and_keeps_dtype():
    weight = torch.randn(5, 7, dtype=torch.float64)
    before = weight.clone()
    out = fake_quantize(weight, QuantSpec(bits=4))
    assert torch.equal(weight, before) and out.dtype == torch.float64 and out.shape == weight.shape
    assert torch.equal(fake_quantize(weight, QuantSpec(bits=None)), weight)


def test_percentile_range_clips_outliers():
    weight = torch.cat([torch.linspace(-1, 1, 999), torch.tensor([50.0])]).reshape(1, -1)
    lo, hi = clip_range(weight, QuantSpec(bits=8, granularity="tensor", range_method="percentile", percentile=99.0))
    expected = torch.quantile(weight.abs(), 0.99).item()
    assert hi.item() == pytest.approx(expected) and lo.item() == pytest.approx(-expected)
    lo_a, hi_a = clip_range(weight, QuantSpec(bits=8, scheme="asymmetric", granularity="tensor",
                                              range_method="percentile", percentile=99.0))
    assert hi_a.item() == pytest.approx(torch.quantile(weight, 0.99).item())
    assert lo_a.item() == pytest.approx(torch.quantile(weight, 0.01).item())


@pytest.mark.parametrize("method", ["mse", "percentile"])
def test_clipping_methods_beat_minmax_on_heavy_tails(method):
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 4096, generator=g) ** 3  # heavy tails
    minmax = QuantSpec(bits=4, granularity="channel")
    clipped = QuantSpec(bits=4, granularity="channel", range_method=method, percentile=99.9)
    err_minmax = ((fake_quantize(weight, minmax) - weight) ** 2).mean()
    err_clipped = ((fake_quantize(weight, clipped) - weight) ** 2).mean()
    assert err_clipped < err_minmax
    lo, hi = clip_range(weight, clipped)
    assert (hi <= weight.amax(dim=1)).all() and (hi > 0).all()


def test_mse_range_is_best_on_its_grid():
    weight = torch.randn(1, 500, generator=torch.Generator().manual_seed(6)) ** 3
    spec = QuantSpec(bits=3, granularity="tensor", range_method="mse")
    best = ((fake_quantize(weight, spec) - weight) ** 2).sum()
    lo, hi = clip_range(weight, QuantSpec(bits=3, granularity="tensor"))
    for ratio in (0.3, 0.5, 0.8, 1.0):
        clipped = weight.clamp(lo.item() * ratio, hi.item() * ratio)
        err = ((fake_quantize(clipped, QuantSpec(bits=3, granularity="tensor")) - weight) ** 2).sum()
        assert best <= err + 1e-5


def test_high_bits_are_nearly_lossless():
    weight = torch.randn(4, 100, generator=torch.Generator().manual_seed(7))
    err = (fake_quantize(weight, QuantSpec(bits=16, scheme="asymmetric")) - weight).abs().max()
    assert err < 1e-4


@pytest.mark.parametrize("bad", [0, 17, -1, 2.5, True, "8"])
def test_bits_validation_message(bad):
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 16 or None"):
        QuantSpec(bits=bad)


def reference_entropy_amax(values, bits, start_bin=128):
    """NVIDIA pytorch-quantization's _compute_amax_entropy (calib/histogram.py), loop for loop."""
    import numpy as np

    amax = float(values.abs().max())
    bins, edges = np.histogram(values.abs().numpy(), bins=2048, range=(0, amax))
    bins = bins.astype(np.float64)
    bins[0] = bins[1]
    nbins = 1 << (bits - 1)
    divergences, arguments = [], []
    for i in range(start_bin, len(bins) + 1):
        space = np.linspace(0, i, num=nbins + 1)
        digitized = np.digitize(range(i), space) - 1
        digitized[bins[:i] == 0] = -1
        density = np.zeros(nbins)
        for idx, d in enumerate(digitized):
            if d != -1:
                density[d] += bins[idx]
        counts = np.bincount(digitized[digitized != -1], minlength=nbins)
        density = density / np.maximum(counts, 1)
        new = np.array([density[d] if d != -1 else 0.0 for d in digitized])
        reference = bins[:i].copy()
        reference[-1] += bins[i:].sum()
        p, q = reference / reference.sum(), new / new.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            divergences.append(np.where(p > 0, p * np.log(p / q), 0.0).sum())
        arguments.append(i)
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return edges[arguments[last_argmin]]


@pytest.mark.parametrize("bits", [4, 8])
def test_entropy_range_matches_reference_kl_calibration(bits):
    g = torch.Generator().manual_seed(8)
    for values in (torch.randn(1, 20000, generator=g), torch.randn(1, 5000, generator=g) ** 3,
                   torch.distributions.Laplace(0.0, 1.0).sample((1, 8000))):
        spec = QuantSpec(bits=bits, granularity="tensor", range_method="entropy")
        lo, hi = clip_range(values, spec)
        assert max(-lo.item(), hi.item()) == pytest.approx(reference_entropy_amax(values, bits), rel=1e-5)
