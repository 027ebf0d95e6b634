"""The sidebar's "Download report": what this session computed, as one self-contained HTML file.

The report is built only when the button is pressed (Streamlit's deferred download: the
callable runs in another thread, without session access), from a snapshot taken while the
page runs: the model, data and plan, this model's sweep and history, its sensitivity run, the
last fine-tune of it, plan A when one is pinned, and a measured speed if one was recorded
(session key "measured_speed": {model name: {"float_ms", "compressed_ms", "runtime", "batch"}}).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lightviz.analysis.report import TrainingSection, collect_report
from lightviz.plots.images import safe_filename
from lightviz.plots.report import render_report
from lightviz.ui import registry, state

SPEED_KEY = "measured_speed"


def download_button() -> None:
    """The "Download report" button (the file is made on click)."""
    snapshot, model = report_arguments(), state.current_name()
    name = safe_filename(f"lightviz-report-{registry.label(model) if registry.is_derived(model) else model}")
    st.download_button("Download report", data=lambda: build(snapshot), file_name=f"{name}.html", mime="text/html",
                       key="report_download", icon=":material/description:", on_click="ignore",
                       help="One HTML file with the summary, the plan, the charts and how to reproduce the numbers "
                            "(plan A against B when a plan is pinned; sensitivity and fine-tuning when run). It opens "
                            "offline: the charting library is inside the file.")


def build(arguments: dict) -> bytes:
    """The report's HTML bytes from `report_arguments()`."""
    return render_report(collect_report(**arguments)).encode("utf-8")


def report_arguments() -> dict:
    """collect_report's keyword arguments from the session, for the current model and data."""
    ss, name, data = st.session_state, state.current_name(), state.current_data()
    model_arg, extra, caveats = _command_parts(name, data)
    sweep_found = ss.get("sweeps", {}).get(name)
    history = pd.DataFrame(ss.get("history", []))
    if len(history):
        history = history[(history["model"] == name) & (history["data"] == data.description)].reset_index(drop=True)
    sens = ss.get("sens_results", {}).get(name)
    training, seeds = _training(name)
    return dict(
        engine=state.current_engine(), bundle=state.current_bundle(), data=data, plan=state.current_plan(),
        sweep=sweep_found["results"] if sweep_found and sweep_found["data"] == data.description else None,
        history=history if len(history) else None, sensitivity=None if sens is None else sens["df"],
        training=training, pinned=state.pinned_plan(), compare_layer=ss.get("ab_layer"),
        speed=_speed(name, data), model_arg=model_arg, extra_args=tuple(extra),
        report_args=_section_args(sweep_found, sens, training), caveat=" ".join(caveats), seeds=seeds)


def _speed(name: str, data) -> dict | None:
    """The speed measured for the current plan on the current data (Explore's Deploy panel), if any."""
    found = st.session_state.get(SPEED_KEY, {}).get(name)
    if not found or found.get("plan", state.current_plan().to_json()) != state.current_plan().to_json() \
            or found.get("data", data.description) != data.description:
        return None
    return {key: found[key] for key in ("float_ms", "compressed_ms", "runtime", "batch")}


def _section_args(sweep_found: dict | None, sens: dict | None, training: TrainingSection | None) -> tuple[str, ...]:
    """`report` flags that recompute this session's sections (uniform sweeps only: no sparsity)."""
    out = []
    if sweep_found is None:
        out += ["--sweep-bits", "none"]
    if sens is not None:
        out += ["--sensitivity", ",".join(str(b) for b in sens["bits"])]
    if training is not None and training.kind == "finetune":
        out += ["--finetune", str(training.settings.get("epochs", 1)), "--seed", str(training.settings.get("seed", 0))]
    return tuple(out)


def _command_parts(name: str, data) -> tuple[str, list[str], list[str]]:
    """How the CLI names this model and data, and why it may not reproduce the numbers exactly."""
    extra, caveats = [], []
    model_arg = name
    if name.startswith(registry.UPLOAD_PREFIX):
        model_arg = name[len(registry.UPLOAD_PREFIX):].rpartition("#")[0]
        caveats.append(f"The model was uploaded: give the path of {model_arg} and, for a state_dict, its "
                       "architecture with --arch, as when it was uploaded.")
    elif registry.is_derived(name):
        model_arg = registry.base_name(name)
        caveats.append("The model's weights were fine-tuned in the app and exist only there: the command evaluates "
                       f"the original {model_arg}.")
    if st.session_state.get(state.USER_DATA_KEY, {}).get(name) is not None:
        extra += ["--data", data.name]
        caveats.append(f"The data was uploaded ({data.name}): give its path, with the image size and normalization "
                       "used in the app.")
    n = state.eval_size()
    if n is not None:
        extra += ["--max-samples", str(n)]
    return model_arg, extra, caveats


def _training(name: str) -> tuple[TrainingSection | None, dict]:
    """The session's last finished fine-tune or distillation of this model (or of its original)."""
    job = st.session_state.get("finetune_job")
    if (job is None or job.running or job.result is None
            or registry.base_name(job.model_name) != registry.base_name(name)):
        return None, {}
    settings = {key: value for key, value in job.settings.items() if key not in ("student",)}
    result = job.result
    seeds = {"fine-tuning": str(settings.get("seed", 0))}
    if job.kind == "finetune":
        return TrainingSection("finetune", job.label, result.history, result.accuracy_before, result.accuracy_after,
                               result.float_accuracy, settings, result.size_bytes), seeds
    return TrainingSection("distill", job.label, job.history, None, None, result.teacher_accuracy, settings,
                           distill_table=result.table()), seeds
