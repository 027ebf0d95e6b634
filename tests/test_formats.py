"""Number formats: FP8 bit-exact with torch's float8 dtypes, MX and NVFP4 block scales against
their specifications on hand-computed cases, NF4 against a brute-force nearest level, sizes."""

import math

import pytest
import torch

import lightviz as lv
from lightviz.core.formats import (
    FORMATS,
    NF4_LEVELS,
    block_scales,
    element_values,
    nvfp4_block_codes,
    round_elements,
    tensor_scale_nvfp4,
)
from lightviz.core.quant import EPS, choose_qparams, fake_quantize, quantize
from lightviz.core.size import weight_size
from lightviz.core.specs import LayerConfig, Plan, QuantSpec

FP8 = {"fp8_e4m3": (torch.float8_e4m3fn, 448.0), "fp8_e5m2": (torch.float8_e5m2, 57344.0)}


def weights():
    g = torch.Generator().manual_seed(0)
    yield torch.randn(16, 64, generator=g) * torch.exp(torch.randn(16, 1, generator=g) * 3)  # wide channel ranges
    yield torch.randn(8, 4, 3, 3, generator=g) * torch.exp(torch.randn(8, 4, 3, 3, generator=g) * 4)  # huge spread
    w = torch.randint(-64, 65, (6, 32), generator=g).float() / 7  # many ties after scaling
    w[2] = 0  # an all-zero channel
    yield w


def reference_fp8(weight, dtype, fmax, granularity, group=32):
    """The issue's convention, written out: s = max(amax / fmax, eps), cast(w * (1/s)).float() * s."""
    rows = weight.reshape(weight.shape[0], -1)
    if granularity == "tensor":
        blocks = rows.reshape(1, -1)
    elif granularity == "channel":
        blocks = rows
    else:
        blocks = rows.reshape(-1, group)
    s = torch.clamp_min(blocks.abs().amax(dim=1, keepdim=True) / fmax, EPS)
    return ((blocks * torch.reciprocal(s)).to(dtype).float() * s).reshape(weight.shape)


@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
@pytest.mark.parametrize("name", sorted(FP8))
def test_fake_quantize_fp8_is_torch_float8_roundtrip_bit_exact(name, granularity):
    dtype, fmax = FP8[name]
    for weight in weights():
        if granularity == "group" and weight[0].numel() % 32:
            continue
        spec = QuantSpec(format=name, granularity=granularity, group_size=32)
        got = lv.fake_quantize(weight, spec)
        assert torch.equal(got, reference_fp8(weight, dtype, fmax, granularity)), (name, granularity)


@pytest.mark.parametrize("name", sorted(FP8))
def test_round_elements_fp8_every_value_midpoint_and_random_equals_torch_cast(name):
    dtype, fmax = FP8[name]
    fmt = FORMATS[name]
    levels = element_values(fmt)
    midpoints = (levels[1:] + levels[:-1]) / 2  # ties: round half to even, as torch
    g = torch.Generator().manual_seed(1)
    spread = (torch.randn(200_000, generator=g) * torch.exp(torch.randn(200_000, generator=g) * 8)).clamp(-fmax, fmax)
    for values in (levels.float(), midpoints.float(), spread, torch.tensor([1e-45, -1e-42, 0.0])):  # + fp32 subnormals
        assert torch.equal(round_elements(values, fmt), values.to(dtype).float())


def test_public_face_takes_a_format_and_leaves_the_input_alone():
    weight = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    before = weight.clone()
    out = lv.fake_quantize(weight, lv.QuantSpec(format="fp8_e4m3", granularity="channel"))
    assert out.shape == weight.shape and out.dtype == weight.dtype and torch.equal(weight, before)


# --- MX (OCP Microscaling v1.0) -----------------------------------------------------------------


def mx(values, name):
    """fake_quantize of one block of 32 (values padded with zeros) and its shared scale."""
    block = torch.zeros(1, 32)
    block[0, :len(values)] = torch.tensor(values, dtype=torch.float32)
    spec = QuantSpec(format=name)
    return fake_quantize(block, spec)[0, :len(values)].tolist(), float(choose_qparams(block, spec).scale[0])


def test_mx_shared_scale_is_a_power_of_two_from_floor_log2_amax_minus_emax():
    # mxfp4 (E2M1, emax 2): amax 6 -> 2^(2-2) = 1; amax 7 -> still 2^0 and 7 saturates to 6
    assert mx([6.0, 1.0], "mxfp4") == ([6.0, 1.0], 1.0)
    assert mx([7.0, -7.5], "mxfp4") == ([6.0, -6.0], 1.0)
    # amax 0.75 -> floor(log2 0.75) = -1, scale 2^-3: 0.75 * 8 = 6 exactly
    assert mx([0.75, 0.1], "mxfp4") == ([0.75, 0.125], 0.125)
    # mxfp8 (E4M3, emax 8): amax 448 -> scale 1; amax 480 -> scale 1 and 480 saturates to 448
    assert mx([448.0, 3.0], "mxfp8") == ([448.0, 3.0], 1.0)
    assert mx([480.0], "mxfp8") == ([448.0], 1.0)
    # mxfp6 (E2M3, emax 2, max 7.5): amax 7.5 -> scale 1, 0.3 -> 0.25 (step 1/8 in the subnormals)
    assert mx([7.5, 0.3], "mxfp6") == ([7.5, 0.25], 1.0)
    # mxint8 (int8 * 2^-6, emax 0): amax 1 -> scale 1; 1.99 saturates to 127/64; amax 3 -> scale 2
    assert mx([1.0, 1.99], "mxint8") == ([1.0, 127 / 64], 1.0)
    assert mx([3.0, 0.01], "mxint8") == ([3.0, 0.0], 2.0)


def test_mx_zero_block_subnormal_elements_ties_and_e8m0_clamp():
    values, scale = mx([0.0, 0.0], "mxfp4")
    assert values == [0.0, 0.0] and scale == 2.0**-127  # an all-zero block takes the smallest E8M0
    # E2M1 subnormal 0.5: 0.25 ties between 0 and 0.5 -> even (0); 0.75 ties 0.5 / 1.0 -> even (1.0)
    assert mx([6.0, 0.25, 0.3, 0.75, 2.5, 5.0], "mxfp4")[0] == [6.0, 0.0, 0.5, 1.0, 2.0, 4.0]
    # E4M3 subnormals: step 2^-9 at scale 1; 2^-10 ties to 0, 3 * 2^-10 ties to 2^-8 (even)
    assert mx([448.0, 2**-9, 2**-10, 3 * 2**-10], "mxfp8")[0] == [448.0, 2**-9, 0.0, 2**-8]
    # a float32 subnormal amax: floor(log2) - emax is below -127, so E8M0 clamps to 2^-127
    assert block_scales(torch.tensor([1e-45]), FORMATS["mxfp4"]).item() == 2.0**-127
    top = block_scales(torch.tensor([1.5 * 2.0**127, float("inf")]), FORMATS["mxint8"])  # E8M0's largest, 2^127
    assert top.tolist() == [2.0**127, 2.0**127]


def test_mx_blocks_run_along_each_row_with_a_short_last_block():
    weight = torch.arange(1, 2 * 40 + 1, dtype=torch.float32).reshape(2, 40)  # 40 = one block of 32 + 8
    qparams = choose_qparams(weight, QuantSpec(format="mxfp4"))
    # rows' full blocks first (amax 32, 72), then the tails (amax 40, 80): scales 2^(floor(log2 amax) - 2)
    assert qparams.scale.tolist() == [8.0, 16.0, 8.0, 16.0]


# --- NVFP4 ----------------------------------------------------------------------------------------


def test_nvfp4_two_level_scales_by_hand():
    tensor_amax = torch.tensor(6.0 * 448.0)  # puts the tensor scale at exactly 1
    t = tensor_scale_nvfp4(tensor_amax)
    assert t.item() == 1.0
    amax = torch.tensor([6.0 * 448.0, 0.3 * 6 * 448, 6 * 448 * 2.0**-16, 0.0])
    codes = nvfp4_block_codes(amax, t)
    # 448 -> 448; 134.4 -> 128 (E4M3 step 16 there); 0.0068359375 = 3.5 subnormal steps of 2^-9 -> 4 (even); 0
    assert codes.tolist() == [448.0, 128.0, 4 * 2.0**-9, 0.0]
    weight = torch.zeros(4, 16)
    weight[:, 0] = amax
    weight[1, 1] = -amax[1]
    spec = QuantSpec(format="nvfp4")
    assert choose_qparams(weight, spec).scale.tolist() == codes.tolist()
    out = fake_quantize(weight, spec)
    assert out[0, 0].item() == 6.0 * 448  # 6 * 448: exact
    assert out[1, 0].item() == 6 * 128.0 and out[1, 1].item() == -6 * 128.0  # 806.4 / 128 = 6.3 saturates to 6
    assert out[3].abs().sum().item() == 0.0  # the zero block stays zero
    # a subnormal block scale 2^-7: 0.041015625 / 2^-7 = 5.25 rounds to the E2M1 element 6
    assert out[2, 0].item() == 6 * 2.0**-7


def test_nvfp4_tensor_scale_is_the_whole_tensor_amax():
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(8, 48, generator=g)
    spec = QuantSpec(format="nvfp4")
    t = tensor_scale_nvfp4(weight.abs().max())
    amax = weight.reshape(-1, 16).abs().amax(dim=1)
    assert torch.equal(choose_qparams(weight, spec).scale, nvfp4_block_codes(amax, t) * t)
    assert choose_qparams(weight, spec).scale.max() <= 448 * t * (1 + 1e-6)


# --- NF4 ------------------------------------------------------------------------------------------


def test_nf4_is_the_nearest_qlora_level_times_absmax():
    g = torch.Generator().manual_seed(4)
    weight = torch.randn(5, 64, generator=g)
    spec = QuantSpec(format="nf4", granularity="group", group_size=64)
    out = fake_quantize(weight, spec)
    levels = torch.tensor(NF4_LEVELS)
    absmax = weight.abs().amax(dim=1, keepdim=True)
    nearest = levels[(weight / absmax).unsqueeze(-1).sub(levels).abs().argmin(dim=-1)] * absmax
    assert torch.allclose(out, nearest, rtol=0, atol=1e-6)
    assert len(NF4_LEVELS) == 16 and NF4_LEVELS[7] == 0.0 and NF4_LEVELS[0] == -1.0 and NF4_LEVELS[-1] == 1.0


# --- specs, sizes, integer-only functions -----------------------------------------------------


def test_formats_set_what_they_fix_and_refuse_what_they_cannot_do():
    assert QuantSpec(format="mxfp4").bits == 4 and QuantSpec(format="mxfp4").granularity == "group"
    assert QuantSpec(format="nvfp4").group_size == 16 and QuantSpec(format="fp8_e5m2", bits=3).bits == 8
    assert QuantSpec(format="fp8_e4m3", bits=None).bits is None  # None still keeps a tensor float
    assert QuantSpec(format="nf4", scheme="asymmetric").scheme == "symmetric"
    with pytest.raises(ValueError, match="format must be one of"):
        QuantSpec(format="fp7")
    with pytest.raises(ValueError, match="entropy"):
        QuantSpec(format="fp8_e4m3", range_method="entropy")
    with pytest.raises(ValueError, match="integer codes"):
        quantize(torch.ones(2, 2), QuantSpec(format="mxfp4"))


def test_plans_keep_the_format_and_old_plans_load_unchanged():
    plan = Plan(default=LayerConfig(quant=QuantSpec(format="nvfp4")))
    assert Plan.from_json(plan.to_json()) == plan
    old = Plan().to_dict()  # a plan saved before formats and methods existed has neither key
    assert "format" not in old["default"]["quant"] and "method" not in old["default"]
    assert Plan.from_dict(old) == Plan()


@pytest.mark.parametrize("name,value_bits,scale_bits,tensor_bits,blocks", [
    ("fp8_e4m3", 8, 32, 0, 64), ("fp8_e5m2", 8, 32, 0, 64), ("nf4", 4, 32, 0, 64),
    ("mxfp8", 8, 8, 0, 64 * 4), ("mxfp6", 6, 8, 0, 64 * 4), ("mxfp4", 4, 8, 0, 64 * 4), ("mxint8", 8, 8, 0, 64 * 4),
    ("nvfp4", 4, 8, 32, 64 * 7)])
def test_size_of_each_format_by_hand(name, value_bits, scale_bits, tensor_bits, blocks):
    # (64, 100): per channel 64 blocks; MX: ceil(100 / 32) = 4 per row; NVFP4: ceil(100 / 16) = 7 per row
    size = weight_size((64, 100), QuantSpec(format=name), None, bias_numel=64)
    assert size.value_bits == 6400 * value_bits
    assert size.qparam_bits == blocks * scale_bits + tensor_bits
    assert size.total_bits == 6400 * value_bits + blocks * scale_bits + tensor_bits + 64 * 32
    assert math.isclose(size.bits_per_weight, value_bits + (blocks * scale_bits + tensor_bits) / 6400)


def test_engine_layer_size_matches_the_accounting_for_formats():
    bundle = lv.load_model("digits-mlp")
    engine = lv.Engine(bundle.model)
    for name in ("mxfp4", "nvfp4", "fp8_e4m3"):
        table = engine.layer_table(Plan(default=LayerConfig(quant=QuantSpec(format=name))))
        for row in table.itertuples():
            shape = tuple(int(d) for d in row.shape.split("x"))
            expected = weight_size(shape, QuantSpec(format=name), None, bias_numel=shape[0])
            assert row.size_bytes == expected.total_bytes and row.number_format == name
