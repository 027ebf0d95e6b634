"""Browser tests of the sidebar's "Your own model and data" uploads, through a real browser.

Every file is made by the test under tmp_path and goes through the page's own file inputs and
forms: bad weights and a code-running pickle each get one error and leave digits-cnn loaded
(the pickle's marker file never appears); good weights become the current model with the
numbers the engine computes; an uploaded .npz becomes the evaluation data, and one with labels
out of range is refused without losing it. Screenshots of the sidebar go to test-artifacts/.

Skips with a reason when Chromium or Playwright is missing, unless LIGHTVIZ_REQUIRE_BROWSER
is set (see browser_support).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from browser_support import (  # noqa: F401 (pytest fixtures)
    ARTIFACTS,
    ERROR,
    SIDEBAR,
    assert_no_exception,
    browser,
    expect,
    metric_value,
    page,
    server,
    settle,
)
from safetensors.torch import save_file

from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import Plan
from lightviz.io import zoo
from lightviz.io.datasets import digits_split
from lightviz.ui.format import percent

WAIT_MS = 60_000  # a busy 2-core machine; every wait ends as soon as its condition holds


class _Payload:
    """Unpickling this runs a shell command that creates `marker` (as in test_loading)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _percent_of(model: torch.nn.Module, data: EvalData) -> tuple[str, str]:
    """(Explore's accuracy under the app's default plan, the float accuracy), as the app shows them."""
    evaluation = Engine(model).evaluate(Plan(), data)  # state.init_state starts every session on Plan()
    return percent(evaluation.accuracy), percent(evaluation.float_accuracy)


@pytest.fixture(scope="module")
def default_accuracy() -> str:
    """Explore's accuracy for digits-cnn on its default data: what a refused upload must leave."""
    return _percent_of(zoo.load_model("digits-cnn").model, digits_split()[1])[0]


def open_uploads(server: str, page):
    """Open Explore in a new session, expand the uploads expander; the sidebar's locator."""
    page.goto(server)
    settle(page)
    sidebar = page.locator(SIDEBAR)
    sidebar.locator("[data-testid='stExpander'] summary").filter(has_text="Your own model and data").click()
    expect(sidebar.get_by_role("button", name="Load model")).to_be_visible()
    return sidebar


def choose_file(sidebar, label: str, path: Path) -> None:
    """Put `path` into the file uploader labelled `label` and wait until it is uploaded."""
    uploader = sidebar.locator("[data-testid='stFileUploader']").filter(has_text=label)
    uploader.locator("input[type=file]").set_input_files(str(path))
    expect(uploader.locator("[data-testid='stFileChipName']")).to_have_text(path.name, timeout=WAIT_MS)
    expect(uploader.locator("[data-testid='stFileChipIconSpinner']")).to_have_count(0, timeout=WAIT_MS)


def choose_architecture(page, sidebar, name: str) -> None:
    architecture = sidebar.get_by_role("combobox", name="Architecture")
    architecture.click()
    page.get_by_role("option", name=name, exact=True).click()
    expect(architecture).to_have_value(name)


def model_shown(sidebar) -> str:
    return sidebar.get_by_role("combobox", name="Model").input_value()


def one_error(page, where: str) -> str:
    """Wait for the refusal; the text of the one error on the page."""
    page.wait_for_selector(ERROR, timeout=WAIT_MS)
    settle(page)
    assert_no_exception(page, where)
    errors = page.locator(ERROR)
    assert errors.count() == 1, f"{where}: {errors.all_inner_texts()}"
    return errors.inner_text()


def assert_still_digits_cnn(page, sidebar, default_accuracy: str) -> None:
    assert model_shown(sidebar) == "digits-cnn"
    assert "model=digits-cnn" in page.url
    assert metric_value(page, "Accuracy") == default_accuracy


def sidebar_screenshot(page, sidebar, name: str) -> None:
    page.set_viewport_size({"width": 1400, "height": 2000})  # the whole sidebar, expander open
    settle(page)
    sidebar.screenshot(path=str(ARTIFACTS / name))


def test_random_bytes_as_weights_get_one_error_and_keep_the_model(server, page, tmp_path, default_accuracy):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    sidebar = open_uploads(server, page)
    choose_file(sidebar, "Weights", garbage)
    choose_architecture(page, sidebar, "digits-cnn")
    sidebar.get_by_role("button", name="Load model").click()
    message = one_error(page, "random bytes as weights")
    assert "garbage.pt" in message and "digits-cnn" in message, message  # what failed, what is still shown
    assert_still_digits_cnn(page, sidebar, default_accuracy)


def test_code_running_pickle_is_refused_without_running(server, page, tmp_path, default_accuracy):
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists(), "the payload must really run code, or its absence below proves nothing"
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"classifier.weight": _Payload(marker)}, evil)

    sidebar = open_uploads(server, page)
    choose_file(sidebar, "Weights", evil)
    choose_architecture(page, sidebar, "digits-cnn")
    expect(sidebar.get_by_role("checkbox", name="Trust code in this file")).not_to_be_checked()
    sidebar.get_by_role("button", name="Load model").click()
    message = one_error(page, "code-running pickle")
    assert "evil.pt" in message and 'tick "Trust code in this file"' in message, message
    assert "--trust-code" not in message and "Still showing digits-cnn" in message, message
    assert not marker.exists(), "the uploaded pickle ran code on the server"
    assert_still_digits_cnn(page, sidebar, default_accuracy)


def test_safetensors_weights_become_the_current_model(server, page, tmp_path, default_accuracy):
    state = {key: value.clone() for key, value in zoo.load_model("digits-cnn").model.state_dict().items()}
    state["classifier.weight"][0] = 0  # the sample's weights, changed so that the numbers tell them apart
    model = zoo.build_architecture("digits-cnn", 10)
    model.load_state_dict(state)
    accuracy, float_accuracy = _percent_of(model.eval(), digits_split()[1])
    assert accuracy != default_accuracy
    weights = tmp_path / "my_cnn.safetensors"
    save_file(state, str(weights))

    sidebar = open_uploads(server, page)
    choose_file(sidebar, "Weights", weights)
    choose_architecture(page, sidebar, "digits-cnn")
    sidebar.get_by_role("button", name="Load model").click()
    expect(sidebar.get_by_role("combobox", name="Model")).not_to_have_value("digits-cnn", timeout=WAIT_MS)
    settle(page)
    assert_no_exception(page, "safetensors upload")
    assert page.locator(ERROR).count() == 0, page.locator(ERROR).all_inner_texts()
    assert model_shown(sidebar) == "my_cnn.safetensors (digits-cnn) · uploaded"
    assert "model=upload" in page.url
    assert f"Float accuracy {float_accuracy}" in sidebar.inner_text()
    assert metric_value(page, "Accuracy") == accuracy
    sidebar_screenshot(page, sidebar, "sidebar-uploaded-model.png")
    sidebar.get_by_role("link", name="Trade-offs").click()  # the other pages work on it too
    expect(page.get_by_role("heading", name="Trade-offs").first).to_be_visible(timeout=WAIT_MS)
    expect(page).to_have_url(re.compile(r"/tradeoffs\?"), timeout=WAIT_MS)
    settle(page)
    assert_no_exception(page, "Trade-offs of the uploaded model")
    assert page.locator(ERROR).count() == 0, page.locator(ERROR).all_inner_texts()
    expect(page.locator("[data-testid='stPlotlyChart']").first).to_be_visible(timeout=WAIT_MS)
    assert "model=upload" in page.url and model_shown(sidebar) == "my_cnn.safetensors (digits-cnn) · uploaded"


def test_npz_becomes_the_data_and_bad_labels_keep_it(server, page, tmp_path, default_accuracy):
    test = digits_split()[1]
    x, y = test.x[:100].numpy().astype(np.float32), test.y[:100].numpy().astype(np.int64)
    accuracy, float_accuracy = _percent_of(zoo.load_model("digits-cnn").model,
                              EvalData(x=torch.from_numpy(x), y=torch.from_numpy(y), name="digits100", description=""))
    assert accuracy != default_accuracy
    good, bad = tmp_path / "digits100.npz", tmp_path / "bad_labels.npz"
    np.savez(good, x=x, y=y)
    np.savez(bad, x=x, y=np.full(100, 99, dtype=np.int64))

    sidebar = open_uploads(server, page)
    choose_file(sidebar, "Evaluation data", good)
    sidebar.get_by_role("button", name="Load data").click()
    expect(sidebar).to_contain_text("digits100.npz: 100 inputs", timeout=WAIT_MS)
    settle(page)
    assert_no_exception(page, "npz upload")
    assert page.locator(ERROR).count() == 0, page.locator(ERROR).all_inner_texts()
    assert model_shown(sidebar) == "digits-cnn"
    assert f"Float accuracy {float_accuracy}" in sidebar.inner_text()
    assert metric_value(page, "Accuracy") == accuracy
    expect(sidebar.get_by_role("button", name="Use the default data again")).to_be_visible()
    sidebar_screenshot(page, sidebar, "sidebar-uploaded-data.png")

    choose_file(sidebar, "Evaluation data", bad)
    sidebar.get_by_role("button", name="Load data").click()
    message = one_error(page, "labels out of range")
    assert "bad_labels.npz" in message and "out of range" in message, message
    assert "digits100.npz: 100 inputs" in sidebar.inner_text()
    assert metric_value(page, "Accuracy") == accuracy

