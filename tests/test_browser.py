"""Browser tests: Playwright driving Debian's Chromium against a real `streamlit run app.py`.

Visits every page, moves the bits control on Explore and waits for the accuracy to change,
opens a shared link and checks the plan is restored, fails on any exception element, saves a
screenshot of each page under test-artifacts/, and records the slider-to-number latency.

Skips with a reason when Chromium or Playwright is missing, unless LIGHTVIZ_REQUIRE_BROWSER
is set (CI sets it): then a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
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

from playwright.sync_api import sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    streamlit = shutil.which("streamlit", path=str(Path(sys.executable).parent)) or "streamlit"
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit.log", "w")
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


def test_deep_link_to_a_page_on_a_fresh_server(server, page):
    """The first request a new server gets may be a shared link to a page other than Explore."""
    page.goto(f"{server}/tradeoffs?model=digits-mlp")
    settle(page)
    assert_no_exception(page, "deep link on a fresh server")
    assert page.locator("h1").first.inner_text() == "Trade-offs"
    from lightviz.zoo import SAMPLE_MODELS

    assert SAMPLE_MODELS["digits-mlp"].description in page.locator("[data-testid='stSidebar']").inner_text()


@pytest.mark.parametrize("path,name", [("", "explore"), ("tradeoffs", "tradeoffs"), ("sensitivity", "sensitivity"),
                                       ("finetune", "finetune"), ("learn", "learn")])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_page_loads_without_exception(server, browser, path, name, theme):
    context = browser.new_context(viewport={"width": 1400, "height": 2400}, color_scheme=theme)  # tall: the app scrolls inside
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{server}/{path}")
    settle(page)
    assert_no_exception(page, name)
    assert page.locator("h1").count() >= 1
    page.wait_for_timeout(1500)  # let Plotly draw before the screenshot
    page.screenshot(path=str(ARTIFACTS / f"{name}-{theme}.png"), full_page=True)
    context.close()


def test_explore_bits_change_updates_accuracy_quickly(server, page):
    page.goto(server)
    settle(page)
    accuracy = [metric_value(page, "Accuracy")]
    sizes = [metric_value(page, "Size")]
    slider = page.locator("[data-testid='stSlider']").filter(has_text="Bits").locator("input[type=range]").first
    latencies = []
    for _ in range(6):  # 8 -> 7 -> 6 -> 5 -> 4 -> 3 -> 2 bits
        slider.focus()
        start = time.perf_counter()
        page.keyboard.press("ArrowLeft")
        # every bit-width has its own size, so the Size metric tells the numbers were redrawn
        page.wait_for_function(
            """([label, old]) => [...document.querySelectorAll("[data-testid='stMetric']")]
                 .some(m => m.innerText.startsWith(label) &&
                            m.querySelector("[data-testid='stMetricValue']").innerText !== old)""",
            arg=["Size", sizes[-1]], timeout=60_000)
        latencies.append(time.perf_counter() - start)
        settle(page)
        accuracy.append(metric_value(page, "Accuracy"))
        sizes.append(metric_value(page, "Size"))
        assert_no_exception(page, "explore after a bits change")
    page.screenshot(path=str(ARTIFACTS / "explore-2bit.png"), full_page=True)
    assert float(accuracy[-1].rstrip("%")) < float(accuracy[0].rstrip("%")) - 5  # 2 bits loses accuracy
    report = {"accuracy_by_step": accuracy, "size_by_step": sizes, "latencies_s": latencies,
              "median_s": statistics.median(latencies)}
    (ARTIFACTS / "latency.json").write_text(json.dumps(report, indent=2))
    print(f"\nbits change -> numbers on screen: median {report['median_s'] * 1e3:.0f} ms over {len(latencies)}")


def test_shared_link_restores_model_and_plan(server, page):
    from lightviz.data import eval_data_for
    from lightviz.engine import Engine, uniform_plan
    from lightviz.specs import plan_to_token
    from lightviz.zoo import load_model

    plan = uniform_plan(3, "asymmetric", "tensor", sparsity=0.5)
    bundle = load_model("digits-mlp")
    expected = Engine(bundle.model).evaluate(plan, eval_data_for(bundle))
    page.goto(f"{server}/?model=digits-mlp&plan={plan_to_token(plan)}")
    settle(page)
    assert_no_exception(page, "shared link")
    assert metric_value(page, "Accuracy") == f"{expected.accuracy:.2%}"
    page.screenshot(path=str(ARTIFACTS / "shared-link.png"), full_page=True)
    # the URL keeps sharing the same plan after the page settles
    assert f"plan={plan_to_token(plan)}" in page.url and "model=digits-mlp" in page.url
