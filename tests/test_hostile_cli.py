"""Hostile plans and CLI edge cases, built at test time: deeply nested and oversized plan JSON
(files and link tokens), malformed overrides, `--model ""`, entropy calibration over tiny
groups, a reader that closes the pipe early, numpy's warnings, and weights near float32's
limit (3e38) whose results overflow: exit 2 and one stderr line for bad input; metrics,
qparams and histograms that cope with non-finite numbers."""

from __future__ import annotations

import base64
import math
import subprocess
import sys
import zlib

import pytest
import torch
from hostile import ROOT, cli_one_line, nested_json

from lightviz.analysis.explore import weight_histogram
from lightviz.core import metrics
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.specs import (
    MAX_PLAN_CHARS,
    MAX_PLAN_DEPTH,
    Plan,
    json_depth,
    plan_from_token,
)
from lightviz.io import zoo

# --------------------------------------------------------------------------- plans


def test_plan_from_json_deeply_nested_is_a_value_error_not_a_recursion_error():
    for text in (nested_json(100_000), "[" * 100_000, '{"a": ' * 50_000):
        with pytest.raises(ValueError, match=f"nests deeper than {MAX_PLAN_DEPTH} levels"):
            Plan.from_json(text)
    assert json_depth('{"overrides": {"fc": {"quant": {"bits": 4}}}, "x": "[[[[[[[[[[[[[[[[[["}') == 4


def test_plan_from_json_oversized_refused_before_parsing():
    with pytest.raises(ValueError, match="over the limit of 2,000,000"):
        Plan.from_json(" " * (MAX_PLAN_CHARS + 1))


def test_plan_from_token_of_a_294_character_link_and_a_zlib_bomb():
    nested = base64.urlsafe_b64encode(zlib.compress(nested_json(100_000).encode(), 9)).decode().rstrip("=")
    assert len(nested) < 400  # the probe's 294-character link
    with pytest.raises(ValueError, match="nests deeper"):
        plan_from_token(nested)
    bomb = base64.urlsafe_b64encode(zlib.compress(b" " * 10**8, 9)).decode()  # 100 MB of spaces in 130 KB
    with pytest.raises(ValueError, match="too long to be a lightviz plan"):
        plan_from_token(bomb)


@pytest.mark.parametrize("overrides, message", [
    ([["fc"]], "list of \\[layer name, config\\] pairs; got \\[\\['fc'\\]\\]"),
    ([1, 2], "overrides must map layer names"),
    ("fc", "overrides must map layer names"),
    ([["fc", {}, 3]], "overrides must map layer names"),
])
def test_plan_malformed_overrides_say_what_overrides_must_be(overrides, message):
    with pytest.raises(ValueError, match=message):
        Plan.from_dict({"overrides": overrides})


@pytest.mark.parametrize("content, expected", [
    (nested_json(100_000), "nests deeper than 16 levels"),
    ('{"overrides": [["fc1"]]}', "overrides must map layer names to layer configs"),
    (" " * (MAX_PLAN_CHARS + 1), "over the limit of 2,000,000 for a plan"),
    (b"\xff\xfe{", "is not UTF-8 text"),
])
def test_cli_bad_plan_file_exit_2_one_line(tmp_path, capsys, content, expected):
    path = tmp_path / "plan.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    err = cli_one_line(capsys, ["evaluate", "--model", "digits-mlp", "--plan", str(path), "--json"])
    assert expected in err and "plan.json" in err


# --------------------------------------------------------------------------- CLI edges


def test_cli_empty_model_name_says_what_model_takes(capsys):
    err = cli_one_line(capsys, ["evaluate", "--model", "", "--json"])
    assert "--model needs a sample name, a torchvision architecture or a model file; got an empty string" in err


def test_cli_entropy_over_tiny_groups_refused_as_the_app_does(capsys):
    for argv in (["evaluate", "--bits", "4"], ["sweep", "--bits", "4", "--out", "unused.csv"],
                 ["sensitivity", "--bits", "4"]):
        err = cli_one_line(capsys, [*argv, "--model", "digits-cnn", "--granularity", "group", "--group-size", "1",
                                     "--range-method", "entropy"])
        assert "this plan has 23,824 blocks (at most 1,000 stay interactive)" in err


def test_cli_closed_pipe_exits_quietly():
    """`python -m lightviz ... | head -1`: the reader is gone before the output is written."""
    proc = subprocess.Popen([sys.executable, "-m", "lightviz", "models"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # like head after its first line, before the child writes
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and err == "", err


# --------------------------------------------------------------------------- weights near float32's limit


@pytest.fixture(scope="module")
def extreme():
    """digits-cnn with one weight at 3e38 and one at -3e38 in a conv and in the head (the CLI's
    run of such a file is in test_hostile_files, in a child process)."""
    model = zoo.build_architecture("digits-cnn")
    model.load_state_dict(zoo.load_model("digits-cnn").model.state_dict())
    for name in ("features.1.0", "classifier"):
        dict(model.named_modules())[name].weight.data.view(-1)[:2] = torch.tensor([3e38, -3e38])
    return model.eval()


def test_metrics_in_float64_do_not_overflow_and_say_inf_or_nan():
    w = torch.tensor([3e38, -3e38, 1.0])
    assert math.isfinite(metrics.mse(w, w * 0.5)) and math.isfinite(metrics.sqnr_db(w, w * 0.5))
    assert metrics.max_abs_error(w, -w) == pytest.approx(6e38)  # float32 would say inf
    broken = torch.tensor([float("-inf"), -3e38, 1.0])
    assert metrics.sqnr_db(w, broken) == -math.inf and math.isnan(metrics.cosine_similarity(w, broken))


def test_extreme_weights_asymmetric_scale_and_histogram(extreme):
    engine = Engine(extreme)
    for plan in (uniform_plan(8, scheme="asymmetric", granularity="tensor"), uniform_plan(1, scheme="asymmetric"),
                 uniform_plan(1, scheme="symmetric"), uniform_plan(2, scheme="asymmetric", granularity="group",
                                                                    group_size=16)):
        result = engine.compress_layer(plan, "features.1.0")
        assert torch.isfinite(result.qparams.scale).all()  # hi - lo = 6e38 overflows float32: computed in float64
        for channel in (None, 0):
            hist = weight_histogram(result, channel)  # was "cannot convert float NaN to integer"
            assert hist.float_counts.sum() == (result.weight.numel() if channel is None else result.weight[0].numel())
    row = engine.layer_table(uniform_plan(8, scheme="asymmetric", granularity="tensor")).set_index("name")
    assert math.isfinite(row.loc["features.1.0", "mse"])
