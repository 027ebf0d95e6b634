"""AppTest drives the Sensitivity page (heatmap, mixed precision, range methods) and Explore's
activation controls; expected numbers come from the library."""

import json
from dataclasses import replace

import pytest
from streamlit.testing.v1 import AppTest

from lightviz.analysis.sensitivity import sensitivity
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.specs import ActivationSpec
from lightviz.io import datasets, zoo

TIMEOUT = 120


def _sensitivity_page() -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    return at.switch_page("pages/sensitivity.py").run()


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_sensitivity_page_heatmap_mixed_plan_and_range_methods():
    at = _sensitivity_page()
    assert not at.exception
    pills = {pill.key: pill for pill in at.get("button_group")}
    pills["sens_bits"].set_value([2, 4, 8])
    at.selectbox(key="sens_subset").set_value(100)
    next(b for b in at.button if b.label == "Run sensitivity").click().run()
    assert not at.exception

    heatmaps = [c for c in _charts(at) if c["data"] and c["data"][0]["type"] == "heatmap"]
    assert len(heatmaps) == 2  # measured, then the gradient-predicted KL next to it
    heat = heatmaps[0]["data"][0]
    assert heatmaps[1]["data"][0]["x"] == ["2 bits", "4 bits", "8 bits"]
    assert any("Spearman" in caption.value for caption in at.caption)
    assert heat["x"] == ["2 bits", "4 bits", "8 bits"] and heat["y"][0] == "features.0.0"
    bundle = zoo.load_model("digits-cnn")
    data = datasets.eval_data_for(bundle)
    expected = sensitivity(Engine(bundle.model), data, bits=[2, 4, 8], max_samples=100)
    drop = expected.set_index(["layer", "setting"]).loc[("features.1.0", "2 bits"), "accuracy_drop"]
    assert heat["z"][1][0] == pytest.approx(drop * 100)
    assert "±" in heat["customdata"][1][0] and "KL" in heat["customdata"][1][0]

    at.button(key="mixed_run").click().run()  # default budget: 4 bits per weight
    assert not at.exception
    assert any(m.label == "W/A" for m in at.metric)
    before = at.session_state.plan
    at.button(key="mixed_apply").click().run()
    assert not at.exception
    plan = at.session_state.plan
    assert plan != before and plan.overrides  # a mixed plan: per-layer bits
    assert at.session_state.history[-1]["label"].startswith("mixed W")
    assert any("mixed plan is now the current plan" in s.value for s in at.success)

    at.radio(key="ranges_source").set_value("activations").run()
    assert not at.exception
    methods = at.dataframe[-1].value["method"].tolist()
    assert methods == ["minmax", "percentile", "mse", "entropy"]
    titles = [c["layout"]["title"]["text"] for c in _charts(at)]
    assert any(t.startswith("Input activations of") for t in titles)


def test_explore_activation_controls_set_the_plan_and_the_numbers():
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert any(e.label.startswith("Activations · W8A32") for e in at.expander)
    at.select_slider(key="act_bits").set_value(4).run()
    assert not at.exception
    assert at.session_state.plan.activations == ActivationSpec(bits=4)
    assert any(e.label.startswith("Activations · W8A4") for e in at.expander)
    bundle = zoo.load_model("digits-cnn")
    data = datasets.eval_data_for(bundle)
    expected = Engine(bundle.model).evaluate(replace(uniform_plan(8), activations=ActivationSpec(bits=4)), data)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Accuracy"] == f"{expected.accuracy * 100:.2f}%"
    at.select_slider(key="act_bits").set_value("float").run()
    assert at.session_state.plan.activations is None and not at.exception
