"""Hostile input in a real browser: what only a browser shows, and what only a server does.

- A link naming a model with a Markdown link in it, a plan whose layer names carry Markdown,
  and an upload whose file name does: the warnings and the error show the text, and the page
  holds no link to the attacker's site (GitHub-flavored autolinks included). Screenshots go
  to test-artifacts/hostile-*.png.
- A fine-tune whose browser tab closes stops: the server notices the session has ended and
  the training loop stops after the current epoch (the server's log says so).

Skips with a reason when Chromium or Playwright is missing, unless LIGHTVIZ_REQUIRE_BROWSER
is set (see browser_support).
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

from browser_support import (  # noqa: F401 (pytest fixtures)
    ARTIFACTS,
    ERROR,
    SIDEBAR,
    assert_no_exception,
    browser,
    expect,
    page,
    server,
    settle,
)
from hostile import broken_archive

from lightviz.core.specs import LayerConfig, Plan, plan_to_token
from lightviz.ui.finetune import SESSION_GRACE_S

WAIT_MS = 60_000
EVIL = "[Session expired - click here](https://evil.example/login) www.evil.example"
WARNING = "[data-testid='stAlertContentWarning']"


def _text(locator) -> str:
    """What a reader sees: the word joiners ui.text.plain puts against autolinks are invisible."""
    return locator.inner_text().replace("\u2060", "")


def _no_evil_links(page, where: str) -> None:
    hosts = page.locator("a").evaluate_all("links => links.map(a => a.protocol + '//' + a.host)")
    assert not [h for h in hosts if "evil" in h or h.startswith("mailto")], f"{where}: {hosts}"


def test_markdown_from_links_and_file_names_shows_as_text(server, page, tmp_path):
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{server}/?model={quote(EVIL)}")
    settle(page)
    assert_no_exception(page, "a model link with Markdown")
    assert "[Session expired - click here](https://evil.example/login)" in _text(page.locator(WARNING).first)
    _no_evil_links(page, "model link")
    page.screenshot(path=str(ARTIFACTS / "hostile-model-link.png"))

    plan = Plan().with_override(f"**layer** {EVIL}", LayerConfig(keep_float=True))
    page.goto(f"{server}/?model=digits-mlp&plan={plan_to_token(plan)}")
    settle(page)
    page.wait_for_selector(WARNING, timeout=WAIT_MS)
    assert "**layer** [Session expired" in _text(page.locator(WARNING).first)
    _no_evil_links(page, "layer names in a plan link")

    name, content = broken_archive("npz", "bad-crc")
    path = tmp_path / f"{EVIL} {name}".replace("/", "∕")  # a file name holds no '/'
    path.write_bytes(content)
    sidebar = page.locator(SIDEBAR)
    sidebar.locator("[data-testid='stExpander'] summary").filter(has_text="Your own model and data").click()
    uploader = sidebar.locator("[data-testid='stFileUploader']").filter(has_text="Evaluation data")
    uploader.locator("input[type=file]").set_input_files(str(path))
    expect(uploader.locator("[data-testid='stFileChipIconSpinner']")).to_have_count(0, timeout=WAIT_MS)
    sidebar.get_by_role("button", name="Load data").click()
    page.wait_for_selector(ERROR, timeout=WAIT_MS)
    settle(page)
    assert_no_exception(page, "a broken archive with Markdown in its name")
    errors = page.locator(ERROR)
    assert errors.count() == 1
    text = _text(errors)
    assert "Bad CRC-32" in text and "previous data is still in use" in text and "[Session expired" in text
    _no_evil_links(page, "file name")
    page.set_viewport_size({"width": 1400, "height": 1600})
    settle(page)
    sidebar.screenshot(path=str(ARTIFACTS / "hostile-broken-archive.png"))


def test_a_finetune_stops_when_its_browser_session_ends(server, browser):
    log = ARTIFACTS / "streamlit-test_browser_hostile.log"
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{server}/finetune")
    settle(page)
    epochs = page.locator("[data-testid='stNumberInput']").filter(has_text="Epochs").locator("input")
    epochs.fill("200")
    epochs.press("Enter")
    page.get_by_role("button", name="Start fine-tuning").click()
    page.get_by_text(re.compile(r"epoch [1-9]\d* of 200")).first.wait_for(timeout=WAIT_MS)
    context.close()  # the tab goes away mid-training
    closed = time.monotonic()
    found = None
    while time.monotonic() - closed < SESSION_GRACE_S + 60 and not found:
        time.sleep(1)
        found = re.search(r"stopped the finetune of digits-cnn after (\d+) epoch\(s\): its browser session ended",
                          log.read_text())
    assert found, log.read_text()[-2000:]
    assert int(found.group(1)) < 200
