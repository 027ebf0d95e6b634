"""Browser tests: Playwright driving Debian's Chromium against a real `streamlit run app.py`.

Visits every page, moves the bits control on Explore and waits for the accuracy to change,
opens a shared link and checks the plan is restored, fails on any exception element, saves a
screenshot of each page under test-artifacts/, and records the slider-to-number latency.

Skips with a reason when Chromium or Playwright is missing, unless LIGHTVIZ_REQUIRE_BROWSER
is set (CI sets it): then a missing browser is a failure (see browser_support).
"""

from __future__ import annotations

import json
import statistics
import time

import pytest
from browser_support import (  # noqa: F401 (pytest fixtures)
    ARTIFACTS,
    assert_no_exception,
    browser,
    metric_value,
    page,
    server,
    settle,
)


def test_deep_link_to_a_page_on_a_fresh_server(server, page):
    """The first request a new server gets may be a shared link to a page other than Explore."""
    page.goto(f"{server}/tradeoffs?model=digits-mlp")
    settle(page)
    assert_no_exception(page, "deep link on a fresh server")
    assert page.locator("h1").first.inner_text() == "Trade-offs"
    from lightviz.io.zoo import SAMPLE_MODELS

    assert SAMPLE_MODELS["digits-mlp"].description in page.locator("[data-testid='stSidebar']").inner_text()


@pytest.mark.parametrize("path,name", [("", "explore"), ("tradeoffs", "tradeoffs"), ("sensitivity", "sensitivity"),
                                       ("methods", "methods"), ("finetune", "finetune"), ("learn", "learn")])
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
    from lightviz.core.engine import Engine, uniform_plan
    from lightviz.core.specs import plan_to_token
    from lightviz.io.datasets import eval_data_for
    from lightviz.io.zoo import load_model

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


CUT_TEXT = """() => [...document.querySelectorAll("[data-testid='stApp'] *")].filter(e =>
    getComputedStyle(e).textOverflow === "ellipsis" && e.scrollWidth > e.clientWidth + 1 && e.innerText.trim())
    .map(e => e.innerText.slice(0, 60))"""


def _slider(page, label: str):
    return page.locator("[data-testid='stSlider']").filter(has_text=label).locator("input[type=range]").first


def test_quick_key_presses_all_land(server, page):
    """Six presses ~100 ms apart on Bits, then on Sparsity: the controls end where the keys put them,
    and the numbers are the engine's for that plan (a rerun must never reset a control mid-press).
    Then, on the same 1280x800 page: the layout fits, and Back returns to the previous plan."""
    from lightviz.core.engine import Engine, uniform_plan
    from lightviz.io.datasets import eval_data_for
    from lightviz.io.zoo import load_model

    page.set_viewport_size({"width": 1280, "height": 800})  # a laptop screen: the layout checks below
    page.goto(server)
    settle(page)
    for label, key in (("Bits", "ArrowLeft"), ("Sparsity", "ArrowRight")):
        slider = _slider(page, label)
        slider.focus()
        for _ in range(6):
            page.keyboard.press(key)
            page.wait_for_timeout(100)
        settle(page)
        page.wait_for_timeout(1000)  # anything still queued would move the slider now
        settle(page)
    bits, sparsity = _slider(page, "Bits"), _slider(page, "Sparsity")
    assert bits.get_attribute("aria-valuetext") == "2", "Bits lost key presses"
    assert sparsity.get_attribute("aria-valuetext") == "0.30", "Sparsity lost key presses"
    bundle = load_model("digits-cnn")
    expected = Engine(bundle.model).evaluate(uniform_plan(2, sparsity=0.3), eval_data_for(bundle))
    assert metric_value(page, "Accuracy") == f"{expected.accuracy:.2%}"
    assert "plan=" in page.url
    assert_no_exception(page, "quick key presses")
    # at 1280x800: the layer table needs no sideways scrolling, no label is cut, no Deploy button
    assert page.evaluate("""() => [...document.querySelectorAll("[data-testid='stDataFrame'] .dvn-scroller")]
        .every(e => e.scrollWidth <= e.clientWidth)"""), "the layer table scrolls sideways at 1280 px"
    assert page.evaluate(CUT_TEXT) == [], "labels cut with an ellipsis at 1280 px"
    assert page.get_by_role("button", name="Deploy").count() == 0
    # the browser's Back button returns to the previous plan
    before = page.url
    bits.focus()
    page.keyboard.press("ArrowLeft")  # 2 -> 1 bit: a new URL
    page.wait_for_function("(url) => window.location.href !== url", arg=before)
    settle(page)
    page.go_back()
    settle(page)
    page.wait_for_timeout(500)
    settle(page)
    assert _slider(page, "Bits").get_attribute("aria-valuetext") == "2", "Back did not restore the plan"
    assert page.url == before and metric_value(page, "Accuracy") == f"{expected.accuracy:.2%}"


def test_methods_side_by_side_and_a_floating_point_grid(server, page):
    """Compare GPTQ with round-to-nearest on the Methods page; open an FP8 plan's histogram."""
    from lightviz.core.specs import LayerConfig, Plan, QuantSpec, plan_to_token

    page.goto(f"{server}/methods?model=digits-mlp")
    settle(page)
    page.get_by_role("button", name="Compare methods").click()
    settle(page)
    assert_no_exception(page, "methods page after a comparison")
    page.get_by_text("Per-layer error at", exact=True).scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "methods-compared.png"))
    assert page.locator("[data-testid='stPlotlyChart']").count() >= 3
    plan = Plan(default=LayerConfig(quant=QuantSpec(format="fp8_e4m3", granularity="tensor")))
    page.goto(f"{server}/?model=digits-mlp&plan={plan_to_token(plan)}")
    settle(page)
    assert_no_exception(page, "an fp8 plan")
    note = page.get_by_text("253 floating-point levels", exact=False).first
    note.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "explore-fp8-grid.png"))
    assert "quantization levels (253, ticks)" in page.locator("[data-testid='stPlotlyChart']").last.inner_text() or \
        page.get_by_text("quantization levels (253", exact=False).count() >= 1
