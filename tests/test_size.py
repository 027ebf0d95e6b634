"""Size accounting against hand-computed cases (the arithmetic is written out)."""

import torch

from lightviz.core.prune import prune_mask
from lightviz.core.size import weight_size
from lightviz.core.specs import PruneSpec, QuantSpec


def test_weight_size_float_dense():
    # Linear 10x20 float32 with bias: 200 * 32 + 10 * 32 = 6720 bits = 840 bytes
    size = weight_size((10, 20), QuantSpec(bits=None), None, bias_numel=10)
    assert (size.format, size.total_bits, size.total_bytes, size.bits_per_weight) == ("dense", 6720, 840, 32.0)


def test_weight_size_int8_per_channel_symmetric():
    # 10 channels: 200 * 8 codes + 10 scales * 32 + no zero-points = 1600 + 320 = 1920; bias 320
    size = weight_size((10, 20), QuantSpec(bits=8, granularity="channel"), None, bias_numel=10)
    assert (size.value_bits, size.qparam_bits, size.index_bits, size.bias_bits) == (1600, 320, 0, 320)
    assert size.total_bytes == (1920 + 320) // 8 == 280
    assert size.bits_per_weight == 1920 / 200 == 9.6


def test_weight_size_int4_per_tensor_asymmetric():
    # 200 * 4 = 800; one block: 32-bit scale + 4-bit zero-point = 36 -> 836 bits -> ceil(836/8) = 105 bytes
    size = weight_size((10, 20), QuantSpec(bits=4, scheme="asymmetric", granularity="tensor"), None)
    assert (size.value_bits, size.qparam_bits, size.total_bytes) == (800, 36, 105)


def test_weight_size_group_with_short_tail():
    # rows of K = 20 with group 8: groups of 8, 8 and 4 -> 3 blocks/row, 10 rows -> 30 blocks
    # 3-bit asymmetric: 200 * 3 = 600 codes + 30 * (32 + 3) = 1050 qparams
    size = weight_size((10, 20), QuantSpec(bits=3, scheme="asymmetric", granularity="group", group_size=8), None)
    assert (size.value_bits, size.qparam_bits) == (600, 1050)


def test_weight_size_conv_group_spans_input_dims():
    # Conv 16x8x3x3: K = 72 per output channel; group 32 -> 32 + 32 + 8 = 3 blocks per channel = 48
    size = weight_size((16, 8, 3, 3), QuantSpec(bits=4, granularity="group", group_size=32), None)
    assert size.qparam_bits == 48 * 32 and size.value_bits == 1152 * 4


def test_weight_size_bitmask_when_cheaper_than_dense():
    # 90% sparse, 8 bits: dense = 200 * 8 = 1600; bitmask = 200 * 1 + 20 * 8 = 360 (+ 1 scale 32 both)
    weight = torch.randn(10, 20, generator=torch.Generator().manual_seed(0))
    mask = prune_mask(weight, PruneSpec(sparsity=0.9))
    size = weight_size((10, 20), QuantSpec(bits=8, granularity="tensor"), mask, PruneSpec(sparsity=0.9))
    assert (size.format, size.value_bits, size.index_bits, size.qparam_bits) == ("bitmask", 160, 200, 32)


def test_weight_size_dense_when_bitmask_costs_more():
    # 10% sparse, 2 bits: dense 200 * 2 = 400 < bitmask 200 + 180 * 2 = 560
    weight = torch.randn(10, 20, generator=torch.Generator().manual_seed(1))
    mask = prune_mask(weight, PruneSpec(sparsity=0.1))
    size = weight_size((10, 20), QuantSpec(bits=2, granularity="tensor"), mask, PruneSpec(sparsity=0.1))
    assert (size.format, size.value_bits) == ("dense", 400)


def test_weight_size_two_of_four():
    # 2:4, 4 bits, rows of K = 22: 5 full runs of 4 (2 kept each) and a dense tail of 2
    # kept = 10 * (5 * 2 + 2) = 120; n:m = 120 * 4 + (10 * 5 * 2) * log2(4) = 480 + 200 = 680
    # bitmask = 220 * 1 + 120 * 4 = 700; dense = 220 * 4 = 880 -> n:m is the cheapest
    weight = torch.randn(10, 22, generator=torch.Generator().manual_seed(2))
    spec = PruneSpec(sparsity=0.5, method="n:m")
    mask = prune_mask(weight, spec)
    assert int(mask.sum()) == 120
    size = weight_size((10, 22), QuantSpec(bits=4, granularity="tensor"), mask, spec)
    assert (size.format, size.value_bits, size.index_bits) == ("n:m", 480, 200)
    assert size.weight_bits == 680 + 32


def test_weight_size_filters_removed():
    # half of 10 filters removed, 8-bit per channel: 5 rows * 20 * 8 = 800 codes + 5 scales * 32 = 160
    weight = torch.randn(10, 20, generator=torch.Generator().manual_seed(3))
    spec = PruneSpec(sparsity=0.5, method="filter")
    size = weight_size((10, 20), QuantSpec(bits=8, granularity="channel"), prune_mask(weight, spec), spec,
                       bias_numel=10)
    assert (size.format, size.value_bits, size.qparam_bits, size.index_bits) == ("filters removed", 800, 160, 0)
    assert size.bias_bits == 320  # biases stay: a removed filter's bias still feeds the next layer


def test_weight_size_filters_removed_conv_transpose_axis():
    # ConvTranspose (C_in=4, C_out=6, 3, 3): remove 3 of 6 output channels along axis 1
    weight = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(4))
    spec = PruneSpec(sparsity=0.5, method="filter")
    mask = prune_mask(weight, spec, axis=1)
    size = weight_size((4, 6, 3, 3), QuantSpec(bits=8, granularity="channel"), mask, spec, axis=1)
    assert (size.format, size.value_bits, size.qparam_bits) == ("filters removed", 3 * 36 * 8, 3 * 32)


def test_weight_size_binary_symmetric_has_no_zero_point():
    # 1-bit symmetric: 200 bits + 10 scales (alpha) * 32
    size = weight_size((10, 20), QuantSpec(bits=1, granularity="channel"), None)
    assert (size.value_bits, size.qparam_bits) == (200, 320)
