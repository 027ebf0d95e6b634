"""AppTest drives every page on the sample language model: perplexity metrics against the engine,
bits, presets and the embeddings toggle, generated text, outliers, sensitivity per block with
its allocation, Trade-offs in perplexity, Fine-tune's form and Learn."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from lightviz.analysis import generate
from lightviz.core.engine import Engine
from lightviz.core.specs import Plan
from lightviz.core.task import LM, WEIGHT_ONLY_PRESETS, with_float_embeddings
from lightviz.io import text, zoo

TIMEOUT = 180


@pytest.fixture(scope="module")
def reference():
    bundle = zoo.load_model("tiny-gpt")
    engine = Engine(bundle.model)
    return engine, text.lm_eval_data(bundle)


def _metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_explore_on_the_sample_lm(reference):
    engine, data = reference
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.query_params["model"] = "tiny-gpt"
    at.run()
    _clean(at)
    plan = at.session_state["plan"]
    assert plan == with_float_embeddings(Plan(), engine.layers)  # embeddings and tied head stay float
    expected = engine.evaluate(plan, data)
    shown = _metrics(at)
    assert shown["Perplexity"] == LM.format(expected.perplexity)
    assert shown["Bits per weight"] == f"{expected.quantized_bits_per_weight:.3f}"
    assert "Float perplexity" in at.sidebar.markdown[0].value or any(
        "Float perplexity" in m.value for m in at.sidebar.markdown)
    expected_text = generate.compare_generation(engine, plan, zoo.load_model("tiny-gpt").tokenizer)
    float_text, compressed_text = (code.value for code in at.code[:2])
    assert (float_text, compressed_text) == (expected_text.prompt + expected_text.float_text,
                                             expected_text.prompt + expected_text.compressed_text)

    at.selectbox(key="lm_preset").set_value("W2 group 64").run()
    _clean(at)
    plan = at.session_state["plan"]
    assert plan.default.quant == WEIGHT_ONLY_PRESETS["W2 group 64"]
    two_bits = engine.evaluate(plan, data)
    assert _metrics(at)["Perplexity"] == LM.format(two_bits.perplexity) and two_bits.perplexity > 2 * expected.perplexity
    float_text, compressed_text = (code.value for code in at.code[:2])
    assert float_text != compressed_text  # 2 bits change the model's words

    at.toggle(key="lm_embeddings").set_value(True).run()  # compress the embedding (and its tied head) too
    _clean(at)
    assert not at.session_state["plan"].config_for("transformer.wte").keep_float
    at.selectbox(key="scale_dtype").set_value("bfloat16").run()
    _clean(at)
    assert at.session_state["plan"].default.quant.scale_dtype == "bfloat16"
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert any("Outlier ratio" in c["layout"]["title"]["text"] for c in charts)


def test_other_pages_on_the_sample_lm(reference):
    engine, data = reference
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.query_params["model"] = "tiny-gpt"
    at.run()
    at.switch_page("pages/sensitivity.py").run()
    _clean(at)
    at.button_group(key="sens_bits").set_value([2, 8])
    next(b for b in at.button if b.label == "Run sensitivity").click().run()
    _clean(at)
    heat = next(json.loads(c.proto.spec)["data"][0] for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["data"][0]["type"] == "heatmap")
    assert heat["y"] == [f"transformer.h.{i}" for i in range(4)]  # per block by default
    assert all(row[0] > row[1] for row in heat["z"])  # 2 bits hurt more than 8, in perplexity
    at.button(key="mixed_run").click().run()  # 4 bits per quantized weight
    _clean(at)
    assert any(m.label == "Perplexity" for m in at.metric)

    at.switch_page("pages/tradeoffs.py").run()
    _clean(at)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["yaxis"]["type"] == "log" and "perplexity" in chart["layout"]["yaxis"]["title"]["text"]
    at.switch_page("pages/finetune.py").run()
    _clean(at)
    assert any("Training sequences" == s.label for s in at.selectbox)
    at.switch_page("pages/learn.py").run()
    _clean(at)

    at.switch_page("pages/explore.py").run()
    next(b for b in at.sidebar.button if b.label == "Pin this plan as A").click().run()
    at.selectbox(key="lm_preset").set_value("W2 group 64").run()
    at.switch_page("pages/compare.py").run()
    _clean(at)
    a, b = engine.evaluate(at.session_state["pinned"][1], data), engine.evaluate(at.session_state["plan"], data)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Perplexity"] == LM.format(b.perplexity) and b.perplexity > a.perplexity
