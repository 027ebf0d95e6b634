"""AppTest drives the Fine-tune page: one epoch on a subset, the live/history chart, the
before/after/float metrics, the point on Trade-offs, keeping the weights and going back."""

import pytest
from streamlit.testing.v1 import AppTest

from lightviz.ui import registry
from lightviz.ui.finetune import Job
from lightviz.ui.format import percent

TIMEOUT = 180


pytestmark = pytest.mark.usefixtures("one_thread")


def _button(at: AppTest, label: str):
    return next(button for button in at.button if button.label == label)


def _finetune_page() -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    at.switch_page("pages/finetune.py").run()
    assert not at.exception
    return at


def _one_epoch() -> AppTest:
    """The page after one quick epoch of fine-tuning (128 training samples)."""
    at = _finetune_page()
    at.number_input(key="ft_epochs").set_value(1)
    at.selectbox(key="ft_train_samples").set_value(128)
    _button(at, "Start fine-tuning").click()
    return at.run()


def test_finetune_page_one_epoch_shows_history_metrics_and_tradeoff_point():
    at = _one_epoch()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    job = at.session_state["finetune_job"]
    assert job.result is not None and len(job.result.history) == 1
    charts = [chart.proto.spec for chart in at.get("plotly_chart")]
    assert any('"test accuracy"' in spec and '"loss"' in spec for spec in charts)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Before fine-tuning"] == percent(job.result.accuracy_before)
    assert metrics["After fine-tuning"] == percent(job.result.accuracy_after)
    assert metrics["Float model"] == percent(job.result.float_accuracy)
    assert len(at.session_state["finetuned_points"]) == 1

    at.switch_page("pages/tradeoffs.py").run()
    assert not at.exception
    spec = at.get("plotly_chart")[0].proto.spec
    assert '"fine-tuned"' in spec and '"finetuned"' in spec  # the trace, and its clickable customdata


def test_finetune_page_keep_weights_then_back_to_the_original():
    at = _one_epoch()
    plan_before = at.session_state["plan"]
    _button(at, "Use the fine-tuned model").click()
    at.run()
    assert not at.exception
    name = at.session_state["model_name"]
    assert registry.is_derived(name) and registry.base_name(name) == "digits-cnn"
    assert at.session_state["plan"] == plan_before  # same plan, new weights
    assert at.sidebar.selectbox(key="model_picker").value == name
    _button(at, "Back to the original model").click()
    at.run()
    assert not at.exception
    assert at.session_state["model_name"] == "digits-cnn"


def test_finetune_job_stop_flag_stops_after_the_epoch():
    import pandas as pd

    job = Job(kind="finetune", model_name="digits-cnn", label="x", settings={})
    history = pd.DataFrame({"epoch": [1], "loss": [1.0], "test_accuracy": [0.5]})
    assert job.progress(history) is True
    job.stop = True
    assert job.progress(history) is False and len(job.history) == 1


def test_finetuned_model_is_compared_with_the_original_float_model_and_survives_a_restart():
    import torch

    from lightviz.core import metrics
    from lightviz.core.engine import Engine
    from lightviz.core.specs import plan_to_token
    from lightviz.io import datasets, zoo
    from lightviz.recover import saved
    from lightviz.ui import resources

    at = _one_epoch()
    _button(at, "Use the fine-tuned model").click()
    at.run()
    name, plan = at.session_state["model_name"], at.session_state["plan"]
    at.switch_page("pages/explore.py").run()
    assert not at.exception, [e.value for e in at.exception]
    original = zoo.load_model("digits-cnn")
    data = datasets.eval_data_for(original)
    reference = Engine(original.model).logits(None, data)
    test = Engine(registry.get(name).model).logits(plan, data)
    shown = {metric.label: metric for metric in at.metric}
    assert shown["Agreement vs original"].value == percent(metrics.agreement(reference, test))
    accuracy = metrics.accuracy(test, data.y)
    float_accuracy = metrics.accuracy(reference, data.y)
    assert shown["Accuracy"].proto.delta == f"{(accuracy - float_accuracy) * 100:+.2f} pp vs float"
    assert f"the original float model digits-cnn: {percent(float_accuracy)}" in shown["Accuracy"].proto.help

    # the download holds the same weights and loads back under the same name
    model, meta = saved.from_bytes(registry.trained_file(name))
    assert meta.kind == "finetuned" and meta.base == "digits-cnn"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 registry.get(name).model.state_dict().values()))
    assert registry.register_file(registry.trained_file(name)) == name

    # a server restart forgets the registry; the link still opens the fine-tuned model, from the store
    registry._models.clear()
    resources.clear()
    again = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    again.query_params["model"], again.query_params["plan"] = name, plan_to_token(plan)
    again.run()
    assert not again.exception and not again.warning, [w.value for w in again.warning]
    assert again.session_state["model_name"] == name and again.session_state["plan"] == plan


def test_distilled_student_can_be_downloaded_and_used():
    at = _finetune_page()
    at.radio(key="finetune_mode").set_value("Distill into a smaller model").run()
    at.selectbox(key="kd_student").set_value("digits-cnn-tiny")
    at.number_input(key="kd_epochs").set_value(1)
    at.selectbox(key="kd_train_samples").set_value(128)
    _button(at, "Start distillation").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(b.label.startswith("Download the distilled student") for b in at.get("download_button"))
    _button(at, "Use the distilled student").click()
    at.run()
    name = at.session_state["model_name"]
    assert name.startswith(f"digits-cnn-tiny{registry.DISTILLED}") and registry.get(name) is not None
    at.switch_page("pages/explore.py").run()
    assert not at.exception and at.metric  # a float model of its own: Explore evaluates it
