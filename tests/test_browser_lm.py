"""Browser test of the language-model pages: pick the sample LM, move bits, see perplexity and the
generated text change; broken model folders are refused with one error each and tiny-gpt stays.

Skips with a reason when Chromium or Playwright is missing, unless LIGHTVIZ_REQUIRE_BROWSER is set
(see browser_support). Screenshots go to test-artifacts/lm-*.png.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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

from lightviz.io.zoo import SAMPLE_MODELS_DIR

WAIT_MS = 90_000  # a busy 2-core machine; every wait ends as soon as its condition holds


def generated(page) -> str:
    """The compressed model's text (the second code block of "What changed")."""
    return page.locator("[data-testid='stCode']").nth(1).inner_text()


def wait_for_new(page, label: str, old: str) -> None:
    page.wait_for_function(
        """([label, old]) => [...document.querySelectorAll("[data-testid='stMetric']")]
             .some(m => m.innerText.startsWith(label) &&
                        m.querySelector("[data-testid='stMetricValue']").innerText !== old)""",
        arg=[label, old], timeout=WAIT_MS)
    settle(page)


def test_pick_the_sample_lm_move_bits_and_see_perplexity_and_text_change(server, page):
    page.goto(server)
    settle(page)
    sidebar = page.locator(SIDEBAR)
    picker = sidebar.get_by_role("combobox", name="Model")
    picker.click()
    page.get_by_role("option", name="tiny-gpt · language model").click()
    expect(page.locator("[data-testid='stMetricLabel']").filter(has_text="Perplexity").first).to_be_visible(
        timeout=WAIT_MS)
    settle(page)
    assert_no_exception(page, "tiny-gpt picked")
    assert "model=tiny-gpt" in page.url
    expect(page.locator("[data-testid='stCode']").nth(1)).to_be_visible(timeout=WAIT_MS)
    perplexity, text = [metric_value(page, "Perplexity")], [generated(page)]
    slider = page.locator("[data-testid='stSlider']").filter(has_text="Bits").locator("input[type=range]").first
    for _ in range(4):  # 8 -> 4 bits, one key press at a time
        slider.focus()
        page.keyboard.press("ArrowLeft")
        wait_for_new(page, "Bits per weight", metric_value(page, "Bits per weight"))
        assert_no_exception(page, "tiny-gpt after a bits change")
        assert page.locator(ERROR).count() == 0, page.locator(ERROR).all_inner_texts()
        perplexity.append(metric_value(page, "Perplexity"))
        text.append(generated(page))
    page.set_viewport_size({"width": 1400, "height": 3200})
    settle(page)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "lm-explore-4bit.png"), full_page=True)
    assert float(perplexity[-1]) > float(perplexity[0]) * 1.02, perplexity  # 4 bits cost perplexity
    assert text[-1] != text[0], text  # and change the words
    (ARTIFACTS / "lm-perplexity.json").write_text(json.dumps({"perplexity": perplexity}, indent=2))
    sidebar.get_by_role("link", name="Trade-offs").click()
    expect(page.get_by_role("heading", name="Trade-offs").first).to_be_visible(timeout=WAIT_MS)
    settle(page)
    assert_no_exception(page, "Trade-offs of tiny-gpt")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "lm-tradeoffs.png"), full_page=True)


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in ("config.json", "model.safetensors"):
        shutil.copy(SAMPLE_MODELS_DIR / "tiny-gpt" / file, folder / file)
    return folder


def test_broken_model_folders_get_one_error_each_and_keep_the_model(server, page, tmp_path):
    custom = _folder(tmp_path, "custom")
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "evil.Model"}}))
    corrupt = _folder(tmp_path, "corrupt")
    (corrupt / "model.safetensors").write_bytes((corrupt / "model.safetensors").read_bytes()[:5000])
    mismatch = _folder(tmp_path, "mismatch")
    (mismatch / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    expected = {custom: "custom code", corrupt: "not a valid safetensors", mismatch: "does not fit its config.json"}

    page.goto(f"{server}/?model=tiny-gpt")
    settle(page)
    before = metric_value(page, "Perplexity")
    sidebar = page.locator(SIDEBAR)
    sidebar.locator("[data-testid='stExpander'] summary").filter(has_text="Your own model and data").click()
    uploader = sidebar.locator("[data-testid='stFileUploader']").filter(has_text="Language model folder")
    for folder, words in expected.items():
        files = sorted(folder.iterdir())
        uploader.locator("input[type=file]").set_input_files([str(p) for p in files])
        expect(uploader.locator("[data-testid='stFileChipName']")).to_have_count(len(files), timeout=WAIT_MS)
        expect(uploader.locator("[data-testid='stFileChipIconSpinner']")).to_have_count(0, timeout=WAIT_MS)
        sidebar.get_by_role("button", name="Load language model").click()
        expect(page.locator(ERROR).filter(has_text=words)).to_have_count(1, timeout=WAIT_MS)  # this folder's error
        settle(page)
        assert_no_exception(page, folder.name)
        errors = page.locator(ERROR)
        assert errors.count() == 1, errors.all_inner_texts()
        message = errors.inner_text()
        assert words in message and "Still showing tiny-gpt" in message and "\n" not in message.strip(), message
        assert sidebar.get_by_role("combobox", name="Model").input_value() == "tiny-gpt · language model"
        assert metric_value(page, "Perplexity") == before
    sidebar.screenshot(path=str(ARTIFACTS / "lm-sidebar-refused.png"))
