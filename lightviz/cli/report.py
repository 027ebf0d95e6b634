"""CLI command `report`: one self-contained HTML file to hand over, registered by cli/__init__.py.

    python -m lightviz report --model digits-cnn --bits 4 --out report.html
    python -m lightviz report --model digits-cnn --plan b.json --compare-to a.json --out ab.html
    python -m lightviz report --model digits-cnn --bits 2 --sensitivity 2,4,8 --finetune 5 --out full.html

The report holds a summary in plain words, the model, the data, the plan, per-layer charts, the
most damaged layers' histograms, accuracy against size (a small sweep by default), and what
reproduces the numbers; optionally plan A against the plan, a sensitivity heatmap and a
fine-tune curve. It opens offline: Plotly's JavaScript is inside the file, once.
Errors follow cli/__init__.py: bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time

from lightviz.cli import common as cli
from lightviz.cli import compute

DEFAULT_SWEEP_BITS = "2,3,4,8"


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `report` command to the CLI's subparsers."""
    parser = commands.add_parser("report", help="write a self-contained HTML report of a plan (opens offline)")
    cli.model_flags(parser)
    cli.plan_flags(parser, sweepable=False)
    cli.add_activation_flags(parser)
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--compare-to", metavar="PLAN",
                        help="plan A (a plan JSON file, or the JSON itself): the report puts A and this plan side "
                             "by side")
    parser.add_argument("--compare-layer", help="the layer whose weights under A and B are overlaid "
                                                "(default: the first layer set differently)")
    parser.add_argument("--sweep-bits", default=DEFAULT_SWEEP_BITS,
                        help="bit-widths of the accuracy-against-size sweep, symmetric and asymmetric, per tensor "
                             f"and per channel (default {DEFAULT_SWEEP_BITS}; 'none' for no sweep)")
    parser.add_argument("--sensitivity", metavar="BITS",
                        help="add a per-layer sensitivity heatmap at these bit-widths, e.g. 2,4,8")
    parser.add_argument("--finetune", metavar="EPOCHS", type=int,
                        help="add quantization-aware fine-tuning of the plan for this many epochs "
                             "(sample models: digits training split)")
    parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed (default 0)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Compute what the flags ask for, write the report, print where and its headline."""
    out = cli.out_path(args.out)
    pinned = cli.read_plan(args.compare_to, "compare-to") if args.compare_to else None
    sweep_bits = None if str(args.sweep_bits).lower() == "none" else [
        cli.parse_bits(b) for b in cli.split(args.sweep_bits, "sweep-bits")]
    sens_bits = [cli.parse_bits(b) for b in cli.split(args.sensitivity, "sensitivity")] if args.sensitivity else None
    if sens_bits and None in sens_bits:
        raise cli.UsageError("--sensitivity takes bit-widths from 1 to 16")
    epochs = cli.positive(args.finetune, "finetune")
    from lightviz.analysis.report import collect_report
    from lightviz.plots.report import render_report

    start = time.perf_counter()
    bundle, data = cli.load(args)
    engine = compute.engine(args, bundle)
    plan = cli.for_model(cli.apply_activation_flags(cli.plan_from_args(args), args), args, bundle, engine)
    engine.check_plan(plan)
    if pinned is not None:
        engine.check_plan(pinned)
    if args.compare_layer and args.compare_layer not in engine.by_name:
        raise cli.UsageError(f"--compare-layer: no layer {args.compare_layer!r}; the layers are "
                             f"{', '.join(engine.by_name)}")
    if epochs and bundle.dataset != "digits":
        raise cli.UsageError("--finetune trains on the digits training split: it needs a sample model (digits-*)")
    sweep = _sweep(engine, data, plan, sweep_bits) if sweep_bits else None
    sensitivity = _sensitivity(engine, data, plan, sens_bits) if sens_bits else None
    training = _finetune(bundle, data, plan, epochs, args.seed) if epochs else None
    report = collect_report(engine, bundle, data, plan, sweep=sweep, sensitivity=sensitivity, training=training,
                            pinned=pinned, compare_layer=args.compare_layer, model_arg=args.model,
                            extra_args=_extra_args(args), report_args=_section_args(args),
                            seeds={"fine-tuning": str(args.seed)} if epochs else None)
    html = render_report(report)
    out.write_text(html, encoding="utf-8")
    print(f"wrote {out} ({len(html.encode()) / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s): "
          f"{report.sentence}")
    return 0


def _sweep(engine, data, plan, bits):
    from lightviz.analysis.sweep import run_sweep, sweep_configs

    plans = sweep_configs(bits, ["symmetric", "asymmetric"], ["tensor", "channel"], [0.0], base=plan)
    return run_sweep(engine, data, plans, progress=_progress("sweep"))


def _sensitivity(engine, data, plan, bits):
    from lightviz.analysis.sensitivity import sensitivity

    return sensitivity(engine, data, bits, base=plan, progress=_progress("sensitivity"))


def _finetune(bundle, data, plan, epochs: int, seed: int):
    from lightviz.analysis.report import TrainingSection
    from lightviz.io.datasets import digits_split
    from lightviz.recover.finetune import finetune

    result = finetune(bundle.model, plan, digits_split()[0], data, epochs=epochs, seed=seed)
    settings = {"epochs": epochs, "seed": seed, "lr": 3e-3, "batch size": 64, "teacher": "none (labels)"}
    return TrainingSection("finetune", bundle.name, result.history, result.accuracy_before, result.accuracy_after,
                           result.float_accuracy, settings, result.size_bytes)


def _progress(what: str):
    if not sys.stderr.isatty():
        return None
    return lambda i, n: print(f"\r{what} {i}/{n}", end="" if i < n else "\n", file=sys.stderr)


def _section_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The flags of the optional sections as given (the report command in the report repeats them)."""
    out = [] if args.sweep_bits == DEFAULT_SWEEP_BITS else ["--sweep-bits", str(args.sweep_bits)]
    for flag in ("compare_layer", "sensitivity", "finetune"):
        if getattr(args, flag) is not None:
            out += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return tuple(out + (["--seed", str(args.seed)] if args.finetune and args.seed else []))


def _extra_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The model and data flags as given, for the command that reproduces the numbers."""
    out = []
    for flag in ("arch", "input_shape", "data", "image_size", "mean", "std", "max_samples"):
        value = getattr(args, flag)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    out += ["--pretrained"] if args.pretrained else []
    out += ["--trust-code"] if args.trust_code else []
    return tuple(out)
