"""Fine-tune page's sections: settings, a background training job with live progress and a
stop button, the results, keeping the fine-tuned weights, and their points on Trade-offs.

Training runs in a worker thread so that the page stays responsive: each rerun (a click on
Stop, a page switch) only redraws, and the job reports per epoch into its `Job` object. Stop
sets a flag that `finetune`'s progress callback reads after the current epoch, so a stopped
job still returns a consistent model. A job whose browser session ended (tab closed, connection
lost for longer than SESSION_GRACE_S) stops the same way: nobody is left to see it, and its
thread would keep a CPU busy until the last epoch. Jobs live in the session (one at a time); a finished
fine-tune becomes a point on the Trade-offs chart, linked to its Plan. "Use these weights"
registers the model (lightviz/ui/registry.py) and makes it the session's current model; the
plan is kept, and the original is one click away.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import streamlit as st

from lightviz.analysis.sweep import plan_label
from lightviz.core.evaldata import subset
from lightviz.core.trainconfig import TrainConfig
from lightviz.core.task import get_task
from lightviz.io.datasets import digits_split
from lightviz.io.text import lm_train_data
from lightviz.plots import finetune as finetune_plots
from lightviz.plots import lm as lm_plots
from lightviz.recover import saved
from lightviz.recover.distill import distill, student_names
from lightviz.recover.finetune import finetune
from lightviz.recover.training import HISTORY_COLUMNS
from lightviz.ui import charts, compute, registry, state
from lightviz.ui.format import human_bytes, percent
from lightviz.ui.text import plain

JOB_KEY = "finetune_job"
POINTS_KEY = "finetuned_points"  # rows drawn on Trade-offs
MODES = ("Fine-tune the current plan", "Distill into a smaller model")
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
BATCH_SIZES = [16, 32, 64, 128, 256]
TRAIN_SAMPLES = [None, 512, 256, 128]  # None: the whole training split
POLL_S = 0.25
SESSION_GRACE_S = 10.0  # a browser that reconnects within this keeps its job running
DEFAULTS = TrainConfig()
_LOG = logging.getLogger(__name__)
LM_DEFAULTS = TrainConfig(epochs=4, lr=3e-4, batch_size=16)  # a trained LM wants small steps


@dataclass(eq=False)
class Job:
    """One training run in a worker thread; the thread writes history, result and error."""

    kind: str  # "finetune" | "distill"
    model_name: str
    label: str
    settings: dict
    plan_json: str | None = None
    total_epochs: int = 1
    before: float | None = None  # the plan's accuracy before fine-tuning, and the float model's
    float_accuracy: float | None = None
    history: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=HISTORY_COLUMNS))
    runs: dict = field(default_factory=dict)
    result: object = None
    error: str | None = None
    stop: bool = False
    recorded: bool = False
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    thread: threading.Thread | None = None
    session_ended: Callable[[], bool] = lambda: False  # see session_watch()
    abandoned: bool = False  # stopped because its session ended

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def progress(self, history: pd.DataFrame) -> bool:
        """finetune/distill callback: keep the history; False (stop) once Stop was pressed or the
        browser session that started the job has ended."""
        if "run" in history:
            self.runs[history["run"].iloc[0]] = history
            history = pd.concat(list(self.runs.values()), ignore_index=True)
        self.history = history
        if not self.stop and self.session_ended():
            self.stop = self.abandoned = True
            _LOG.warning("lightviz: stopped the %s of %s after %d epoch(s): its browser session ended",
                         self.kind, self.model_name, len(history))
        return not self.stop

    def start(self, work) -> None:
        def run() -> None:
            try:
                self.result = work(self.progress)
            except Exception as error:  # noqa: BLE001 - shown on the page, never a traceback
                self.error = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
            self.seconds = time.perf_counter() - self.started
        self.thread = threading.Thread(target=run, name=f"lightviz-{self.kind}", daemon=True)
        self.thread.start()


def session_watch() -> Callable[[], bool]:
    """A check, safe to call from any thread, of whether the browser session running this
    script has ended: the server no longer lists it as connected, for longer than
    SESSION_GRACE_S. Outside a Streamlit server it never ends."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return lambda: False
    runtime, session_id, seen = Runtime.instance(), ctx.session_id, [time.monotonic()]

    def ended() -> bool:
        if runtime.is_active_session(session_id):  # thread-safe (Streamlit's Runtime docs)
            seen[0] = time.monotonic()
            return False
        return time.monotonic() - seen[0] > SESSION_GRACE_S
    return ended


def display_name(name: str) -> str:
    """A model name as people read it ('digits-cnn · fine-tuned 1a2b3c4d' for registered ones)."""
    return registry.label(name) if registry.is_derived(name) else name


def current_job() -> Job | None:
    return st.session_state.get(JOB_KEY)


def busy() -> bool:
    job = current_job()
    return job is not None and job.running


# --- settings ------------------------------------------------------------------------------


def training_data(n: int | None):
    """The digits training split (never the test split), or a seeded subset of it; a language
    model's calibration text (never its evaluation text)."""
    if _lm():
        return subset(lm_train_data(state.current_bundle(), int(state.current_data().x.shape[1])), n)
    return subset(digits_split()[0], n)


def _lm() -> bool:
    return state.current_bundle().task == "causal_lm"


def modes() -> tuple[str, ...]:
    """What can be trained: a language model fine-tunes its plan (no smaller student to distill into)."""
    return MODES[:1] if _lm() else MODES


def caption() -> str:
    if _lm():
        return ("How much of the perplexity a plan loses can training win back? Training reads the calibration text "
                "only; every perplexity is measured on the held-out evaluation text.")
    return ("How much of the accuracy a plan loses can training win back? Training uses the digits training split "
            "only; every accuracy is measured on the held-out test split.")


def trainable() -> str | None:
    """Why the current model cannot be trained here, or None."""
    bundle = state.current_bundle()
    if bundle.task == "causal_lm":
        return None
    if bundle.dataset != "digits":
        return (f"{bundle.name} has no labeled training set here: fine-tuning learns from the digits training "
                "split, which only the sample models (digits-*) use. Pick a sample model in the sidebar.")
    return None


def common_settings(prefix: str, temperature: float) -> dict:
    """Epochs, learning rate, batch size, seed, training images and the distillation weights."""
    epochs, lr, batch, seed, samples = st.columns([1.2, 1.6, 1, 1, 1.4])
    lm = _lm()
    defaults = LM_DEFAULTS if lm else DEFAULTS
    total = len(training_data(None))
    settings = {
        "epochs": epochs.number_input("Epochs", 1, 200, defaults.epochs, key=f"{prefix}_epochs"),
        "lr": lr.select_slider("Learning rate (Adam, cosine decay)", LEARNING_RATES, value=defaults.lr,
                               format_func=lambda v: f"{v:g}", key=f"{prefix}_lr"),
        "batch_size": batch.selectbox("Batch size", BATCH_SIZES, index=BATCH_SIZES.index(defaults.batch_size),
                                      key=f"{prefix}_batch_size"),
        "seed": seed.number_input("Seed", 0, 2**31 - 1, defaults.seed, key=f"{prefix}_seed",
                                  help="Same seed, same numbers: batch order and initial weights."),
        "train_samples": samples.selectbox(
            "Training sequences" if lm else "Training images", TRAIN_SAMPLES, key=f"{prefix}_train_samples",
            format_func=lambda n: f"all {total:,}" if n is None else f"{n} (subset)",
            help="From the calibration text only; perplexity is always measured on the held-out text." if lm else
                 "From the digits training split only; accuracy is always measured on the held-out test split."),
    }
    alpha, temp = st.columns(2)
    settings["distill_weight"] = alpha.slider("Soft-target weight α", 0.0, 1.0, DEFAULTS.distill_weight, 0.05,
                                              key=f"{prefix}_alpha",
                                              help="loss = (1 − α)·CE(labels) + α·T²·KL(teacher ‖ student)")
    settings["temperature"] = temp.slider("Temperature T", 1.0, 10.0, temperature, 0.5, key=f"{prefix}_temperature",
                                          help="Higher T softens the teacher's probabilities: more of its "
                                               "'dark knowledge' about wrong classes, slower to match.")
    return settings


def finetune_form() -> dict | None:
    """Settings of a QAT fine-tune of the current plan; returns them when Start was pressed."""
    plan = state.current_plan()
    activations = ", layer inputs are fake-quantized too" if plan.activations is not None else ""
    st.markdown(f"Fine-tune **{plain(display_name(state.current_name()))}** for the current plan "
                f"**{plain(plan_label(plan))}**: "
                "every step computes with the plan's fake-quantized weights (straight-through gradients), pruned "
                f"weights stay exactly zero, BatchNorm is folded as deployed{activations}.")
    with st.form("finetune_form", border=True):
        distilled = st.toggle("Distill from the float model", value=True, key="ft_distill",
                              help="The original float model teaches its compressed version (soft targets).")
        settings = common_settings("ft", DEFAULTS.temperature)
        if plan.default.quant.range_method in ("mse", "entropy"):
            st.caption(f"Range method {plan.default.quant.range_method}: its search runs at every step, "
                       "so fine-tuning is slower than with minmax.")
        pressed = st.form_submit_button("Start fine-tuning", type="primary", disabled=busy(),
                                        icon=":material/play_arrow:")
    return {**settings, "distill": distilled} if pressed else None


def distill_form() -> dict | None:
    """Settings of distilling the current model into a smaller architecture."""
    st.markdown(f"**{plain(display_name(state.current_name()))}** (the teacher) teaches a smaller architecture trained "
                "from scratch; the same architecture also trains on the labels alone, with the same epochs and seed, "
                "so the teacher's contribution is the difference.")
    with st.form("distill_form", border=True):
        student = st.selectbox("Student architecture", student_names(), key="kd_student",
                               help="digits-cnn-slim: digits-cnn at half width (4x fewer weights); "
                                    "digits-cnn-tiny: 2 small convs; or a sample architecture from scratch.")
        settings = common_settings("kd", 2.0)
        pressed = st.form_submit_button("Start distillation", type="primary", disabled=busy(),
                                        icon=":material/play_arrow:")
    return {**settings, "student": student} if pressed else None


# --- starting and stopping -------------------------------------------------------------------


def _training_kwargs(settings: dict) -> dict:
    keys = ("epochs", "lr", "batch_size", "seed", "distill_weight", "temperature")
    kwargs = {key: settings[key] for key in keys}
    kwargs["epochs"], kwargs["seed"], kwargs["batch_size"] = (int(kwargs["epochs"]), int(kwargs["seed"]),
                                                              int(kwargs["batch_size"]))
    TrainConfig(**kwargs)  # validate here, with the library's messages
    return kwargs


def start_finetune(settings: dict) -> None:
    """Start a QAT fine-tune of the current model and plan in a worker thread."""
    kwargs, plan, name = _training_kwargs(settings), state.current_plan(), state.current_name()
    model, test = state.current_bundle().model, state.current_data()
    teacher = state.load_bundle(registry.base_name(name)).model if settings["distill"] else None  # the original
    train = training_data(settings["train_samples"])
    evaluation = state.current_evaluation(plan)  # cached; the same numbers finetune computes
    job = Job(kind="finetune", model_name=name, label=plan_label(plan), settings=dict(settings),
              plan_json=plan.to_json(), total_epochs=kwargs["epochs"], before=evaluation.score,
              float_accuracy=evaluation.float_score, session_ended=session_watch())
    st.session_state[JOB_KEY] = job
    device = compute.device()  # read here: the job's thread has no session
    job.start(lambda progress: finetune(model, plan, train, test, teacher=teacher, progress=progress, device=device,
                                        **kwargs))


def start_distill(settings: dict) -> None:
    """Start distilling the current model into `settings["student"]` (and its baseline)."""
    kwargs, name = _training_kwargs(settings), state.current_name()
    teacher, test = state.current_bundle().model, state.current_data()
    train = training_data(settings["train_samples"])
    job = Job(kind="distill", model_name=name, label=f"{display_name(name)} → {settings['student']}",
              settings=dict(settings), total_epochs=2 * kwargs["epochs"], session_ended=session_watch())
    st.session_state[JOB_KEY] = job
    device = compute.device()
    job.start(lambda progress: distill(teacher, settings["student"], train, test, progress=progress, device=device,
                                       **kwargs))


def _request_stop() -> None:
    job = current_job()
    if job is not None:
        job.stop = True


# --- progress and results ---------------------------------------------------------------------


def job_section() -> None:
    """The current job: live progress while it runs (with Stop), then its results."""
    job = current_job()
    if job is None:
        st.info("Pick settings above and press Start. Training runs in the background: the chart below "
                "updates after every epoch, and Stop ends it after the current epoch.")
        return
    st.subheader(f"{'Fine-tuning' if job.kind == 'finetune' else 'Distillation'}: {plain(job.label)}")
    if job.running:
        _follow(job)
    record_finished()
    if job.error:
        st.error(plain(f"Training stopped with an error: {job.error}. What to do: change the settings and start "
                       "again."))
        return
    if job.result is None:
        return
    if job.kind == "finetune":
        _finetune_results(job)
    else:
        _distill_results(job)


def _follow(job: Job) -> None:
    """Redraw progress and the live chart each epoch until the worker finishes."""
    stop_box, bar, chart = st.empty(), st.empty(), st.empty()
    stop_box.button("Stop after this epoch", key="finetune_stop", on_click=_request_stop, icon=":material/stop:",
                    disabled=job.stop)
    drawn = -1
    while job.running:
        if len(job.history) != drawn:
            drawn = len(job.history)
            text = f"epoch {drawn} of {job.total_epochs}" + (" · stopping after this epoch" if job.stop else "")
            bar.progress(min(drawn / job.total_epochs, 1.0), text=text)
            charts.show(where=chart, fig=_history_figure(job), key=f"finetune_live_{drawn}")
        time.sleep(POLL_S)
    record_finished()
    st.rerun()  # draw the page again with the job done: results, and Start enabled again


def _history_figure(job: Job):
    epochs = job.total_epochs if job.kind == "finetune" else job.total_epochs // 2
    if "test_perplexity" in job.history:
        return lm_plots.history_figure(job.history, before=job.before, float_perplexity=job.float_accuracy,
                                       epochs=epochs)
    return finetune_plots.history_figure(job.history, before=job.before, float_accuracy=job.float_accuracy,
                                         epochs=epochs)


def _finetune_results(job: Job) -> None:
    result = job.result
    before, after, float_acc = result.accuracy_before, result.accuracy_after, result.float_accuracy
    task = get_task(result.task)
    cols = st.columns(4)
    if task.is_lm:  # perplexity: lower is better
        cols[0].metric("Perplexity before", task.format(before), delta=f"{(before / float_acc - 1) * 100:+.2f}% vs float",
                       delta_color="inverse")
        cols[1].metric("Perplexity after", task.format(after), delta=f"{(after - before) / before * 100:+.2f}%",
                       delta_color="inverse")
    else:
        cols[0].metric("Before fine-tuning", percent(before), delta=f"{(before - float_acc) * 100:+.2f} pp vs float")
        cols[1].metric("After fine-tuning", percent(after), delta=f"{(after - before) * 100:+.2f} pp")
    cols[2].metric("Float model", task.format(float_acc))
    cols[3].metric("Size (before and after)", human_bytes(result.size_bytes),
                   delta=f"{result.float_size_bytes / max(result.size_bytes, 1):.1f}× smaller than float",
                   delta_color="off", delta_arrow="off")
    charts.show(_history_figure(job), key="finetune_history")
    stopped = f", stopped after {len(result.history)} epochs" if result.stopped else ""
    recovered = result.recovered
    share = ("the plan lost nothing to win back" if math.isnan(recovered)
             else f"won back {recovered:.0%} of the {task.metric} the plan lost")
    st.caption(f"{'Distilled from the float model, ' if job.settings['distill'] else ''}{share}, in "
               f"{job.seconds:.1f} s{stopped}. The size does not change: same plan, new weights."
               + ("" if task.is_lm else " The result is on the Trade-offs chart as a green triangle."))
    keep, reset, link = st.columns([1.3, 1.2, 1], vertical_alignment="center")
    keep.button("Use the fine-tuned model", key="finetune_keep", on_click=_keep, args=(job,),
                icon=":material/check:", disabled=state.current_name() != job.model_name,
                help="Make the fine-tuned weights the current model (the plan is kept); Explore then compares "
                     "them with the original float model.")
    if registry.is_derived(state.current_name()):
        reset.button("Back to the original model", key="finetune_reset", on_click=reset_model,
                     icon=":material/undo:")
    link.page_link("pages/tradeoffs.py", label="See it on Trade-offs", icon=":material/show_chart:")
    if job.result.task != "causal_lm":  # the file format holds the digits architectures (recover/saved.py)
        _download(job.result.model, _finetuned_meta(job), "the fine-tuned weights", "finetune_download")


def _distill_results(job: Job) -> None:
    result = job.result
    table = result.table()
    table.loc[table["role"] == "teacher", "model"] = display_name(job.model_name)
    cols = st.columns(3)
    cols[0].metric(f"Teacher {plain(display_name(job.model_name))}", percent(result.teacher_accuracy),
                   delta=f"{human_bytes(result.teacher_size_bytes)}, {result.teacher_params:,} parameters",
                   delta_color="off", delta_arrow="off")
    delta = None if result.baseline_accuracy is None else \
        f"{(result.student_accuracy - result.baseline_accuracy) * 100:+.2f} pp vs without teacher"
    cols[1].metric(f"Student {result.student_name}, distilled", percent(result.student_accuracy), delta=delta)
    cols[2].metric(f"Student {result.student_name}, labels only", percent(result.baseline_accuracy),
                   delta=f"{human_bytes(result.student_size_bytes)}, "
                         f"{result.teacher_size_bytes / max(result.student_size_bytes, 1):.1f}x smaller",
                   delta_color="off", delta_arrow="off")
    left, right = st.columns(2)
    charts.show(where=left, fig=_history_figure(job), key="finetune_history")
    charts.show(where=right, fig=finetune_plots.distill_figure(table), key="distill_chart")
    st.caption("Both students start from the same weights and see the same batches; only the teacher differs. "
               "On the digits data the teacher adds little over the labels: a difference of a few test images "
               "(one image is 0.22 pp) changes sign with the seed.")
    if result.student_name in student_names():
        meta = saved.TrainedMeta(kind="distilled", arch=result.student_name, num_classes=_classes(result.student),
                                 base=registry.base_name(job.model_name),
                                 description=f"{result.student_name} distilled from {display_name(job.model_name)}: "
                                             f"{percent(result.student_accuracy)}")
        use, download = st.columns([1.3, 2.2], vertical_alignment="center")
        use.button("Use the distilled student", key="distill_keep", icon=":material/check:",
                   on_click=_use_trained, args=(result.student, meta),
                   help="Make the student the current model: a smaller float model of its own, to compress further.")
        with download:
            _download(result.student, meta, "the distilled student", "distill_download")


# --- keeping weights; Trade-offs -----------------------------------------------------------------


def _finetuned_description(job: Job) -> str:
    result, base = job.result, registry.base_name(job.model_name)
    return (f"{base} fine-tuned for {job.label}: {len(result.history)} epochs"
            f"{', distilled from the float model' if job.settings['distill'] else ''}, "
            f"{get_task(result.task).format(result.accuracy_after)} under that plan")


def _finetuned_meta(job: Job) -> saved.TrainedMeta:
    result, base, description = job.result, registry.base_name(job.model_name), _finetuned_description(job)
    return saved.TrainedMeta(kind="finetuned", arch=base, num_classes=_classes(result.model),
                             identity=saved.folded_modules(result.model, base), base=base,
                             plan=job.plan_json or "", description=description)


def _classes(model) -> int:
    return [m for m in model.modules() if hasattr(m, "out_features")][-1].out_features


def _keep(job: Job) -> None:
    """Register the fine-tuned model and make it the session's current model (plan kept)."""
    if job.result.task == "causal_lm":  # with its tokenizer, for this server's sessions only (no file format)
        name = registry.register(state.load_bundle(job.model_name), job.result.model, _finetuned_description(job))
        state.set_model(name, keep_plan=True)
        return
    _use_trained(job.result.model, _finetuned_meta(job))


def _use_trained(model, meta: saved.TrainedMeta) -> None:
    """Register fine-tuned or distilled weights and make them the current model. A fine-tuned
    model keeps the plan (same layers); a distilled student is a new float model."""
    name = registry.register_trained(model, meta)
    names = st.session_state.setdefault(registry.SESSION_KEY, [])
    if name not in names:
        names.append(name)
    state.set_model(name, keep_plan=meta.kind == "finetuned")


def _download(model, meta: saved.TrainedMeta, what: str, key: str) -> None:
    """A download button for trained weights as .safetensors; the file loads back in the sidebar
    (Your own model and data), under the same name, so links to it work again."""
    name = registry.register_trained(model, meta)  # the name the file's weights will have
    st.download_button(f"Download {what} (.safetensors)", data=saved.to_bytes(model, meta),
                       file_name=f"{name.replace('+', '_')}.safetensors", mime="application/octet-stream",
                       key=key, icon=":material/download:", on_click="ignore",
                       help="Plain safetensors with lightviz metadata (architecture, folded BatchNorms, the plan). "
                            "Upload it in the sidebar (Your own model and data) to load it again, here or on "
                            "another lightviz server.")


def reset_model() -> None:
    """Back to the model the current fine-tuned one came from (plan kept)."""
    state.set_model(registry.base_name(state.current_name()), keep_plan=True)


def record_finished() -> None:
    """Add a finished, successful fine-tune to the Trade-offs points (once per job)."""
    job = current_job()
    if job is None or job.running or job.recorded or job.kind != "finetune" or job.result is None \
            or job.result.task != "classification":  # the Trade-offs points are accuracies
        return
    result = job.result
    st.session_state.setdefault(POINTS_KEY, []).append({
        "model": job.model_name, "label": f"{job.label} · fine-tuned {len(result.history)} epochs",
        "plan": job.plan_json, "size_bytes": result.size_bytes, "accuracy": result.accuracy_after,
        "accuracy_before": result.accuracy_before, "float_accuracy": result.float_accuracy})
    job.recorded = True


def add_to_tradeoffs(fig, y: str):
    """Draw this model's fine-tuned points on the Trade-offs figure and make them clickable."""
    record_finished()
    rows = pd.DataFrame(st.session_state.get(POINTS_KEY, []))
    if len(rows):
        rows = rows[rows["model"] == state.current_name()].reset_index(drop=True)
    st.session_state.setdefault("tradeoff_sources", {})["finetuned"] = rows
    return finetune_plots.add_finetuned_points(fig, rows, y) if y == "accuracy" else fig
