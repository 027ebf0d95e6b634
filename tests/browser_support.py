"""Shared set-up of the browser tests: a real `streamlit run app.py`, Debian's Chromium, helpers.

Importing this module from a test module skips that module with a reason when Chromium or
Playwright is missing, unless LIGHTVIZ_REQUIRE_BROWSER is set (CI sets it): then a missing
browser is a failure. Test modules import the fixtures they use by name:

    from browser_support import browser, page, server  # noqa: F401 (pytest fixtures)

Each importing module gets its own server (module scope) and a fresh browser context, so a
new Streamlit session, per test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
ERROR = "[data-testid='stAlertContentError']"  # st.error
SIDEBAR = "[data-testid='stSidebar']"
REQUIRED = bool(os.environ.get("LIGHTVIZ_REQUIRE_BROWSER"))


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


if _missing():
    if REQUIRED:
        pytest.fail(f"browser tests are required here (LIGHTVIZ_REQUIRE_BROWSER): {_missing()}", pytrace=False)
    pytest.skip(_missing(), allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402,F401 (expect: for the tests)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(request):
    """The app's URL; its log goes to test-artifacts/streamlit-<test module>.log."""
    port = _free_port()
    streamlit = shutil.which("streamlit", path=str(Path(sys.executable).parent)) or "streamlit"
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"streamlit-{request.module.__name__.rpartition('.')[2]}.log", "w")
    proc = subprocess.Popen(
        [streamlit, "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],  # tests edit nothing; a watcher only costs time
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not start in 90 s; see {log.name}")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def settle(page) -> None:
    """Wait until the script has run and no rerun is pending."""
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_timeout(300)
    page.wait_for_selector(IDLE, timeout=60_000)


def assert_no_exception(page, where: str) -> None:
    errors = page.locator("[data-testid='stException']")
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()[:500]}"


def metric_value(page, label: str) -> str:
    """The value of the main-area metric whose label is exactly `label`."""
    metric = page.locator("[data-testid='stMain'] [data-testid='stMetric']").filter(
        has=page.locator("[data-testid='stMetricLabel']").get_by_text(label, exact=True)).first
    return metric.locator("[data-testid='stMetricValue']").inner_text()
