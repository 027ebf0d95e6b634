"""The shareable report and the A/B comparison, without a browser: numbers equal the engine's,
one copy of Plotly, nothing fetched, every user string escaped, the CLI's `report` command, and
A/B deltas equal to the difference of two `evaluate` runs (also on the app's Compare page)."""

from __future__ import annotations

import json
import re
from collections import OrderedDict

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from lightviz.analysis.compare import compare_plans
from lightviz.analysis.report import collect_report, summary_sentence
from lightviz.cli import main
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import LayerConfig, plan_to_token
from lightviz.io import datasets, zoo
from lightviz.plots.report import render_report
from lightviz.ui.format import bytes_text, percent

PLOTLY_HEADER = re.compile(r"\* plotly\.js v\d+\.\d+\.\d+")
HOSTILE = '<img src=x onerror="alert(1)"></script><script>alert(2)</script>'


def numbers_of(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="lv-numbers">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


@pytest.fixture(scope="module")
def cnn():
    bundle = zoo.load_model("digits-cnn")
    return bundle, Engine(bundle.model), datasets.eval_data_for(bundle)


def test_report_numbers_equal_the_engines_and_plotly_is_inlined_once(cnn):
    bundle, engine, data = cnn
    plan = uniform_plan(3, "asymmetric", "tensor", sparsity=0.25).with_override("classifier",
                                                                                LayerConfig(keep_float=True))
    speed = {"float_ms": 2.0, "compressed_ms": 1.25, "runtime": "onnxruntime", "batch": 32}
    html = render_report(collect_report(engine, bundle, data, plan, speed=speed))
    assert "Measured speed: 2 ms → 1.25 ms per batch of 32 (onnxruntime)." in html
    expected = Engine(zoo.load_model("digits-cnn").model).evaluate(plan, data)  # a fresh engine: no shared cache
    shown = numbers_of(html)
    assert shown["evaluation"] == expected.to_dict()
    table = engine.layer_table(plan)
    assert [layer["size_bytes"] for layer in shown["layers"]] == table["size_bytes"].tolist()
    assert [layer["bits"] for layer in shown["layers"]] == [3, 3, 3, None]
    assert shown["layers"][-1]["sqnr_db"] is None  # kept float: exact (infinite), written as null
    sentence = summary_sentence(expected.compression_ratio, expected.float_accuracy, expected.accuracy, 450,
                                "held-out images")
    assert f'data-field="summary">{sentence}.' in html
    assert f"{expected.size_bytes:,} B" in html
    assert len(PLOTLY_HEADER.findall(html)) == 1, "Plotly's JavaScript must be in the file exactly once"
    assert html.count("<script") == 4  # Plotly, the numbers, the figures, the loader
    head = html.split("<script>", 1)[0]
    assert "Content-Security-Policy" in head and "default-src 'none'" in head
    outside_plotly = html.replace(html[html.index("<script>"):html.index("</script>")], "")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", outside_plotly), "nothing may be fetched"
    assert "@import" not in outside_plotly and "url(http" not in outside_plotly


def hostile_report() -> str:
    """A report of a model, layer, data and file name that are markup (and plan A: every section)."""
    model = nn.Sequential(OrderedDict([("flat", nn.Flatten()), (HOSTILE.replace(".", ""), nn.Linear(16, 4))]))
    bundle = zoo.ModelBundle(name=HOSTILE, model=model, input_shape=(16,), num_classes=4,
                             class_names=tuple("abcd"), dataset=None, kind="user", description=HOSTILE, note=HOSTILE)
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    data = EvalData(x, torch.tensor([0, 1, 2, 3] * 2), HOSTILE, HOSTILE)
    report = collect_report(Engine(model), bundle, data, uniform_plan(4), pinned=uniform_plan(8), model_arg=HOSTILE,
                            caveat=HOSTILE)
    return render_report(report)


def test_report_escapes_every_user_string():
    """A model, layer, data and file name that are markup reach the page as text only."""
    html = hostile_report()
    for raw in ("<img", "onerror=\"", "<script>alert"):
        assert raw not in html, f"unescaped {raw!r} in the report"
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html  # shown, as text


def test_cli_report_with_plan_a_and_sensitivity(tmp_path, capsys):
    """(The browser test renders a CLI report with a fine-tune section too.)"""
    out = tmp_path / "full.html"
    a = uniform_plan(8).to_json()
    code = main(["report", "--model", "digits-cnn", "--bits", "2", "--granularity", "tensor", "--sweep-bits", "2,8",
                 "--sensitivity", "2,8", "--compare-to", a, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}") and "smaller, accuracy" in printed
    html = out.read_text()
    for section in ("summary", "model", "plan", "layers", "damaged", "tradeoffs", "compare", "sensitivity",
                    "reproduce"):
        assert f'id="{section}"' in html, section
    assert 'id="training"' not in html  # not asked for
    figures = json.loads(re.search(r'id="lv-figures">(.*?)</script>', html, re.S).group(1))["figures"]
    # 2 per-layer charts, 3 damaged layers (per tensor: one histogram each), trade-off, 3 A/B, heatmap
    assert len(figures) == html.count('class="chart"') == 10
    shown = numbers_of(html)
    assert shown["comparison"]["plan_a"] == json.loads(a)
    assert "python -m lightviz evaluate --model digits-cnn --plan" in html
    assert len(PLOTLY_HEADER.findall(html)) == 1


@pytest.mark.parametrize("flags,message", [
    (["--compare-to", "{not json"], "plan is not valid JSON"),
    (["--compare-to", "missing.json"], "--compare-to: no such file"),
    (["--compare-layer", "nope"], "--compare-layer: no layer 'nope'"),
    (["--sensitivity", "2,float"], "--sensitivity takes bit-widths"),
    (["--finetune", "0"], "--finetune must be a positive integer"),
])
def test_cli_report_bad_input_is_one_line_and_exit_2(tmp_path, capsys, flags, message):
    code = main(["report", "--model", "digits-mlp", "--sweep-bits", "none", *flags, "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_cli_report_finetune_needs_a_sample_model(tmp_path, capsys):
    code = main(["report", "--model", "resnet18", "--max-samples", "2", "--sweep-bits", "none", "--finetune", "1",
                 "--out", str(tmp_path / "r.html")])
    assert code == 2 and "needs a sample model" in capsys.readouterr().err


# --- A/B ---------------------------------------------------------------------------------------

PLAN_A = uniform_plan(8)
PLAN_B = uniform_plan(3, "asymmetric", "group", group_size=16, sparsity=0.5).with_override("fc3", LayerConfig(
    keep_float=True))


def _evaluate_cli(capsys, plan) -> dict:
    assert main(["evaluate", "--model", "digits-mlp", "--plan", plan.to_json(), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_ab_deltas_equal_the_difference_of_two_evaluate_runs(capsys):
    a, b = _evaluate_cli(capsys, PLAN_A), _evaluate_cli(capsys, PLAN_B)
    bundle = zoo.load_model("digits-mlp")
    comparison = compare_plans(Engine(bundle.model), datasets.eval_data_for(bundle), PLAN_A, PLAN_B)
    for key, delta in comparison.deltas.items():
        assert delta == (b[key] - a[key] if key in b else None), key  # perplexity: a language model's only
    assert comparison.changed_layers == [layer["name"] for layer in b["layers"]]  # every layer set differently
    by_name = {layer["name"]: layer for layer in a["layers"]}
    for row in comparison.layers.itertuples():
        assert row.size_delta == next(x for x in b["layers"] if x["name"] == row.name)["size_bytes"] - \
            by_name[row.name]["size_bytes"]


def test_ab_state_survives_a_shared_link_and_the_page_shows_the_cli_deltas(capsys):
    a, b = _evaluate_cli(capsys, PLAN_A), _evaluate_cli(capsys, PLAN_B)
    at = AppTest.from_file("../app.py", default_timeout=90)
    at.query_params.update({"model": "digits-mlp", "plan": plan_to_token(PLAN_B), "a": plan_to_token(PLAN_A)})
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert at.session_state["pinned"] == ("digits-mlp", PLAN_A) and at.session_state["plan"] == PLAN_B
    assert at.query_params["a"] == [plan_to_token(PLAN_A)] or at.query_params["a"] == plan_to_token(PLAN_A)
    shown = {m.label: (m.value, m.delta) for m in at.main.metric}
    assert shown["Accuracy"] == (percent(b["accuracy"]), f"{(b['accuracy'] - a['accuracy']) * 100:+.2f} pp vs A")
    assert shown["Size"] == (bytes_text(b["size_bytes"]), f"{b['size_bytes'] - a['size_bytes']:+,} B vs A")
    assert shown["Bits per weight"][1] == f"{b['avg_bits_per_weight'] - a['avg_bits_per_weight']:+.2f} vs A"
    assert len(at.get("plotly_chart")) == 4  # SQNR, size, overlaid histogram, trade-off
    # swapping makes A current and B pinned; the link follows
    next(button for button in at.button if button.key == "ab_swap").click().run()
    assert at.session_state["plan"] == PLAN_A and at.session_state["pinned"] == ("digits-mlp", PLAN_B)


def _report_from_session_script():
    """AppTest script: the app's state, then the report the sidebar button would download."""
    import streamlit as st

    from lightviz.ui import report, state

    state.init_state()
    st.session_state["report_html"] = report.build(report.report_arguments()).decode()


def test_app_report_holds_the_sessions_sensitivity_fine_tune_sweep_and_plan_a():
    from lightviz.analysis.sensitivity import sensitivity
    from lightviz.analysis.sweep import run_sweep, sweep_configs
    from lightviz.core.evaldata import subset
    from lightviz.recover.finetune import finetune
    from lightviz.ui.finetune import Job

    bundle = zoo.load_model("digits-cnn")
    engine, data = Engine(bundle.model), datasets.eval_data_for(bundle)
    plan, pinned = uniform_plan(2), uniform_plan(4)
    result = finetune(bundle.model, plan, subset(datasets.digits_split()[0], 128), data, epochs=1)
    job = Job(kind="finetune", model_name="digits-cnn", label="int2 symm/channel", settings={"epochs": 1, "seed": 0},
              plan_json=plan.to_json(), total_epochs=1, before=result.accuracy_before,
              float_accuracy=result.float_accuracy, history=result.history, result=result)
    sweep = run_sweep(engine, data, sweep_configs([2, 8], ["symmetric"], ["tensor"], [0.0]))
    at = AppTest.from_function(_report_from_session_script, default_timeout=90)
    at.query_params.update({"model": "digits-cnn", "plan": plan_to_token(plan), "a": plan_to_token(pinned)})
    at.session_state["finetune_job"] = job
    at.session_state["sens_results"] = {"digits-cnn": {"df": sensitivity(engine, data, [2, 8], base=plan),
                                                       "bits": [2, 8]}}
    at.session_state["sweeps"] = {"digits-cnn": {"results": sweep, "data": data.description}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    html = at.session_state["report_html"]
    for section in ("compare", "sensitivity", "training", "tradeoffs"):
        assert f'id="{section}"' in html, section
    shown = numbers_of(html)
    assert shown["evaluation"] == engine.evaluate(plan, data).to_dict()
    assert shown["comparison"]["a"] == engine.evaluate(pinned, data).to_dict()
    assert "2 uniform plans of a sweep" in html
    assert "--sensitivity 2,8 --finetune 1 --seed 0" in html  # the report command repeats the sections
    assert f"accuracy {result.accuracy_before * 100:.2f} % before, {result.accuracy_after * 100:.2f} % after" in html
