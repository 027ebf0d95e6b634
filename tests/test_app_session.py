"""AppTest of what a session remembers and how it frames numbers: Undo/Redo, per-field
overrides through the widgets, model switches that keep overrides, links that restore the
sample count and say what they could not, the float baseline, disabled controls, refused
values, random-weight models and the wait before a big model's first evaluation."""


from streamlit.proto.Metric_pb2 import Metric
from streamlit.testing.v1 import AppTest

from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.specs import Plan, QuantSpec, plan_to_token
from lightviz.io import datasets, zoo
from lightviz.ui.format import percent
from lightviz.ui.text import plain

TIMEOUT = 90


def _app(**query) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _metric(at: AppTest, label: str):
    return next(metric for metric in at.metric if metric.label == label)


def _button(at: AppTest, label: str):
    return next(button for button in at.button if button.label == label)


def _data_uploader(at: AppTest):
    """The sidebar's "Evaluation data" uploader (its position depends on the model's kind)."""
    return next(u for u in at.sidebar.file_uploader if u.label == "Evaluation data")


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_undo_redo_walk_the_plan_changes():
    at = _app()
    assert _button(at, "Undo").disabled
    at.select_slider(key="bits").set_value(4).run()
    at.radio(key="scheme").set_value("asymmetric").run()
    assert at.session_state["plan"] == uniform_plan(4, "asymmetric")
    _button(at, "Undo").click().run()
    _clean(at)
    assert at.session_state["plan"] == uniform_plan(4)
    assert at.radio(key="scheme").value == "symmetric"  # the widgets follow the plan
    _button(at, "Undo").click().run()
    assert at.session_state["plan"] == Plan() and at.select_slider(key="bits").value == 8
    _button(at, "Redo").click().run()
    assert at.session_state["plan"] == uniform_plan(4) and at.select_slider(key="bits").value == 4
    assert at.query_params["plan"] == plan_to_token(uniform_plan(4))  # the URL follows as well


def test_one_field_override_follows_the_global_scheme():
    at = _app()
    at.session_state["layer_editor"] = {"edited_rows": {0: {"bits": "4"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    at.radio(key="scheme").set_value("asymmetric").run()
    _clean(at)
    plan = at.session_state["plan"]
    assert plan.config_for("features.0.0").quant == QuantSpec(bits=4, scheme="asymmetric")
    assert at.dataframe[0].value["scheme"].tolist() == ["asymmetric"] * 4


def test_switching_model_keeps_overrides_aside_and_says_so():
    at = _app()
    at.session_state["layer_editor"] = {"edited_rows": {1: {"keep_float": True}}, "added_rows": [], "deleted_rows": []}
    at.run()
    overrides = at.session_state["plan"].overrides
    at.sidebar.selectbox(key="model_picker").set_value("digits-mlp").run()
    _clean(at)
    assert at.session_state["plan"].overrides == ()
    assert any("come back when you switch back" in w.value for w in at.warning)
    at.sidebar.selectbox(key="model_picker").set_value("digits-cnn").run()
    assert at.session_state["plan"].overrides == overrides
    assert any("are back" in info.value for info in at.info)


def test_float_plan_is_the_baseline_and_folding_is_stated_apart():
    at = _app()
    at.select_slider(key="bits").set_value("float").run()
    _clean(at)
    size, accuracy = _metric(at, "Size"), _metric(at, "Accuracy")
    assert size.proto.delta == "float baseline · 1.00×" and size.proto.color == Metric.MetricColor.GRAY
    assert accuracy.proto.delta == "+0.00 pp vs float" and accuracy.proto.color == Metric.MetricColor.GRAY
    assert any("not compression" in caption.value for caption in at.caption)
    assert at.radio(key="scheme").disabled and at.selectbox(key="range_method").disabled
    at.sidebar.selectbox(key="model_picker").set_value("digits-mlp").run()
    assert at.toggle(key="fold_bn").disabled  # no BatchNorm to fold
    assert "no BatchNorm" in at.toggle(key="fold_bn").help


def test_group_size_zero_is_refused_at_the_control():
    at = _app()
    at.radio(key="granularity").set_value("group").run()
    at.number_input(key="group_size").set_value(0).run()
    _clean(at)
    assert any("group_size must be a positive integer; got 0" in e.value for e in at.error)
    assert at.number_input(key="group_size").value == 128  # never shows 0 while 128 is used
    assert at.session_state["plan"].default.quant.group_size == 128


def test_nm_sparsity_shows_as_achieved_in_the_table():
    at = _app()
    at.selectbox(key="prune_method").set_value("n:m").run()
    at.slider(key="sparsity").set_value(0.65).run()
    _clean(at)
    assert at.dataframe[0].value["sparsity"].tolist() == [0.75] * 4
    assert any("1:4): 75% sparsity" in caption.value for caption in at.caption)


def test_link_restores_the_sample_count_and_says_what_it_cannot():
    plan = uniform_plan(4)
    at = _app(model="digits-cnn", plan=plan_to_token(plan), n="100", data="upload:mine.npz#0123456789ab")
    _clean(at)
    assert at.session_state["eval_sizes"]["digits-cnn"] == 100 and at.session_state["plan"] == plan
    assert any(plain("uploaded data set (mine.npz) that this browser session has not uploaded") in w.value
               for w in at.warning)
    bundle = zoo.load_model("digits-cnn")
    expected = Engine(bundle.model).evaluate(plan, datasets.subset(datasets.eval_data_for(bundle), 100))
    assert _metric(at, "Accuracy").value == percent(expected.accuracy)
    at = _app(model="upload:mine.pth#0123abcd", plan=plan_to_token(plan))
    assert any(plain("uploaded model (mine.pth) that this browser session has not uploaded") in w.value
               for w in at.warning)
    assert at.session_state["model_name"] == "digits-cnn"


def test_random_weight_model_leads_with_kl_and_waits_before_its_first_evaluation():
    at = _app(model="resnet18")  # 32 generated inputs: 11.7 M weights x 32 waits for a click
    _clean(at)
    assert any(button.label == "Evaluate now" for button in at.button) and not at.metric
    at.sidebar.number_input(key="eval_size_input").set_value(4).run()  # changed before anything ran
    _clean(at)
    labels = [metric.label for metric in at.metric]
    assert labels[0] == "KL divergence" and "Output SQNR" in labels and "Accuracy" not in labels
    assert any("random weights" in info.value for info in at.info)
    assert "random weights" in at.sidebar.selectbox(key="model_picker").format_func("resnet18")
    assert at.query_params["n"] == "4"


def test_link_to_a_model_this_server_lacks_is_completed_by_uploading_its_download():
    import torch

    from lightviz.recover import saved
    from lightviz.ui import registry

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        student = zoo.build_architecture("digits-mlp").eval()
    data = saved.to_bytes(student, saved.TrainedMeta(kind="distilled", arch="digits-mlp", num_classes=10,
                                                     base="digits-cnn", description="a test student"))
    name = f"digits-mlp{registry.DISTILLED}{registry._digest(student)}"
    plan = uniform_plan(4)
    at = _app(model=name, plan=plan_to_token(plan), n="100")
    _clean(at)
    assert any("which this server does not have" in w.value for w in at.warning)
    assert at.session_state["model_name"] == "digits-cnn"
    at.sidebar.file_uploader[0].set_value((f"{name}.safetensors", data, "application/octet-stream"))
    next(b for b in at.sidebar.button if b.label == "Load model").click().run()
    _clean(at)
    assert at.session_state["model_name"] == name  # the same name: the link works again
    assert at.session_state["plan"] == plan and at.session_state["eval_sizes"][name] == 100  # the rest of the link
    expected = Engine(student).evaluate(plan, datasets.subset(datasets.eval_data_for(zoo.load_model("digits-cnn")),
                                                              100))
    assert _metric(at, "Accuracy").value == percent(expected.accuracy)


def test_every_progress_update_is_a_point_where_an_obsolete_run_can_stop(monkeypatch):
    """Streamlit stops a rerun made obsolete at the next element call: the evaluation touches the
    page after every layer and batch even before its progress bar shows."""
    from streamlit.delta_generator import DeltaGenerator

    calls = []
    original = DeltaGenerator.empty

    def empty(self):
        calls.append(1)
        return original(self)

    from lightviz.ui import resources

    resources.clear()  # a fresh engine: the float and compressed passes both run
    monkeypatch.setattr(DeltaGenerator, "empty", empty)
    _app(model="digits-mlp")
    assert len(calls) >= 8  # 3 layers compressed, 2 batches of float and of compressed logits, and the ends


def test_glossary_on_every_page_and_captions_keep_their_capitals():
    at = _app()
    at.selectbox(key="range_method").set_value("entropy").run()
    _clean(at)
    assert any(caption.value == "TensorRT-style KL calibration over a 2048-bin histogram" for caption in at.caption)
    for page in ("pages/explore.py", "pages/tradeoffs.py", "pages/learn.py"):
        at.switch_page(page).run()
        glossary = next(e for e in at.sidebar.expander if e.label == "Glossary")
        text = " ".join(m.value for m in glossary.markdown)
        assert all(f"**{term}**" in text for term in ("SQNR", "KL", "pp", "W8A32", "n:m", "bitmask")), page
        assert "per channel" in text


def test_link_with_uploaded_data_is_completed_by_uploading_the_file():
    import io

    import numpy as np

    from lightviz.ui import data_registry

    test = datasets.digits_split()[1]
    buffer = io.BytesIO()
    np.savez(buffer, x=test.x[:60].numpy(), y=test.y[:60].numpy())
    content = buffer.getvalue()
    token = data_registry.token_for("mine.npz", content, (0, "", "", 0))  # the sidebar's default options
    plan = uniform_plan(3)
    at = _app(plan=plan_to_token(plan), n="40", data=token)
    assert any(plain("uploaded data set (mine.npz)") in w.value for w in at.warning)  # as text, Markdown escaped
    _data_uploader(at).set_value(("mine.npz", content, "application/octet-stream"))
    next(b for b in at.sidebar.button if b.label == "Load data").click().run()
    _clean(at)
    assert at.query_params["data"] == token and at.session_state["eval_sizes"]["digits-cnn"] == 40
    assert at.session_state["plan"] == plan
    assert any("random subset of 40 of 60 samples" in caption.value for caption in at.sidebar.caption)


def test_uploaded_data_stays_private_to_the_session_that_uploaded_it():
    """The server holds the upload, but another session opening its link gets the default data
    and a plain message: nobody opens another person's data by its URL."""
    import io

    import numpy as np

    test = datasets.digits_split()[1]
    buffer = io.BytesIO()
    np.savez(buffer, x=test.x[:50].numpy(), y=test.y[:50].numpy())
    owner = _app()
    _data_uploader(owner).set_value(("private.npz", buffer.getvalue(), "application/octet-stream"))
    next(b for b in owner.sidebar.button if b.label == "Load data").click().run()
    _clean(owner)
    token = owner.query_params["data"]
    assert len(owner.session_state["user_data"]["digits-cnn"]) == 50
    other = _app(model="digits-cnn", data=token)
    assert any(plain("uploaded data set (private.npz) that this browser session has not uploaded") in w.value
               for w in other.warning)
    assert other.session_state["user_data"].get("digits-cnn") is None
    assert any("450" in caption.value for caption in other.sidebar.caption)  # the default test split
