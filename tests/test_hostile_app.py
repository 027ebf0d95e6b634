"""The app against hostile input, through AppTest: broken archives and oversized images get one
st.error and the previous data stays in use; a 100,000-level plan link gets one warning and the
default plan; Markdown in links, file names and layer names shows as text; uploads stay private
to their session; the shared caches stay bounded; a fine-tune stops once its session ended.
Every hostile file and link is built here (tests/hostile.py)."""

from __future__ import annotations

import base64
import io
import json
import zlib

import numpy as np
import pytest
import torch
from hostile import (
    DEFECTS,
    Member,
    broken_archive,
    huge_shape_npz,
    nested_json,
    png_bytes,
    zip_bytes,
)
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from lightviz.core.bounded import BoundedCache
from lightviz.core.specs import LayerConfig, Plan, plan_to_token
from lightviz.io import zoo
from lightviz.io.userdata import MAX_INPUT_VALUES
from lightviz.ui import resources
from lightviz.ui.finetune import SESSION_GRACE_S, Job
from lightviz.ui.text import plain

TIMEOUT = 120
EVIL = "[Session expired - click here](https://evil.example/login)"


def _app(**query) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _texts(at: AppTest) -> list[str]:
    """Every Markdown-rendered text on the page: bodies, captions, alerts, headers, metric labels."""
    kinds = ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader")
    return [element.value for kind in kinds for element in at.get(kind)] + [m.label for m in at.metric]


def _uploader(at: AppTest, label: str):
    return next(widget for widget in at.get("file_uploader") if widget.label.startswith(label))


def _press(at: AppTest, label: str) -> AppTest:
    next(button for button in at.button if button.label == label).click()
    return at.run()


def _npz(x, y) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.asarray(x, np.float32), y=np.asarray(y))
    return buffer.getvalue()


def _upload_data(at: AppTest, name: str, content: bytes, size: int = 0) -> AppTest:
    _uploader(at, "Evaluation data").upload(name, content)
    if size:
        next(w for w in at.number_input if w.label.startswith("Image size")).set_value(size)
    return _press(at, "Load data")


# --------------------------------------------------------------------------- broken data


def test_broken_archives_one_error_each_and_the_previous_data_stays():
    at = _app()
    x = np.linspace(0, 1, 12 * 64, dtype=np.float32).reshape(12, 1, 8, 8)
    at = _upload_data(at, "mine.npz", _npz(x, np.arange(12) % 10))
    assert not at.exception and not at.error, [e.value for e in at.error]
    mine = at.session_state["user_data"]["digits-cnn"]
    assert len(mine) == 12
    metrics = {m.label: m.value for m in at.metric}
    # each defect once (the library and CLI tests take every kind x defect), the lying header, big images
    files = [broken_archive(kind, defect) for kind, defect in zip(("zip", "npz", "zip", "npz"), DEFECTS)]
    files += [("huge.npz", huge_shape_npz())]
    nine = [Member(f"{c}/{i}.png", png_bytes((30 * c, 9 * i, 60))) for c in range(3) for i in range(3)]
    for name, content in files + [("nine.zip", zip_bytes(nine))]:
        at = _upload_data(at, name, content, size=4096 if name == "nine.zip" else 0)
        assert not at.exception, (name, [e.value for e in at.exception])
        assert len(at.error) == 1, (name, [e.value for e in at.error])
        assert plain(name) in at.error[0].value and "previous data is still in use" in at.error[0].value
        assert at.session_state["user_data"]["digits-cnn"] is mine  # the previous data is still in use
        assert {m.label: m.value for m in at.metric} == metrics
    assert plain(f"over the limit of {MAX_INPUT_VALUES:,} values") in at.error[0].value  # the image size


# --------------------------------------------------------------------------- links


def test_link_with_a_100000_level_plan_warns_once_and_shows_the_default_plan():
    token = base64.urlsafe_b64encode(zlib.compress(nested_json(100_000).encode(), 9)).decode().rstrip("=")
    for _ in range(2):  # reloading the link behaves the same
        at = _app(model="digits-mlp", plan=token)
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.warning) == 1 and "nests deeper than 16 levels" in at.warning[0].value
        assert at.session_state["plan"] == Plan() and at.session_state["model_name"] == "digits-mlp"
        assert not at.error and at.metric


def test_markdown_in_links_shows_as_text():
    bad_layer = Plan().with_override(f"**layer** {EVIL}", LayerConfig(keep_float=True))
    for query in ({"model": EVIL}, {"model": "digits-mlp", "plan": plan_to_token(bad_layer)}):
        at = _app(**query)
        assert not at.exception
        assert len(at.warning) == 1
        assert plain("[Session expired - click here]") in at.warning[0].value
        for text in _texts(at):
            assert "](https" not in text and "https://" not in text and "**layer**" not in text, text


def test_markdown_in_an_uploaded_file_name_shows_as_text():
    at = _app()
    name = f"{EVIL} :red[x] $x^2$.npz"
    at = _upload_data(at, name, b"PK\x03\x04 not an archive")
    assert len(at.error) == 1 and plain(name) in at.error[0].value
    for text in _texts(at):
        assert "](https" not in text and ":red[" not in text and "https://" not in text, text


# --------------------------------------------------------------------------- private uploads, bounded caches


def _upload_model(at: AppTest, name: str, content: bytes, arch: str) -> AppTest:
    _uploader(at, "Weights").upload(name, content)
    next(w for w in at.selectbox if w.label == "Architecture").set_value(arch)
    return _press(at, "Load model")


def test_an_upload_opens_only_in_the_session_that_uploaded_it():
    state = {k: v.contiguous() for k, v in zoo.load_model("digits-mlp").model.state_dict().items()}
    mine = _upload_model(_app(), "mine.safetensors", save(state), "digits-mlp")
    assert not mine.exception and not mine.error, [e.value for e in mine.error]
    name = mine.session_state["model_name"]
    assert name.startswith("upload:mine.safetensors")
    other = _app(model=name)  # another session opening the first one's link
    assert not other.exception
    assert other.session_state["model_name"] == "digits-cnn"
    assert "private" in other.warning[0].value
    with pytest.raises(ValueError, match="another browser session"):
        resources.model(name)  # outside any session that registered it


def test_bounded_cache_evicts_by_entries_and_bytes_and_builds_once():
    builds = []
    cache = BoundedCache(max_entries=3, max_bytes=100, weigh=len)

    def build(key, size):
        builds.append(key)
        return key * size

    cache.get("a", lambda: build("a", 40))
    cache.get("b", lambda: build("b", 40))
    cache.get("a", lambda: build("a", 40))  # a hit: "b" is now the oldest
    cache.get("c", lambda: build("c", 40))  # 120 bytes > 100: "b" goes
    assert cache.keys() == ["a", "c"] and cache.nbytes == 80 and builds == ["a", "b", "c"]
    cache.get("huge", lambda: build("huge", 500))  # larger than the bound: kept alone
    assert cache.keys() == ["huge"]
    with pytest.raises(RuntimeError):
        cache.get("bad", lambda: (_ for _ in ()).throw(RuntimeError("no")))
    assert cache.peek("bad") is None


def test_app_model_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(resources, "models", BoundedCache(2, 2**40, resources._weigh_model))
    for name in ("digits-mlp", "digits-cnn", "digits-mobilenet"):
        bundle, engine = resources.model(name)
        assert engine.model is bundle.model
    assert resources.models.keys() == [("digits-cnn", "cpu"), ("digits-mobilenet", "cpu")]  # one per (model, device)
    assert resources.models.nbytes >= 2 * engine.cache_bytes  # weights plus each engine's cache budget
    assert zoo._BUNDLES.max_entries == 8 and zoo._BUNDLES.max_bytes == 2 * 2**30


# --------------------------------------------------------------------------- orphaned fine-tunes


def test_a_job_stops_once_its_session_has_ended(monkeypatch):
    import pandas as pd

    from lightviz.ui import finetune

    clock, active = [100.0], [True]

    class Runtime:
        @staticmethod
        def is_active_session(session_id):
            return active[0]

    monkeypatch.setattr(finetune.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr("streamlit.runtime.Runtime.exists", staticmethod(lambda: True))
    monkeypatch.setattr("streamlit.runtime.Runtime.instance", staticmethod(lambda: Runtime))
    monkeypatch.setattr("streamlit.runtime.scriptrunner.get_script_run_ctx",
                        lambda: type("Ctx", (), {"session_id": "s1"})())
    job = Job(kind="finetune", model_name="digits-cnn", label="x", settings={},
              session_ended=finetune.session_watch())
    history = pd.DataFrame({"epoch": [1], "loss": [1.0], "test_accuracy": [0.5]})
    assert job.progress(history) is True
    active[0] = False  # the browser went away...
    clock[0] += SESSION_GRACE_S / 2
    assert job.progress(history) is True  # ...but may come back within the grace period
    clock[0] += SESSION_GRACE_S
    assert job.progress(history) is False and job.stop and job.abandoned


def test_weights_near_the_float32_limit_explore_draws_and_reports(tmp_path):
    state = {k: v.clone().contiguous() for k, v in zoo.load_model("digits-cnn").model.state_dict().items()}
    state["features.1.0.weight"].view(-1)[:2] = torch.tensor([3e38, -3e38])
    at = _upload_model(_app(), "extreme.safetensors", save(state), "digits-cnn")
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.select_slider(key="bits").set_value(2).run()
    at.radio(key="scheme").set_value("asymmetric").run()
    at.radio(key="granularity").set_value("tensor").run()
    at.selectbox(key="hist_layer").set_value("features.1.0").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]  # was "cannot convert float NaN to integer"
    assert at.session_state["model_name"].startswith("upload:extreme.safetensors")
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    histogram = next(spec for spec in specs if spec["layout"]["title"]["text"] == "features.1.0 · whole layer")
    assert any(trace["name"].startswith("quantization levels") for trace in histogram["data"])
    assert any("overflowed float32" in caption.value.replace("\\", "") for caption in at.caption)
