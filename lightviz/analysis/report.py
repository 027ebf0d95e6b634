"""Everything a shareable report shows, computed once: `collect_report` -> `ReportData`.

The app (what the session computed: sweep, history, sensitivity, fine-tuning, a pinned plan A)
and the CLI (`python -m lightviz report`) both call `collect_report`; `lightviz.plots.report`
turns the result into one self-contained HTML file. Nothing here knows HTML or Streamlit.

Sections that were not computed stay None and the report leaves them out. Measured speed, where
a session measured it, arrives as a dict: {"float_ms", "compressed_ms", "runtime", "batch"}.

>>> summary_sentence(4.1, 0.991, 0.989, 450, "held-out images")
'4.1× smaller, accuracy 99.1 % → 98.9 % on 450 held-out images'
"""

from __future__ import annotations

import datetime
import platform
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from lightviz.analysis.compare import OverlaidHistogram, PlanComparison, compare_plans, overlaid_histogram
from lightviz.analysis.explore import WeightHistogram, block_grid, parameter_count, weight_histogram
from lightviz.analysis.sweep import chart_column, pareto_front, plan_label
from lightviz.core.engine import Engine, Evaluation
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import Plan
from lightviz.core.task import task_of
from lightviz.io.zoo import ModelBundle

VERSION = "0.1.0"  # lightviz's version, as reports record it
DAMAGED_LAYERS = 3  # histograms of this many worst layers


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    note: str
    kind: str
    parameters: int
    layers: int
    weights: int
    float_size_bytes: int
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class DataInfo:
    name: str
    description: str
    n_samples: int
    labeled: bool
    words: str  # what one sample is called in the summary: "held-out images", "generated inputs"


@dataclass(frozen=True, eq=False)
class DamagedLayer:
    """One of the layers with the lowest weight SQNR: its whole histogram and its worst block's."""

    name: str
    setting: str
    sqnr_db: float
    whole: WeightHistogram
    block: WeightHistogram | None  # worst channel (or group) with its grid; None: per-tensor


@dataclass(frozen=True, eq=False)
class TrainingSection:
    """A fine-tune (or distillation) run of the session: its curve and its numbers.

    Attributes:
        kind: "finetune" or "distill".
        label: what was trained, e.g. the plan's label.
        history: per-epoch rows (recover.training.HISTORY_COLUMNS, plus `run` for distillation).
        before, after, float_accuracy: accuracies (after: the fine-tuned plan's; None for distill).
        settings: epochs, lr, batch size, seed, ... as the run used them.
        size_bytes: the compressed size (fine-tune), for the trade-off chart.
        distill_table: DistillResult.table() for a distillation, else None.
    """

    kind: str
    label: str
    history: pd.DataFrame
    before: float | None
    after: float | None
    float_accuracy: float | None
    settings: dict = field(default_factory=dict)
    size_bytes: int | None = None
    distill_table: pd.DataFrame | None = None


@dataclass(frozen=True)
class Reproducibility:
    versions: dict
    seeds: dict
    plan_json: str
    plan_a_json: str | None
    command: str  # the one CLI command that reproduces the headline numbers
    report_command: str  # the command that writes this report again
    caveat: str = ""  # why the command cannot reproduce it exactly (a model made in the app), or ""


@dataclass(frozen=True, eq=False)
class ReportData:
    """What `lightviz.plots.report.render_report` draws. Optional sections are None when not computed."""

    created: str
    model: ModelInfo
    data: DataInfo
    plan: Plan
    plan_label: str
    evaluation: Evaluation
    layers: pd.DataFrame
    damaged: list[DamagedLayer]
    reproducibility: Reproducibility
    sweep: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    front: pd.DataFrame | None = None
    sensitivity: pd.DataFrame | None = None
    training: TrainingSection | None = None
    comparison: PlanComparison | None = None
    compare_layer: str | None = None
    compare_hist: OverlaidHistogram | None = None
    speed: dict | None = None

    @property
    def sentence(self) -> str:
        """The summary's first line (`summary_sentence` of this report's evaluation)."""
        ev = self.evaluation
        lm = ev.task == "causal_lm"
        return summary_sentence(ev.compression_ratio, ev.float_accuracy, ev.accuracy,
                                ev.n_tokens if lm else self.data.n_samples, self.data.words, ev.agreement,
                                (ev.float_perplexity, ev.perplexity) if lm else None)

    @property
    def y(self) -> str:
        """The trade-off chart's y column: a language model's perplexity; accuracy with labels,
        else agreement."""
        if self.evaluation.task == "causal_lm":
            return "perplexity"
        return "accuracy" if self.data.labeled else "agreement"


def summary_sentence(ratio: float, float_accuracy: float | None, accuracy: float | None, n: int, words: str,
                     agreement: float | None = None, perplexity: tuple[float, float] | None = None) -> str:
    """The report's first line, in plain words: size, then accuracy (a language model's
    perplexity, given as (float, compressed), n counting predicted tokens; or agreement) and on what.

    >>> summary_sentence(4.9, None, None, 2040, "predicted tokens", perplexity=(4.2757, 4.4732))
    '4.9× smaller, perplexity 4.276 → 4.473 (lower is better) on 2,040 predicted tokens'
    """
    size = (f"{ratio:.1f}× smaller" if ratio >= 1.05 else
            "about the same size as the float model" if ratio > 0.95 else f"{1 / ratio:.1f}× larger")
    if perplexity is not None:
        return f"{size}, perplexity {perplexity[0]:.4g} → {perplexity[1]:.4g} (lower is better) on {n:,} {words}"
    if accuracy is not None and float_accuracy is not None:
        return f"{size}, accuracy {float_accuracy * 100:.1f} % → {accuracy * 100:.1f} % on {n:,} {words}"
    return f"{size}, same top-1 answer as the float model on {(agreement or 0) * 100:.1f} % of {n:,} {words}"


def data_words(data: EvalData) -> str:
    """How the summary calls the evaluation samples (a language model's: its predicted tokens)."""
    if task_of(data).is_lm:
        return "predicted tokens of held-out text" if data.name == "python-heldout" else "predicted tokens of your text"
    if data.name.startswith("digits-test"):
        return "held-out images"
    if data.name == "generated":
        return "generated inputs (no labels)"
    return "samples of your data" if data.labeled else "unlabeled samples of your data"


def collect_report(engine: Engine, bundle: ModelBundle, data: EvalData, plan: Plan, *,
                   sweep: pd.DataFrame | None = None, history: pd.DataFrame | None = None,
                   sensitivity: pd.DataFrame | None = None, training: TrainingSection | None = None,
                   pinned: Plan | None = None, compare_layer: str | None = None, speed: dict | None = None,
                   model_arg: str | None = None, extra_args: tuple[str, ...] = (),
                   report_args: tuple[str, ...] = (), caveat: str = "",
                   seeds: dict | None = None, damaged: int = DAMAGED_LAYERS) -> ReportData:
    """Evaluate `plan` (and `pinned`, plan A, when given) and gather every section of the report.

    Args:
        engine, bundle, data: the model's engine, its bundle and the evaluation data.
        plan: the plan reported (plan B when comparing).
        sweep: analysis.sweep.run_sweep rows; history: rows of the same columns (the app's
            session history); both drawn on the trade-off chart with their Pareto front.
        sensitivity: analysis.sensitivity.sensitivity rows, for the heatmap.
        training: a fine-tune or distillation run of the session.
        pinned: plan A: the report then compares A and B.
        compare_layer: the layer whose weights under A and B are overlaid (default: the first
            layer whose setting differs, else the first layer).
        speed: measured latency, {"float_ms", "compressed_ms", "runtime", "batch"}.
        model_arg, extra_args: how the CLI names the model (default bundle.name) and the extra
            flags it needs (e.g. ("--data", "my.npz")), for the reproducing command.
        report_args: the `report` command's flags for the optional sections (e.g.
            ("--sensitivity", "2,4,8")), for the command that writes the report again.
        caveat: why that command may not reproduce the numbers (e.g. weights made in the app).
        seeds: seeds worth recording beyond the data's (e.g. a fine-tune's).
        damaged: how many of the worst layers get histograms.
    """
    evaluation = engine.evaluate(plan, data)
    table = engine.layer_table(plan)
    comparison = hist = None
    if pinned is not None:
        comparison = compare_plans(engine, data, pinned, plan)
        names = table["name"].tolist()
        if compare_layer not in names:
            changed = comparison.changed_layers
            compare_layer = changed[0] if changed else names[0]
        hist = overlaid_histogram(engine.compress_layer(pinned, compare_layer),
                                  engine.compress_layer(plan, compare_layer))
    y = chart_column(data)
    shown = [frame for frame in (sweep, history) if frame is not None and len(frame)]
    front = pareto_front(pd.concat(shown, ignore_index=True), y=y) if shown else None
    info = ModelInfo(
        name=bundle.name, description=bundle.description, note=bundle.note, kind=bundle.kind,
        parameters=parameter_count(bundle.model), layers=len(engine.layers),
        weights=sum(layer.n_weights for layer in engine.layers), float_size_bytes=engine.float_size_bytes,
        input_shape=tuple(bundle.input_shape), num_classes=bundle.num_classes)
    data_info = DataInfo(data.name, data.description, len(data), data.labeled, data_words(data))
    repro = reproducibility(model_arg or bundle.name, plan, pinned, extra_args, caveat, seeds or {}, data,
                            report_args)
    return ReportData(
        created=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), model=info, data=data_info,
        plan=plan, plan_label=plan_label(plan), evaluation=evaluation, layers=table,
        damaged=damaged_layers(engine, plan, table, damaged), reproducibility=repro, sweep=sweep,
        history=history, front=front, sensitivity=sensitivity, training=training, comparison=comparison,
        compare_layer=compare_layer if pinned is not None else None, compare_hist=hist, speed=speed)


def damaged_layers(engine: Engine, plan: Plan, table: pd.DataFrame, count: int = DAMAGED_LAYERS) -> list[DamagedLayer]:
    """The `count` compressed layers with the lowest weight SQNR, worst first, with histograms."""
    lossy = table[table["sqnr_db"].astype(float) < float("inf")].sort_values("sqnr_db", kind="stable")
    out = []
    for row in lossy.head(count).itertuples():
        result = engine.compress_layer(plan, row.name)
        setting = result.quant.label + (f", {result.prune.label}" if result.prune.active else "")
        out.append(DamagedLayer(row.name, setting, float(row.sqnr_db), weight_histogram(result),
                                _worst_block(result)))
    return out


def _worst_block(result) -> WeightHistogram | None:
    """The histogram of the channel (and group) with the largest squared error, with its grid."""
    quant = result.quant
    if quant.bits is None or quant.granularity == "tensor":
        return None
    channels, groups, length = block_grid(result)
    axis = result.layer.axis
    error = (result.weight - result.weight_hat).double().pow(2).movedim(axis, 0).reshape(channels, -1)
    channel = int(error.sum(dim=1).argmax())
    group = None
    if groups > 1:
        per_group = [float(error[channel, g * length:(g + 1) * length].sum()) for g in range(groups)]
        group = max(range(groups), key=per_group.__getitem__)
    return weight_histogram(result, channel, group)


def reproducibility(model_arg: str, plan: Plan, pinned: Plan | None, extra_args: tuple[str, ...], caveat: str,
                    seeds: dict, data: EvalData, report_args: tuple[str, ...] = ()) -> Reproducibility:
    """Versions, seeds, the plan JSON and the commands that recompute the report's numbers."""
    base = ["python", "-m", "lightviz"]
    common = ["--model", model_arg, *extra_args, "--plan", plan.to_json()]
    command = shlex.join([*base, "evaluate", *common, "--json"])
    compare = ["--compare-to", pinned.to_json()] if pinned is not None else []
    report_command = shlex.join([*base, "report", *common, *compare, *report_args, "--out", "report.html"])
    all_seeds = {"evaluation data": _data_seed(data), **seeds}
    return Reproducibility(environment(), all_seeds, plan.to_json(indent=2),
                           None if pinned is None else pinned.to_json(indent=2), command, report_command, caveat)


def _data_seed(data: EvalData) -> str:
    if data.name.startswith("digits"):
        text = "digits split random_state=0 (scikit-learn train_test_split, stratified)"
        return text + ("; evaluation subset seed 0" if "subset" in data.description else "")
    if data.name == "generated":
        return "generated inputs seed 0 (torch.Generator)"
    return "evaluation subset seed 0" if "subset" in data.description else "none (all of your data, in order)"


def environment() -> dict:
    """Versions that decide the numbers: lightviz (and its git commit when known), torch, Python..."""
    import numpy
    import plotly

    versions = {"lightviz": VERSION}
    commit = _git_commit()
    if commit:
        versions["lightviz"] += f" (git {commit})"
    versions |= {"torch": torch.__version__, "Python": platform.python_version(), "numpy": numpy.__version__,
                 "plotly": plotly.__version__, "platform": f"{platform.system()} {platform.machine()}",
                 "torch threads": str(torch.get_num_threads())}
    return versions


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
