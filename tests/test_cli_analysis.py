"""CLI: evaluate with activation flags, sensitivity and allocate; bad input is exit 2, one line."""

import json
from dataclasses import replace

import pytest

from lightviz.cli import main
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.specs import ActivationSpec, Plan
from lightviz.io import zoo
from lightviz.io.datasets import eval_data_for


def run_json(capsys, *argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_evaluate_act_bits_prints_wa_and_matches_the_library(capsys):
    report = run_json(capsys, "evaluate", "--model", "digits-cnn", "--bits", "4", "--act-bits", "8",
                      "--act-range-method", "percentile", "--calib-batches", "2")
    spec = ActivationSpec(bits=8, range_method="percentile", calib_batches=2)
    assert report["wa"] == "W4A8" and report["plan"]["activations"]["calib_batches"] == 2
    bundle = zoo.load_model("digits-cnn")
    expected = Engine(bundle.model).evaluate(replace(uniform_plan(4), activations=spec), eval_data_for(bundle))
    assert (report["accuracy"], report["kl"]) == (expected.accuracy, expected.kl)
    assert [r["name"] for r in report["activation_ranges"]] == ["features.0.0", "features.1.0", "features.3.0",
                                                                "classifier"]
    plain = run_json(capsys, "evaluate", "--model", "digits-cnn", "--bits", "4")
    assert plain["wa"] == "W4A32" and "activation_ranges" not in plain and "activations" not in plain["plan"]


def test_cli_sensitivity_json(capsys):
    report = run_json(capsys, "sensitivity", "--model", "digits-mlp", "--bits", "2,8", "--sparsity", "0.5",
                      "--max-samples", "120")
    assert report["settings"] == ["2 bits", "8 bits", "50% sparse"] and report["n_samples"] == 120
    assert len(report["rows"]) == 3 * 3 and report["reused_activations"] is True
    row = report["rows"][0]
    assert {"layer", "setting", "accuracy", "accuracy_drop", "accuracy_se", "kl", "size_bytes"} <= set(row)


def test_cli_allocate_writes_a_plan_that_evaluate_reproduces(tmp_path, capsys):
    out = tmp_path / "mixed.json"
    report = run_json(capsys, "allocate", "--model", "digits-cnn", "--avg-bits", "4", "--out", str(out))
    plan = Plan.from_json(out.read_text())
    assert Plan.from_dict(report["plan"]) == plan and report["avg_bits_per_weight"] <= 4
    assert set(report["bits"]) == {"features.0.0", "features.1.0", "features.3.0", "classifier"}
    again = run_json(capsys, "evaluate", "--model", "digits-cnn", "--plan", str(out))
    assert (again["accuracy"], again["size_bytes"]) == (report["accuracy"], report["size_bytes"])
    assert again["wa"] == report["wa"] and report["wa"].startswith("W")


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--model", "digits-cnn", "--act-bits", "0"], "activation bits must be an integer from 1 to 16"),
    (["evaluate", "--model", "digits-cnn", "--act-bits", "eight"], "--act-bits must be an integer"),
    (["evaluate", "--model", "digits-cnn", "--calib-batches", "2"], "need --act-bits"),
    (["sensitivity", "--model", "digits-cnn", "--bits", "2,float"], "--bits lists bit-widths"),
    (["allocate", "--model", "digits-mlp"], "one of the arguments --avg-bits --size-bytes --max-drop is required"),
    (["allocate", "--model", "digits-mlp", "--avg-bits", "4", "--size-bytes", "9000"], "not allowed with"),
    (["allocate", "--model", "digits-mlp", "--avg-bits", "1"], "avg_bits 1 is below the smallest"),
])
def test_cli_analysis_bad_input_exit_2_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
