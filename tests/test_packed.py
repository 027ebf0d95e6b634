"""The packed lightviz file: bit-exact round trip, size == the plan's size + header, damaged files
refused with one line."""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save

from lightviz.cli import main
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.specs import ActivationSpec, LayerConfig, Plan, PruneSpec, QuantSpec
from lightviz.io.bitpack import pack_fields, unpack_fields
from lightviz.io.datasets import eval_data_for
from lightviz.io.packed import header_bound, load_packed, packed_bytes, save_packed
from lightviz.io.zoo import load_model

SAMPLES = ["digits-mlp", "digits-cnn", "digits-mobilenet", "digits-resnet"]
PLANS = {  # every storage format, scheme, granularity and the float and 1-bit corners
    "int8 channel": uniform_plan(8),
    "int4 group asym": uniform_plan(4, "asymmetric", "group", group_size=7),
    "int3 tensor bitmask": uniform_plan(3, granularity="tensor", sparsity=0.6),
    "int5 asym n:m": uniform_plan(5, "asymmetric", sparsity=0.75, prune_method="n:m"),
    "int6 filters removed": uniform_plan(6, "asymmetric", "group", group_size=5, sparsity=0.5, prune_method="filter"),
    "int1 binary": uniform_plan(1),
    "int1 asym pruned": uniform_plan(1, "asymmetric", sparsity=0.3),
    "int16 tensor": uniform_plan(16, "asymmetric", "tensor"),
    "float pruned": uniform_plan(None, sparsity=0.5),
    "global, BatchNorm kept": replace(uniform_plan(2, sparsity=0.7), global_prune=True, fold_bn=False),
}


def mixed(engine: Engine) -> Plan:
    first, last = engine.layers[0].name, engine.layers[-1].name
    return Plan(default=LayerConfig(quant=QuantSpec(bits=4)),
                overrides={first: LayerConfig(keep_float=True),
                           last: LayerConfig(quant=QuantSpec(bits=8, scheme="asymmetric"),
                                             prune=PruneSpec(0.5, "n:m"))})


@pytest.mark.parametrize("name", SAMPLES)
def test_packed_round_trip_is_bit_exact_and_the_file_is_the_plans_size_plus_header(name, tmp_path):
    bundle = load_model(name)
    engine, data = Engine(bundle.model), eval_data_for(bundle, 64)
    formats = set()
    for label, plan in {**PLANS, "mixed overrides": mixed(engine)}.items():
        path = tmp_path / "m.safetensors"
        info = save_packed(engine, plan, path, name)
        assert info.size_bytes == engine.size_bytes(plan), label  # the accounting, to the byte
        assert path.stat().st_size == info.file_bytes == info.size_bytes + info.header_bytes, label
        assert info.header_bytes <= header_bound(engine, plan), label
        packed = load_packed(path)
        assert packed.plan == plan and packed.model_name == name
        results = engine.compress_layers(plan)
        for layer, result in results.items():
            formats.add(result.size.format)
            got = packed.layers[layer]
            assert torch.equal(got.weight, result.weight_hat), f"{label} {layer}"
            bias = engine.reference_weight(layer, plan.fold_bn)[1]
            assert (got.bias is None) == (bias is None) and (bias is None or torch.equal(got.bias, bias))
            assert got.nbytes == result.size.total_bytes
        model = packed.apply_to(bundle.model)
        with torch.inference_mode():
            assert torch.equal(model(data.x), engine.compress(plan)(data.x)), label
    assert formats == {"dense", "bitmask", "n:m", "filters removed"}


@pytest.mark.parametrize("scale_dtype", ["float16", "bfloat16"])
def test_a_language_model_packs_with_half_scales_and_its_tied_head_once(scale_dtype, tmp_path):
    """tiny-gpt: its embedding is tied to the LM head (stored once) and its scales are 16-bit."""
    from lightviz.core.batches import run_model
    from lightviz.io.text import lm_eval_data

    bundle = load_model("tiny-gpt")
    engine, data = Engine(bundle.model), lm_eval_data(bundle, 2, 64)
    quant = QuantSpec(bits=4, scheme="asymmetric", granularity="group", group_size=64, scale_dtype=scale_dtype)
    plan = Plan(default=LayerConfig(quant=quant))
    info = save_packed(engine, plan, tmp_path / "lm.safetensors", "tiny-gpt")
    assert info.size_bytes == engine.size_bytes(plan)
    model = load_packed(tmp_path / "lm.safetensors").apply_to(bundle.model)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    assert torch.equal(run_model(model, data.x), engine.logits(plan, data))


def test_binary_weights_that_are_exactly_zero_cannot_be_packed_in_one_bit(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code = main(["export", "--model", "digits-mlp", "--bits", "1", "--sparsity", "0.3", "--format", "lightviz",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "use 2 bits, asymmetric 1-bit" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_export_lightviz_and_inspect(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["export", "--model", "digits-cnn", "--bits", "4", "--sparsity", "0.5", "--format", "lightviz",
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes"] == out.stat().st_size == report["size_bytes"] + report["header_bytes"]
    assert report["size_bytes"] == report["plan_size_bytes"]
    plan_out = tmp_path / "plan.json"
    assert main(["inspect", str(out), "--plan-out", str(plan_out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["size_bytes"] == report["size_bytes"] and shown["wa"] == "W4A32"
    assert [layer["format"] for layer in shown["layers"]] == ["bitmask"] * 4
    assert Plan.from_json(plan_out.read_text()) == Plan.from_dict(report["plan"])


def _damaged(data: bytes) -> dict[str, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    flipped = bytearray(data)
    flipped[-5] ^= 0x40
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["layers"] = "[{"
    text = json.dumps(header).encode()
    bad_meta = struct.pack("<Q", len(text)) + text + data[8 + n:]
    return {
        "truncated": data[:-7],
        "one bit flipped": bytes(flipped),
        "empty": b"",
        "header length past the end": struct.pack("<Q", 10**15) + data[8:],
        "not JSON": struct.pack("<Q", 4) + b"\xff\xfe{[" + data[12:],
        "plain state_dict": save({"w": torch.zeros(3)}),
        "damaged layout": bad_meta,
        "extra bytes": data + b"\0\0",
    }


@pytest.mark.parametrize("kind", ["truncated", "one bit flipped", "empty", "header length past the end", "not JSON",
                                  "plain state_dict", "damaged layout", "extra bytes"])
def test_damaged_packed_files_are_refused_with_one_line(kind, tmp_path, capsys):
    engine = Engine(load_model("digits-mlp").model)
    bad = _damaged(packed_bytes(engine, uniform_plan(4, sparsity=0.5)))[kind]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bad)
    with pytest.raises(ValueError, match="is not a valid lightviz packed file"):
        load_packed(path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a valid lightviz packed file" in err[0], err


def test_bitpack_fields_of_every_width_round_trip_in_exactly_the_bits_they_need():
    rng = np.random.default_rng(0)
    for _ in range(50):
        fields = [(rng.integers(0, 1 << w, int(rng.integers(0, 40))), w)
                  for w in rng.integers(1, 33, int(rng.integers(1, 5))).tolist()]
        blob = pack_fields(fields)
        total = sum(len(v) * w for v, w in fields)
        assert len(blob) == -(-total // 8)
        back = unpack_fields(blob, [(len(v), w) for v, w in fields])
        assert all(np.array_equal(a, b) for (a, _), b in zip(fields, back))
    with pytest.raises(ValueError, match="do not fit 3 bits"):
        pack_fields([(np.array([8]), 3)])


def test_a_w8a8_packed_file_carries_its_calibrated_input_ranges():
    bundle = load_model("digits-cnn")
    engine, data = Engine(bundle.model), eval_data_for(bundle, 128)
    plan = replace(uniform_plan(8), activations=ActivationSpec(bits=8))
    with pytest.raises(ValueError, match="give evaluation data"):
        packed_bytes(engine, plan)
    packed = load_packed(packed_bytes(engine, plan, "digits-cnn", data))
    ranges = engine.activation_qparams(plan, data)
    assert {name: (item.scale, item.zero_point) for name, item in packed.activations.items()} == \
        {name: (item.scale, item.zero_point) for name, item in ranges.items()}
    with torch.inference_mode():
        assert torch.equal(packed.apply_to(bundle.model)(data.x), engine.compress(plan, data.calibration_inputs)(data.x))


def test_a_method_plan_is_refused_with_one_line_and_no_file(tmp_path, capsys):
    """GPTQ's weights are no round-to-nearest codes: export says so before writing anything."""
    out = tmp_path / "m.safetensors"
    assert main(["export", "--model", "digits-mlp", "--bits", "4", "--method", "gptq", "--format", "lightviz",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "round-to-nearest" in err and not out.exists()
