"""CLI: `python -m lightviz` on every sample; bad input is exit 2 and one line."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightviz.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ["digits-mlp", "digits-cnn", "digits-mobilenet", "digits-resnet"]
ONE_SAMPLE = 1 / 450  # the digits test split holds 450 images


def evaluate(capsys, *flags):
    assert main(["evaluate", *flags, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", SAMPLES)
def test_cli_evaluate_int8_channel_close_to_float_and_int2_tensor_drops(name, capsys):
    int8 = evaluate(capsys, "--model", name, "--bits", "8", "--granularity", "channel")
    for key in ("accuracy", "float_accuracy", "agreement", "size_bytes", "float_size_bytes", "compression_ratio"):
        assert key in int8
    assert abs(int8["accuracy"] - int8["float_accuracy"]) <= ONE_SAMPLE + 1e-9
    assert int8["float_accuracy"] >= 0.95
    assert int8["compression_ratio"] == pytest.approx(int8["float_size_bytes"] / int8["size_bytes"])
    layer = int8["layers"][0]
    assert {"name", "bits", "scheme", "granularity", "sparsity", "sqnr_db", "mse", "size_bytes"} <= set(layer)
    int2 = evaluate(capsys, "--model", name, "--bits", "2", "--granularity", "tensor")
    print(f"{name}: float {int8['float_accuracy']:.2%}, W8 channel {int8['accuracy']:.2%}, "
          f"W2 tensor {int2['accuracy']:.2%}")
    assert int2["accuracy"] < int8["float_accuracy"] - 0.05
    assert int2["size_bytes"] < int8["size_bytes"]


def test_cli_evaluate_plan_file_and_flags(tmp_path, capsys):
    from lightviz.core.specs import LayerConfig, Plan, QuantSpec

    plan = Plan(default=LayerConfig(quant=QuantSpec(bits=4)))
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    report = evaluate(capsys, "--model", "digits-mlp", "--plan", str(path), "--sparsity", "0.5",
                      "--prune-method", "n:m")
    assert all(layer["bits"] == 4 for layer in report["layers"])
    assert report["plan"]["default"]["prune"] == {"sparsity": 0.5, "method": "n:m", "m": 4}
    assert all(layer["sparsity"] >= 0.5 for layer in report["layers"])


def test_cli_sweep_writes_one_row_per_configuration(tmp_path, capsys):
    out = tmp_path / "results.csv"
    code = main(["sweep", "--model", "digits-mlp", "--bits", "2,4,8", "--scheme", "symmetric,asymmetric",
                 "--granularity", "tensor,channel", "--sparsity", "0,0.5", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 * 2 * 2 * 2
    assert {"accuracy", "agreement", "size_bytes", "compression_ratio", "bits", "scheme"} <= set(rows[0])
    assert len({(r["bits"], r["scheme"], r["granularity"], r["sparsity"]) for r in rows}) == 24


def test_cli_models_lists_samples(capsys):
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["samples"] == SAMPLES and "resnet18" in listing["torchvision"]


@pytest.mark.parametrize("flags,message", [
    (["evaluate", "--model", "digits-cnn", "--bits", "0"], "bits must be an integer from 1 to 16"),
    (["evaluate", "--model", "digits-cnn", "--bits", "eight"], "--bits must be an integer"),
    (["evaluate", "--model", "digits-cnn", "--sparsity", "1.5"], "sparsity must be a number from 0 to 1"),
    (["evaluate", "--model", "digits-cnn", "--scheme", "sym"], "invalid choice"),
    (["evaluate", "--model", "no-such-model"], "no-such-model"),
    (["evaluate", "--model", "digits-cnn", "--plan", "/nonexistent/plan.json"], "no such file"),
    (["evaluate"], "required: --model"),
    (["sweep", "--model", "digits-cnn", "--granularity", "row", "--out", "x.csv"], "--granularity values"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_bad_input_exit_2_one_line(flags, message, capsys):
    assert main(flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lightviz: error: ") and message in err
    assert "Traceback" not in err


def test_cli_bad_plan_json(tmp_path, capsys):
    path = tmp_path / "plan.json"
    path.write_text('{"default": {"quant": {"bits": 99}}}')
    assert main(["evaluate", "--model", "digits-cnn", "--plan", str(path)]) == 2
    assert "bits must be an integer from 1 to 16" in capsys.readouterr().err


def test_python_dash_m_bad_flag_has_no_traceback():
    result = subprocess.run([sys.executable, "-m", "lightviz", "evaluate", "--model", "digits-cnn", "--bits", "99"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_cli_evaluate_draws_progress_on_a_terminal_only(capsys, monkeypatch):
    assert main(["evaluate", "--model", "digits-mlp", "--bits", "4", "--json"]) == 0
    assert capsys.readouterr().err == ""  # not a terminal: no progress line
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["evaluate", "--model", "digits-mlp", "--bits", "3", "--max-samples", "300", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_samples"] == 300
    assert "Running the float model: 256 of 300 samples" in captured.err
    assert captured.err.endswith("100% Running the compressed model: 300 of 300 samples\n")
