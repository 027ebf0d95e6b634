"""AppTest drives Explore's Deploy section and Trade-offs' latency axis; the digits pages load no
ONNX module until a file is built or a time measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lightviz.core.specs import Plan, plan_to_token
from lightviz.io.packed import load_packed

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def _app(**query) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _download(at: AppTest, label_start: str):
    found = [b for b in at.get("download_button") if b.proto.label.startswith(label_start)]
    assert found, [b.proto.label for b in at.get("download_button")]
    return found[0]


def test_deploy_builds_checked_files_and_measures_speed():
    plan = Plan.from_dict({"default": {"quant": {"bits": 4}}, "activations": {"bits": 8}})
    at = _app(model="digits-mlp", plan=plan_to_token(plan))
    _clean(at)
    assert _download(at, "Download plan JSON")  # the recipe needs no build
    assert not [b for b in at.get("download_button") if b.proto.label.startswith("Download ONNX")]
    at.button(key="deploy_build").click().run()
    _clean(at)
    onnx_button, packed_button = _download(at, "Download ONNX"), _download(at, "Download packed")
    assert onnx_button.proto.label.endswith("KiB") and packed_button.proto.label.endswith("KiB")
    captions = " ".join(c.value for c in at.caption)
    assert "Checked in onnxruntime: the same top-1 class as lightviz on 100.00% of 450 inputs" in captions
    assert "of packed tensors (exactly the size above)" in captions
    at.pills(key="speed_batches").set_value([1, 8])
    at.slider(key="speed_runs").set_value(3)
    at.button(key="speed_measure").click().run()
    _clean(at)
    labels = [m.label for m in at.metric]
    assert "Speed-up at batch 1" in labels and "Speed-up at batch 8" in labels
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    latency = next(c for c in charts if "Measured latency" in c["layout"].get("title", {}).get("text", ""))
    assert {trace["name"] for trace in latency["data"]} == {"onnxruntime float", "onnxruntime plan",
                                                            "torch eager float"}
    lessons = [e.value for e in (*at.info, *at.success)]
    assert any("compute layers ran as integer kernels" in text for text in lessons), lessons
    # the sidebar's report gets the speed measured for this plan (batch 1), and only for this plan
    speed = at.session_state["measured_speed"]["digits-mlp"]
    shown = next(m for m in at.metric if m.label == "Speed-up at batch 1").value
    assert speed["batch"] == 1 and f"{speed['float_ms'] / speed['compressed_ms']:.2f}" in shown
    assert speed["plan"] == plan.to_json()


def test_tradeoffs_latency_axis_measures_on_request_and_draws_the_measured_points():
    at = _app(model="digits-mlp")
    at.switch_page("pages/tradeoffs.py").run()
    at.radio(key="tradeoff_x").set_value("measured latency").run()
    _clean(at)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "measured latency" in chart["layout"]["title"]["text"]
    assert not any(trace.get("name") == "current plan" for trace in chart["data"])  # nothing measured yet
    button = at.button(key="measure_latency")
    assert button.label == "Measure 2 plans"  # the float model and the current plan
    button.click().run()
    _clean(at)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    points = {trace["name"]: trace["x"][0] for trace in chart["data"] if trace["name"] in ("float model", "current plan")}
    assert set(points) == {"float model", "current plan"} and all(x > 0 for x in points.values())
    assert "All shown plans are measured." in [c.value for c in at.caption]


def test_a_refused_packed_file_shows_one_error_and_the_onnx_file_still_builds():
    plan = Plan.from_dict({"default": {"quant": {"bits": 1}, "prune": {"sparsity": 0.3}}})
    at = _app(model="digits-mlp", plan=plan_to_token(plan))
    at.button(key="deploy_build").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "packed file could not be built" in errors[0]
    assert _download(at, "Download ONNX")


def test_the_packed_file_offered_for_download_loads_back():
    from lightviz.ui.deploy import FILES_KEY

    at = _app(model="digits-cnn")
    at.button(key="deploy_build").click().run()
    _download(at, "Download packed")
    built = next(iter(at.session_state[FILES_KEY].values()))  # the bytes the button serves
    packed = load_packed(built.packed)
    assert packed.plan == Plan() and packed.model_name == "digits-cnn"


def test_digits_pages_import_no_onnx_module():
    code = (
        "import sys\nfrom streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file('app.py', default_timeout=120).run()\n"  # Explore
        "assert not at.exception, [e.value for e in at.exception]\n"
        "for page in ('pages/tradeoffs.py', 'pages/learn.py'):\n"
        "    at.switch_page(page).run()\n"
        "    assert not at.exception, [e.value for e in at.exception]\n"
        # torch.onnx is torch's own module (torchvision imports it); the onnx packages must stay out
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript', 'onnx_ir') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
