"""CLI: compare-methods, evaluate --method/--format, gradient sensitivity; bad input is exit 2 and one line."""

import json

import pytest

from lightviz.cli import main


def run_json(capsys, *argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_methods_json(capsys):
    report = run_json(capsys, "compare-methods", "--model", "digits-mlp", "--bits", "3", "--methods", "gptq,bias_correction")
    rows = {(row["method"], row["setting"]): row for row in report["rows"]}
    assert list(rows) == [("nearest", "W3"), ("gptq", "W3"), ("bias_correction", "W3")]
    for row in rows.values():
        assert {"accuracy", "float_accuracy", "agreement", "kl", "size_bytes", "seconds"} <= set(row)
    assert rows[("gptq", "W3")]["accuracy"] >= rows[("nearest", "W3")]["accuracy"]
    assert rows[("gptq", "W3")]["kl"] < rows[("nearest", "W3")]["kl"]
    layers = [layer for layer in report["layers"] if layer["method"] == "gptq"]
    assert [layer["layer"] for layer in layers] == ["fc1", "fc2", "fc3"] and "GPTQ" in layers[0]["method_note"]
    assert report["float_accuracy"] > 0.95 and report["float_size_bytes"] > 0


def test_evaluate_takes_method_and_format(capsys):
    report = run_json(capsys, "evaluate", "--model", "digits-mlp", "--format", "nvfp4", "--method", "gptq",
                      "--calib-samples", "64")
    assert report["plan"]["default"]["quant"]["format"] == "nvfp4"
    assert report["plan"]["default"]["method"]["name"] == "gptq"
    assert all(layer["number_format"] == "nvfp4" and "64 calibration inputs" in layer["method_note"]
               for layer in report["layers"])
    assert report["avg_bits_per_weight"] == pytest.approx(4.5, abs=0.05)  # 4 + 8/16, and the tensor scales


@pytest.mark.parametrize("argv,message", [
    (["--method", "fastest"], "unknown method 'fastest'"),
    (["--format", "mxfp4", "--bits", "3"], "stores 4 bits"),
    (["--method", "gptq", "--damp", "5"], "damp must be"),
    (["--format", "fp9"], "invalid choice"),
])
def test_bad_method_or_format_is_exit_2_and_one_line(capsys, argv, message):
    assert main(["evaluate", "--model", "digits-mlp", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sensitivity_gradient_and_allocate_on_gradients(capsys):
    report = run_json(capsys, "sensitivity", "--model", "digits-mlp", "--bits", "2,4", "--formats", "mxfp4",
                      "--gradient", "--max-samples", "200")
    assert report["rank_correlation"] > 0.5 and len(report["gradient_rows"]) == 3 * 3
    alloc = run_json(capsys, "allocate", "--model", "digits-mlp", "--avg-bits", "3", "--bits", "2,4,8",
                     "--objective", "gradient", "--max-samples", "200")
    assert alloc["objective"] == "gradient" and alloc["avg_bits_per_weight"] <= 3
