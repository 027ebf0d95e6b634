"""Key press to numbers on screen, in a real browser, against Engine.evaluate for the same plan.

DESIGN.md's budget: on torchvision resnet18 with 32 generated inputs, a Bits key press on
Explore shows new numbers within 1.5x of `Engine.evaluate` for the same plan and inputs.

1. A `streamlit run app.py` server and Debian's Chromium (Playwright) open
   `/?model=resnet18&n=32`; the first evaluation (float and 8-bit) is waited out.
2. Bits goes 8 -> 7 -> ... one ArrowLeft at a time; each press is timed until the Size and
   KL metrics both show new values, then the page is left to settle.
3. This process then times `Engine.evaluate` for the same plans on the same 32 inputs, with
   the float model's logits cached as they are in the app (a fresh engine: no layer cached).

Both run one after the other, never at once, on the same machine; read the ratio, and the
load average printed with it. `--profile` also runs the same key press through Streamlit's
AppTest in this process under cProfile (the server's side of a key press, without the
browser) and prints where the time goes.

Run: .venv/bin/python benchmarks/bench_app_latency.py [--model resnet18] [--samples 32] [--presses 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Before torch loads, here as in the server: OpenMP threads that spin while waiting make torch many
# times slower on a busy machine (the Makefile sets the same), and both sides must run alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CHROMIUM = "/usr/bin/chromium"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
BUDGET = 1.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    streamlit = str(Path(sys.executable).parent / "streamlit")
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    log = open(ROOT / "test-artifacts" / "bench-app-latency.log", "w")
    proc = subprocess.Popen([streamlit, "run", "app.py", "--server.headless", "true", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("streamlit did not start; see test-artifacts/bench-app-latency.log")


def metric(page, label: str) -> str:
    return page.evaluate("""(label) => { for (const m of document.querySelectorAll(
        "[data-testid='stMain'] [data-testid='stMetric']")) {
          const l = m.querySelector("[data-testid='stMetricLabel']");
          if (l && l.innerText.trim() === label) return m.querySelector("[data-testid='stMetricValue']").innerText; }
        return null; }""", label)


def measure(url: str, model: str, samples: int, presses: int) -> list[tuple[int, float, float]]:
    """(bits, browser seconds, Engine.evaluate seconds) per key press, measured in turns."""
    from playwright.sync_api import sync_playwright

    from lightviz.core.engine import Engine, uniform_plan
    from lightviz.io import datasets, zoo

    bundle = zoo.load_model(model)
    data = datasets.eval_data_for(bundle, samples)
    engine = Engine(bundle.model)  # each new bit-width misses its layer cache, as in the app
    engine.logits(None, data)  # the float logits are cached in the app as well
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(600_000)
        page.goto(f"{url}/?model={model}&n={samples}")
        page.wait_for_selector("[data-testid='stSlider']", timeout=600_000)
        page.wait_for_selector(IDLE, timeout=600_000)
        _start_if_asked(page)
        page.wait_for_selector("[data-testid='stMetric']", timeout=600_000)
        page.wait_for_selector(IDLE, timeout=600_000)
        slider = page.locator("[data-testid='stSlider']").filter(has_text="Bits").locator("input[type=range]").first
        for bits in range(7, 7 - presses, -1):
            before = (metric(page, "Size"), metric(page, "KL divergence"))
            slider.focus()
            start = time.perf_counter()
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(
                """([size, kl]) => { const get = (label) => { for (const m of document.querySelectorAll(
                      "[data-testid='stMain'] [data-testid='stMetric']")) {
                      const l = m.querySelector("[data-testid='stMetricLabel']");
                      if (l && l.innerText.trim() === label) return m.querySelector(
                          "[data-testid='stMetricValue']").innerText; } return null; };
                    return get("Size") !== size && (kl === null || get("KL divergence") !== kl); }""",
                arg=list(before), timeout=600_000)
            seconds = time.perf_counter() - start
            page.wait_for_selector(IDLE, timeout=600_000)
            page.wait_for_timeout(1000)
            page.wait_for_selector(IDLE, timeout=600_000)
            start = time.perf_counter()  # the server is idle now: the same plan in this process
            engine.evaluate(uniform_plan(bits), data)
            rows.append((bits, seconds, time.perf_counter() - start))
        browser.close()
    return rows


def _start_if_asked(page) -> None:
    """Big models wait for a click before their first evaluation (Explore's Evaluate button)."""
    button = page.get_by_role("button", name="Evaluate now")
    if button.count():
        button.first.click()
        page.wait_for_selector("[data-testid='stMetric']", timeout=600_000)
        page.wait_for_timeout(500)
        page.wait_for_selector(IDLE, timeout=600_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--presses", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="profile one key press's script run (AppTest)")
    args = parser.parse_args()
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    proc, url = start_server(env)
    try:
        rows = measure(url, args.model, args.samples, args.presses)
    finally:
        proc.terminate()
        proc.wait(20)
    latencies, reference = [r[1] for r in rows], [r[2] for r in rows]
    ratios = [b / e for _, b, e in rows]
    ratio = statistics.median(ratios)
    report = {"model": args.model, "samples": args.samples, "bits": [r[0] for r in rows],
              "browser_s": [round(x, 3) for x in latencies], "engine_evaluate_s": [round(x, 3) for x in reference],
              "ratios": [round(x, 2) for x in ratios], "median_ratio": round(ratio, 2),
              "budget": BUDGET, "loadavg": os.getloadavg()}
    print(json.dumps(report, indent=2))
    print(f"key press -> numbers on screen: {ratio:.2f}x Engine.evaluate (budget {BUDGET}x) "
          f"{'OK' if ratio <= BUDGET else 'OVER BUDGET'}; load average {os.getloadavg()[0]:.2f}")
    if args.profile:
        profile_key_press(args.model, args.samples)


def profile_key_press(model: str, samples: int) -> None:
    """cProfile of the script run a Bits change causes (AppTest: no browser, same code).

    AppTest runs the script in a thread of its own: every thread started during the run is
    profiled, and the profiles are merged.
    """
    import cProfile
    import pstats
    import threading

    from streamlit.runtime import pages_manager
    from streamlit.testing.v1 import AppTest

    original_init = pages_manager.PagesManager.__init__

    def init(self, *args, **kwargs):  # as tests/conftest.py: app.py's router runs every time
        original_init(self, *args, **kwargs)
        pages_manager.PagesManager.uses_pages_directory = False

    pages_manager.PagesManager.__init__ = init
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.query_params["model"], at.query_params["n"] = model, str(samples)
    at.run()
    for button in at.button:
        if button.label == "Evaluate now":
            button.click().run()
    at.select_slider(key="bits").set_value(6)
    profiles, original_run = [], threading.Thread.run

    def profiled_run(self):
        profiler = cProfile.Profile()
        profiles.append(profiler)
        profiler.runcall(original_run, self)

    threading.Thread.run = profiled_run
    try:
        start = time.perf_counter()
        at.run()
        seconds = time.perf_counter() - start
    finally:
        threading.Thread.run = original_run
    print(f"AppTest run after bits 8 -> 6: {seconds:.2f} s (load average {os.getloadavg()[0]:.2f})")
    stats = pstats.Stats(profiles[0])
    for profiler in profiles[1:]:
        stats.add(profiler)
    stats.sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    main()
