"""AppTest drives the Methods page and Explore's number format and method controls."""

import json

from streamlit.testing.v1 import AppTest

from lightviz.core.specs import plan_from_token


def _url_plan(at):
    token = at.query_params["plan"]
    return plan_from_token(token if isinstance(token, str) else token[0])

TIMEOUT = 180


def _app() -> AppTest:
    return AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()


def test_methods_page_compares_against_nearest():
    at = _app().switch_page("pages/methods.py").run()
    assert not at.exception
    at.multiselect(key="methods_pick").set_value(["gptq"])
    pills = {pill.key: pill for pill in at.get("button_group")}
    pills["methods_bits"].set_value([3])
    next(b for b in at.button if b.label == "Compare methods").click().run()
    assert not at.exception and not at.error
    summary = at.dataframe[0].value
    assert summary["method"].tolist() == ["nearest", "gptq"]
    assert summary["W3 vs nearest (pp)"].tolist()[0] == 0 and summary["W3 accuracy %"].tolist()[1] > 90
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert len(charts) == 3 and {trace["name"] for trace in charts[0]["data"]} == {"nearest", "gptq"}
    at.radio(key="methods_layer_value").set_value("weights").run()
    assert not at.exception


def test_explore_format_and_method_controls_set_the_plan():
    at = _app()
    at.selectbox(key="num_format").set_value("mxfp4").run()
    assert not at.exception
    plan = _url_plan(at)
    assert plan.default.quant.format == "mxfp4" and plan.default.quant.bits == 4
    assert plan.default.quant.granularity == "group" and plan.default.quant.group_size == 32
    at.selectbox(key="method_name").set_value("gptq").run()
    assert not at.exception and not at.error
    plan = _url_plan(at)
    assert plan.default.method.name == "gptq"
    assert at.session_state["plan"] == plan  # the URL shares the session's plan
    at.selectbox(key="num_format").set_value("int").run()  # back to integers keeps 4 bits and the groups
    plan = _url_plan(at)
    assert plan.default.quant.format == "int" and plan.default.quant.bits == 4
    assert plan.default.method.name == "gptq"
    at.selectbox(key="method_name").set_value("nearest").run()
    assert _url_plan(at).default.method.name == "nearest"
