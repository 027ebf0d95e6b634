"""Measured speed: the benchmark's rows, kernels and lessons, and MACs / bit-operations counted
against hand-computed values. Timings themselves are never asserted (the machine is shared)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lightviz.analysis.cost import cost_table, cost_totals
from lightviz.analysis.latency import ENGINES, WIDENED, benchmark, plan_latency
from lightviz.cli import main
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.specs import ActivationSpec, LayerConfig, Plan
from lightviz.io.datasets import eval_data_for
from lightviz.io.zoo import load_model


@pytest.fixture(scope="module")
def cnn():
    bundle = load_model("digits-cnn")
    return bundle, Engine(bundle.model), eval_data_for(bundle, 64)


def test_macs_and_bit_operations_per_layer_match_the_hand_count(cnn):
    bundle, engine, _ = cnn
    plan = Plan(default=LayerConfig(), overrides={"classifier": LayerConfig(keep_float=True)},
                activations=ActivationSpec(bits=6))
    table = cost_table(engine, plan, bundle.input_shape).set_index("name")
    # conv: output positions x C_out x C_in x k x k (8x8 maps, 3x3 kernels, padding 1); linear: in x out
    hand = {"features.0.0": 8 * 8 * 16 * 1 * 9, "features.1.0": 8 * 8 * 32 * 16 * 9,
            "features.3.0": 4 * 4 * 64 * 32 * 9, "classifier": 64 * 10}
    assert table["macs"].to_dict() == hand
    assert table.loc["features.1.0", "bit_operations"] == hand["features.1.0"] * 8 * 6
    assert table.loc["classifier", "bit_operations"] == hand["classifier"] * 32 * 6  # kept float: 32-bit weights
    totals = cost_totals(table)
    assert totals["macs"] == sum(hand.values()) and totals["float_bit_operations"] == sum(hand.values()) * 1024


def test_sparse_macs_count_what_a_zero_skipping_kernel_would_run(cnn):
    bundle, engine, _ = cnn
    table = cost_table(engine, uniform_plan(8, sparsity=0.5), bundle.input_shape)
    assert (table["sparse_macs"] - table["macs"] * 0.5).abs().max() <= table["macs"].max() * 0.01
    assert (table["sparsity"].round(2) == 0.5).all()


def test_benchmark_times_every_engine_and_explains_a_weight_only_plan(cnn):
    _, engine, data = cnn
    bench = benchmark(engine, uniform_plan(4, sparsity=0.5), data, batches=(1, 4), runs=3, warmup=1, threads=1)
    frame = bench.frame()
    assert set(frame["engine"]) == {*ENGINES, WIDENED}
    assert (frame["runs"] == 3).all() and (frame["median_ms"] > 0).all() and set(frame["batch"]) == {1, 4}
    assert set(bench.speedups()) == {1, 4} and bench.threads == 1
    assert bench.runtime_ops.get("DequantizeLinear") == 4  # integer weights dequantized at run time
    notes = " ".join(bench.notes)
    assert "Weights only" in notes and "disable_quant_qdq" in notes
    assert "no kernels that compute on 4-bit" in notes
    assert "multiplied like any other weight" in notes
    assert bench.onnx_bytes < bench.float_onnx_bytes


def test_benchmark_of_w8a8_counts_the_integer_kernels(cnn):
    _, engine, data = cnn
    plan = replace(uniform_plan(8), activations=ActivationSpec(bits=8))
    bench = benchmark(engine, plan, data, batches=(2,), runs=3, warmup=0, threads=1)
    assert bench.runtime_ops.get("QLinearConv", 0) >= 2  # convs whose output is quantized next
    assert any("compute layers ran as integer kernels" in note for note in bench.notes)
    assert bench.wa == "W8A8"
    row = plan_latency(engine, plan, data, batch=1, runs=3, warmup=0, threads=1)
    assert row.engine == ENGINES[1] and row.runs == 3 and row.median_ms > 0


def test_cli_benchmark_json_and_bad_flags(capsys):
    assert main(["benchmark", "--model", "digits-mlp", "--bits", "8", "--batch", "1,2", "--runs", "3",
                 "--warmup", "0", "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("latency", "speedup", "threads", "macs", "bit_operations", "layers", "runtime_ops", "notes",
                "onnxruntime", "load_average"):
        assert key in report, key
    assert {row["batch"] for row in report["latency"]} == {1, 2} and report["threads"] == 1
    assert report["macs"] == 64 * 128 + 128 * 64 + 64 * 10
    for flags, message in ((["--runs", "1"], "runs must be"), (["--batch", "0"], "--batch must be positive"),
                           (["--threads", "0"], "--threads must be a positive")):
        assert main(["benchmark", "--model", "digits-mlp", *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
