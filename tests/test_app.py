"""AppTest drives the Explore and Trade-offs pages; expected numbers come from the library."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.specs import LayerConfig, Plan, QuantSpec, plan_to_token
from lightviz.io import datasets, zoo
from lightviz.ui.format import bytes_text, human_bytes, percent
from lightviz.ui.text import plain

TIMEOUT = 60


@pytest.fixture(scope="module")
def reference():
    """name -> (engine, eval data), built independently of the app's cached copies."""
    made = {}

    def get(name):
        if name not in made:
            bundle = zoo.load_model(name)
            made[name] = (Engine(bundle.model), datasets.eval_data_for(bundle))
        return made[name]

    return get


def _app(**query) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def _expect(at: AppTest, reference, name: str, plan: Plan) -> None:
    engine, data = reference(name)
    evaluation = engine.evaluate(plan, data)
    shown = _metrics(at)
    assert shown["Accuracy"] == percent(evaluation.accuracy)
    assert shown["Agreement with float"] == percent(evaluation.agreement)
    assert shown["Size"] == human_bytes(evaluation.size_bytes)  # KiB/MiB as the sidebar; bytes in the tooltip
    size = next(metric for metric in at.metric if metric.label == "Size")
    assert bytes_text(evaluation.size_bytes) in size.proto.help
    assert shown["Bits per weight"] == f"{evaluation.avg_bits_per_weight:.2f}"


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_explore_default_shows_the_engines_metrics(reference):
    at = _app()
    _clean(at)
    assert at.session_state["plan"] == Plan()
    _expect(at, reference, "digits-cnn", Plan())
    float_accuracy = reference("digits-cnn")[0].evaluate(Plan(), reference("digits-cnn")[1]).float_accuracy
    assert f"Float accuracy **{percent(float_accuracy)}**" in at.sidebar.markdown[0].value
    assert len(at.get("plotly_chart")) >= 3  # SQNR, size, histogram


def test_explore_bits_8_to_2_changes_accuracy_and_size_as_the_engine_says(reference):
    at = _app()
    before = _metrics(at)
    at.select_slider(key="bits").set_value(2).run()
    _clean(at)
    plan = at.session_state["plan"]
    assert plan == uniform_plan(bits=2)
    _expect(at, reference, "digits-cnn", plan)
    after = _metrics(at)
    assert after["Size"] != before["Size"] and after["Accuracy"] != before["Accuracy"]
    assert at.query_params["plan"] == plan_to_token(plan)


def test_explore_layer_override_changes_only_that_layer_and_reset_undoes_it(reference):
    at = _app()
    names = [layer.name for layer in reference("digits-cnn")[0].layers]
    at.session_state["layer_editor"] = {"edited_rows": {0: {"bits": 4}}, "added_rows": [], "deleted_rows": []}
    at.run()
    _clean(at)
    plan = at.session_state["plan"]
    assert plan == Plan().with_override(names[0], LayerConfig(quant=QuantSpec(bits=4)))
    assert [plan.config_for(name).quant.bits for name in names] == [4, 8, 8, 8]
    _expect(at, reference, "digits-cnn", plan)
    at.run()  # a rerun keeps the override, and the table now starts from the plan
    assert at.session_state["plan"] == plan
    editor = at.dataframe[0].value
    assert editor["bits"].tolist() == ["4", "8", "8", "8"] and editor["override"].tolist() == [True] + [False] * 3
    next(b for b in at.button if b.label == "Reset overrides").click().run()
    _clean(at)
    assert at.session_state["plan"] == Plan()
    _expect(at, reference, "digits-cnn", Plan())


def test_explore_switching_model_evaluates_the_new_model(reference):
    at = _app()
    at.select_slider(key="bits").set_value(4).run()
    at.sidebar.selectbox(key="model_picker").set_value("digits-mlp").run()
    _clean(at)
    assert at.session_state["model_name"] == "digits-mlp"
    _expect(at, reference, "digits-mlp", uniform_plan(bits=4))
    assert [row for row in at.session_state["history"] if row["model"] == "digits-mlp"]


def test_explore_shared_link_restores_model_and_plan(reference):
    plan = uniform_plan(bits=3, scheme="asymmetric", granularity="group", group_size=16, sparsity=0.25)
    plan = plan.with_override("fc3", LayerConfig(keep_float=True))
    at = _app(model="digits-mlp", plan=plan_to_token(plan))
    _clean(at)
    assert at.session_state["plan"] == plan
    assert at.select_slider(key="bits").value == 3 and at.number_input(key="group_size").value == 16
    _expect(at, reference, "digits-mlp", plan)


def test_explore_bad_link_and_bad_value_explain_and_keep_running(reference):
    at = _app(plan="not-a-plan")
    assert not at.exception
    assert "could not be used" in at.warning[0].value
    at.selectbox(key="range_method").set_value("percentile").run()
    at.number_input(key="percentile").set_value(50.0).run()  # the spec needs (50, 100]
    assert not at.exception
    assert "percentile must be" in at.error[0].value
    assert at.session_state["plan"].default.quant.percentile == 99.99
    _expect(at, reference, "digits-cnn", at.session_state["plan"])
    at.radio(key="granularity").set_value("group").run()
    at.number_input(key="group_size").set_value(1).run()
    at.selectbox(key="range_method").set_value("entropy").run()  # 23,824 blocks: minutes of calibration
    assert not at.exception
    assert "entropy calibration" in at.error[0].value
    assert at.session_state["plan"].default.quant.range_method == "percentile"
    assert at.selectbox(key="range_method").value == "percentile"


def test_explore_histogram_of_one_channel_draws_its_grid(reference):
    at = _app()
    at.select_slider(key="bits").set_value(2).run()
    at.selectbox(key="hist_layer").set_value("features.1.0").run()
    at.radio(key="hist_scope").set_value("one channel").run()
    at.number_input(key="hist_channel").set_value(5).run()
    _clean(at)
    spec = json.loads(at.get("plotly_chart")[2].proto.spec)
    assert spec["layout"]["title"]["text"] == "features.1.0 · channel 5"
    names = [trace["name"] for trace in spec["data"]]
    assert "quantization levels (3)" in names  # int2 symmetric: codes -1, 0, 1
    assert spec["layout"]["xaxis"]["title"]["text"] == "weight value"
    engine, _ = reference("digits-cnn")
    result = engine.compress_layer(uniform_plan(bits=2), "features.1.0")
    assert names[1] == f"float ({result.weight[5].numel()} weights)"


def test_tradeoffs_sweep_draws_every_point_and_offers_csv(reference):
    at = _app()
    at.select_slider(key="bits").set_value(6).run()  # goes into the history
    at.switch_page("pages/tradeoffs.py").run()
    _clean(at)
    pills = {pill.key: pill for pill in at.get("button_group")}
    pills["sweep_bits"].set_value([2, 8])
    pills["sweep_schemes"].set_value(["symmetric"])
    pills["sweep_granularities"].set_value(["tensor", "channel"])
    pills["sweep_sparsities"].set_value([0.0])
    next(b for b in at.button if b.label == "Run sweep").click().run()
    _clean(at)
    engine, data = reference("digits-cnn")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    traces = {trace["name"]: trace for trace in spec["data"]}
    points = sorted(zip(traces["sweep symm/channel"]["x"] + traces["sweep symm/tensor"]["x"],
                        traces["sweep symm/channel"]["y"] + traces["sweep symm/tensor"]["y"]))
    expected = []
    for bits in (2, 8):
        for granularity in ("tensor", "channel"):
            evaluation = engine.evaluate(uniform_plan(bits=bits, granularity=granularity), data)
            expected.append((evaluation.size_bytes, evaluation.accuracy * 100))
    assert [size for size, _ in points] == [size for size, _ in sorted(expected)]
    assert [acc for _, acc in points] == pytest.approx([acc for _, acc in sorted(expected)])
    assert "Pareto frontier" in traces and "float model" in traces and "current plan" in traces
    history = traces["tried this session"]
    assert engine.evaluate(uniform_plan(bits=6), data).size_bytes in history["x"]
    assert len(at.main.get("download_button")) == 1  # the sweep CSV (the sidebar has the report)
    assert "sqnr" in json.dumps(json.loads(at.get("plotly_chart")[1].proto.spec)["layout"]["yaxis"]).lower()
    at.run()  # results are kept, not recomputed
    assert len(json.loads(at.get("plotly_chart")[0].proto.spec)["data"]) == len(spec["data"])


def test_evaluation_samples_subset_the_data_and_keep_history_apart(reference):
    at = _app()
    at.select_slider(key="bits").set_value(4).run()
    at.sidebar.number_input(key="eval_size_input").set_value(100).run()
    _clean(at)
    engine, data = reference("digits-cnn")
    small = datasets.subset(data, 100)
    evaluation = engine.evaluate(uniform_plan(bits=4), small)
    assert _metrics(at)["Accuracy"] == percent(evaluation.accuracy)
    assert f"Float accuracy **{percent(evaluation.float_accuracy)}**" in at.sidebar.markdown[0].value
    assert any("random subset of 100 of 450 samples" in caption.value for caption in at.sidebar.caption)
    assert {row["data"] for row in at.session_state["history"]} == {data.description, small.description}
    at.sidebar.number_input(key="eval_size_input").set_value(450).run()  # all of it again
    _clean(at)
    assert at.session_state["eval_sizes"] == {"digits-cnn": None}
    _expect(at, reference, "digits-cnn", uniform_plan(bits=4))


def test_large_model_shows_evaluation_progress_and_generates_the_chosen_count(monkeypatch):
    from streamlit.delta_generator import DeltaGenerator

    from lightviz.ui import state

    shown, original = [], DeltaGenerator.progress

    def progress(self, value, text=None):
        shown.append(text)
        return original(self, value, text=text)

    monkeypatch.setattr(DeltaGenerator, "progress", progress)
    monkeypatch.setattr(state, "PROGRESS_DELAY_S", 0.0)
    at = _app(model="resnet18")
    at.sidebar.number_input(key="eval_size_input").set_value(6).run()
    _clean(at)
    assert any(plain("6 generated standard-normal inputs") in caption.value for caption in at.sidebar.caption)
    assert plain("Running the compressed model: 6 of 6 samples") in shown  # shown as plain text
    assert plain("Running the float model: 6 of 6 samples") in shown
    assert not at.get("progress")  # the bar goes once the numbers are there
    bundle = zoo.load_model("resnet18")
    evaluation = Engine(bundle.model).evaluate(Plan(), datasets.eval_data_for(bundle, 6))
    assert _metrics(at)["Agreement with float"] == percent(evaluation.agreement)
