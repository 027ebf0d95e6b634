"""Browser tests of sharing: reports open offline in Chromium, chart images download at slide
size, the A/B pair survives a shared link, the app's report download, presentation mode.

Reports are opened from file:// with every other request aborted (and the context offline): a
report that needed the network would fail here. Screenshots (report, its print PDF, Compare,
presentation) go to test-artifacts/.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from browser_support import (  # noqa: F401 (pytest fixtures)
    ARTIFACTS,
    SIDEBAR,
    assert_no_exception,
    browser,
    server,
    settle,
)
from PIL import Image

from lightviz.cli import main
from lightviz.core.engine import Engine, uniform_plan
from lightviz.io import datasets, zoo

SAMPLES = ["digits-mlp", "digits-cnn", "digits-mobilenet", "digits-resnet"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """name -> report file: one per sample model (4 bits), and 'full' with every section."""
    folder = tmp_path_factory.mktemp("reports")
    made = {}
    for name in SAMPLES:
        made[name] = folder / f"{name}.html"
        assert main(["report", "--model", name, "--bits", "4", "--sweep-bits", "none", "--out", str(made[name])]) == 0
    made["full"] = folder / "full.html"
    assert main(["report", "--model", "digits-cnn", "--bits", "3", "--scheme", "asymmetric", "--sweep-bits", "2,8",
                 "--sensitivity", "2,8", "--finetune", "1", "--compare-to", uniform_plan(8).to_json(),
                 "--out", str(made["full"])]) == 0
    return made


def open_offline(browser, path: Path, viewport=(1100, 900)):
    """(context, page, problems): the report opened with all network blocked; problems collects
    console errors, page errors, dialogs and any request other than the file itself."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    problems: list[str] = []
    url = path.as_uri()

    def route(request_route):
        if request_route.request.url.split("#")[0] == url:
            request_route.continue_()
        else:
            problems.append(f"request {request_route.request.url[:120]}")
            request_route.abort()

    page.route("**/*", route)
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.goto(url)
    context.set_offline(True)
    page.wait_for_selector("body[data-charts-drawn]")
    return context, page, problems


def _figure_count(html: str) -> int:
    return len(json.loads(re.search(r'id="lv-figures">(.*?)</script>', html, re.S).group(1))["figures"])


@pytest.mark.parametrize("name", [*SAMPLES, "full"])
def test_report_renders_every_chart_offline_with_the_engines_numbers(browser, reports, name):
    html = reports[name].read_text()
    context, page, problems = open_offline(browser, reports[name])
    expected_charts = _figure_count(html)
    assert page.get_attribute("body", "data-charts-drawn") == str(expected_charts)
    assert page.locator(".js-plotly-plot").count() == expected_charts
    assert page.locator(".js-plotly-plot .main-svg").count() >= expected_charts  # every chart drew its SVG
    shown = json.loads(page.locator("#lv-numbers").text_content())
    model = "digits-cnn" if name == "full" else name
    bundle = zoo.load_model(model)
    plan = uniform_plan(3, "asymmetric") if name == "full" else uniform_plan(4)
    expected = Engine(bundle.model).evaluate(plan, datasets.eval_data_for(bundle))
    assert shown["evaluation"] == expected.to_dict()
    card = lambda field: page.locator(f".card[data-field='{field}'] .value").inner_text()  # noqa: E731
    assert card("accuracy") == f"{expected.accuracy * 100:.2f} %"
    assert card("size_bytes") == f"{expected.size_bytes:,} B"
    assert card("compression_ratio") == f"{expected.compression_ratio:.2f}×"
    if name == "full":
        for section in ("#compare", "#sensitivity", "#training"):
            assert page.locator(f"{section} .js-plotly-plot").count() >= 1, section
        _check_image_downloads(page)
        _screenshots(page)
    assert problems == [], problems
    context.close()


def _check_image_downloads(page) -> None:
    """The report's own modebar buttons export a chart as PNG and SVG (Plotly, in the browser)."""
    chart = page.locator(".js-plotly-plot").first
    chart.hover()
    with page.expect_download() as download:
        chart.locator(".modebar-btn[data-title^='Download PNG']").click()
    image = Image.open(io.BytesIO(Path(download.value.path()).read_bytes()))
    image.load()
    assert (image.format, image.size) == ("PNG", (1920, 1080))
    with page.expect_download() as download:
        chart.locator(".modebar-btn[data-title^='Download SVG']").click()
    text = Path(download.value.path()).read_text()
    assert text.startswith("<svg") and 'width="1920"' in text[:400], text[:300]


def _screenshots(page) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "report-full.png"), full_page=True)
    page.emulate_media(media="print")
    page.set_viewport_size({"width": 760, "height": 1000})  # about A4's printable width
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "report-print.png"), full_page=True)
    pdf = page.pdf(format="A4", print_background=True)
    (ARTIFACTS / "report-print.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 4


def test_hostile_names_stay_text_in_the_browser(browser, tmp_path):
    from test_report import HOSTILE, hostile_report

    path = tmp_path / "hostile.html"
    path.write_text(hostile_report())
    context, page, problems = open_offline(browser, path)
    assert problems == [], problems  # no alert dialog, no request for the <img src=x>
    assert HOSTILE in page.locator("h1").inner_text()
    context.close()


# --- the app ---------------------------------------------------------------------------------------


def _download_chart(page, chart) -> Path:
    chart.hover()
    page.wait_for_timeout(300)
    with page.expect_download() as download:
        chart.locator(".modebar-btn[data-title^='Download plot']").click()
    return Path(download.value.path())


def test_chart_downloads_as_png_and_svg_at_slide_size(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1200}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server)
    settle(page)
    png = _download_chart(page, page.locator(".stPlotlyChart").first)
    image = Image.open(io.BytesIO(png.read_bytes()))
    image.load()  # a truncated or invalid PNG fails here
    assert (image.format, image.size) == ("PNG", (1920, 1080))
    sidebar = page.locator(SIDEBAR)
    sidebar.get_by_text("Chart images for slides").click()
    sidebar.get_by_text("SVG (vector)").click()
    settle(page)
    svg = _download_chart(page, page.locator(".stPlotlyChart").first).read_text()
    assert svg.startswith("<svg") and 'width="1920"' in svg[:400]
    assert_no_exception(page, "chart downloads")
    context.close()


def test_ab_pair_survives_a_link_goes_into_the_report_and_presentation_mode(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server)
    settle(page)
    page.get_by_role("button", name="Pin this plan as A").click()
    settle(page)
    slider = page.locator("[data-testid='stSlider']").filter(has_text="Bits").locator("input[type=range]").first
    for _ in range(2):  # 8 -> 6 bits: plan B
        slider.focus()
        page.keyboard.press("ArrowLeft")
        settle(page)
    page.locator(SIDEBAR).get_by_role("link", name="Compare", exact=True).click()
    settle(page)
    assert_no_exception(page, "compare")
    assert "a=" in page.url and "plan=" in page.url
    link = page.url
    with page.expect_download() as download:
        page.locator(SIDEBAR).get_by_role("button", name="Download report").click()
    html = Path(download.value.path()).read_text()
    assert 'id="compare"' in html and "int8 symm/channel (pinned)" in html and "int6 symm/channel" in html
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "compare.png"))

    fresh = browser.new_context(viewport={"width": 1400, "height": 2400})
    other = fresh.new_page()
    other.set_default_timeout(60_000)
    other.goto(link)  # the shared link, in a new session
    settle(other)
    main_text = other.locator("[data-testid='stMain']").inner_text()
    assert "A (pinned): int8 symm/channel" in main_text and "B (current): int6 symm/channel" in main_text
    other.locator(SIDEBAR).get_by_text("Presentation mode").click()
    settle(other)
    other.wait_for_timeout(1500)
    assert not other.locator(SIDEBAR).is_visible()
    assert other.locator("[data-testid='stMain'] [data-testid='stButton']").filter(has_text="Swap").count() == 0 or \
        not other.get_by_role("button", name="Swap A and B").is_visible()
    other.screenshot(path=str(ARTIFACTS / "presentation.png"))
    other.get_by_role("button", name="Exit presentation").click()
    settle(other)
    assert other.locator(SIDEBAR).is_visible()
    assert_no_exception(other, "presentation")
    fresh.close()
    context.close()
