"""CLI command `finetune`, registered into `python -m lightviz` by cli.py.

    python -m lightviz finetune --model digits-cnn --bits 2 --epochs 10 --distill --json
    python -m lightviz finetune --model digits-cnn --plan plan.json --epochs 5 --lr 3e-3
    python -m lightviz finetune --teacher digits-cnn --student digits-cnn-slim --epochs 20 --json

The first two fine-tune the plan's compressed model (quantization-aware, optionally distilled
from the float model); the third distills a teacher into a smaller architecture and trains the
same architecture without the teacher as the baseline. Sample models train on the digits
training split and are scored on its test split; other models need --train-data.
Errors follow cli.py: bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json

from lightviz.cli import common as cli
from lightviz.core.trainconfig import TrainConfig

DEFAULTS = TrainConfig()
LM_DEFAULTS = TrainConfig(epochs=4, lr=3e-4, batch_size=16)  # a trained language model wants small steps


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `finetune` command to cli.py's subparsers."""
    parser = commands.add_parser("finetune", help="quantization-aware fine-tuning of a plan, or distillation "
                                                  "into a smaller architecture; accuracy before and after")
    cli.model_flags(parser)
    for action in parser._actions:  # --model is not needed with --teacher/--student
        if action.dest == "model":
            action.required = False
    cli.plan_flags(parser, sweepable=False)
    cli.add_activation_flags(parser)
    parser.add_argument("--epochs", type=int, help=f"default {DEFAULTS.epochs} (language models {LM_DEFAULTS.epochs})")
    parser.add_argument("--lr", type=float, help=f"Adam learning rate (default {DEFAULTS.lr:g}, language models "
                                                 f"{LM_DEFAULTS.lr:g})")
    parser.add_argument("--batch-size", type=int, help=f"default {DEFAULTS.batch_size} (language models: "
                                                        f"{LM_DEFAULTS.batch_size} sequences)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="same seed, same numbers")
    parser.add_argument("--distill", action="store_true", help="the float model teaches its compressed version")
    parser.add_argument("--distill-weight", type=float, default=DEFAULTS.distill_weight,
                        help="alpha, the soft (teacher) share of the loss")
    parser.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    parser.add_argument("--teacher", help="distill this sample model into --student (instead of --model)")
    parser.add_argument("--student", help="a smaller architecture to distill into, e.g. digits-cnn-slim, digits-mlp")
    parser.add_argument("--no-baseline", action="store_true", help="with --student: skip the labels-only baseline")
    parser.add_argument("--train-data", help="labeled training data (.npz with x and y, or class folders); "
                                             "default: the digits training split for the sample models")
    parser.add_argument("--train-samples", type=int, help="train on a seeded random subset of this many samples")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Fine-tune or distill as the flags say; print the report."""
    if args.teacher or args.student:
        return _distill(args)
    if not args.model:
        raise cli.UsageError("finetune needs --model (fine-tune a plan) or --teacher and --student (distill)")
    from lightviz.core.engine import Engine
    from lightviz.recover.finetune import finetune

    bundle, test = cli.load(args)
    train = _train_data(args, bundle, test)
    engine = Engine(bundle.model)
    plan = cli.for_model(cli.apply_activation_flags(cli.plan_from_args(args), args), args, bundle, engine)
    engine.check_plan(plan)
    cli.check_cost(engine, [plan])
    result = finetune(bundle.model, plan, train, test, teacher=bundle.model if args.distill else None,
                      progress=_echo(args), device=cli.device_choice(args),
                      **_settings(args, LM_DEFAULTS if bundle.task == "causal_lm" else DEFAULTS))
    report = {"model": bundle.name, "train_data": train.description, "test_data": test.description,
              "distill": args.distill, **cli.json_safe(result.summary()),
              "compression_ratio": result.float_size_bytes / max(result.size_bytes, 1)}
    _print(report, args.json, _finetune_lines)
    return 0


def _distill(args: argparse.Namespace) -> int:
    from lightviz.io.datasets import DIGITS_CLASSES, DIGITS_INPUT_SHAPE
    from lightviz.recover.distill import distill, student_names

    if not (args.teacher and args.student):
        raise cli.UsageError("distillation needs both --teacher and --student")
    if args.model:
        raise cli.UsageError("--model fine-tunes a plan; with --teacher and --student leave it out")
    if args.student not in student_names():
        raise cli.UsageError(f"--student must be one of {', '.join(student_names())}; got {args.student!r}")
    args.model = args.teacher
    bundle, test = cli.load(args)
    if getattr(bundle, "task", "classification") == "causal_lm":
        raise cli.UsageError("--teacher/--student distill into a smaller digits architecture; a language model "
                             "fine-tunes its own plan instead (--model NAME --distill)")
    if tuple(bundle.input_shape) != DIGITS_INPUT_SHAPE or bundle.num_classes != len(DIGITS_CLASSES):
        raise cli.UsageError(f"--student architectures take 8x8 digits and predict 10 classes; the teacher "
                             f"{bundle.name} takes {tuple(bundle.input_shape)} with {bundle.num_classes} classes")
    train = _train_data(args, bundle)
    result = distill(bundle.model, args.student, train, test, baseline=not args.no_baseline,
                     progress=_echo(args), device=cli.device_choice(args), **_settings(args))
    report = {"teacher": bundle.name, "train_data": train.description, "test_data": test.description,
              **cli.json_safe(result.summary())}
    _print(report, args.json, _distill_lines)
    return 0


def _settings(args: argparse.Namespace, defaults: TrainConfig = DEFAULTS) -> dict:
    """The training keywords (flags not given: `defaults`), validated by TrainConfig's own messages."""
    settings = {"epochs": args.epochs if args.epochs is not None else defaults.epochs,
                "lr": args.lr if args.lr is not None else defaults.lr,
                "batch_size": args.batch_size if args.batch_size is not None else defaults.batch_size,
                "seed": args.seed, "distill_weight": args.distill_weight, "temperature": args.temperature}
    TrainConfig(**settings)
    return settings


def _train_data(args: argparse.Namespace, bundle, test=None):
    """The training set: --train-data, or the digits training split for the sample models; a
    language model trains on calibration text (the shipped calibration modules, or --train-data)."""
    from lightviz.io import datasets, text, userdata

    samples = cli.positive(args.train_samples, "train-samples")
    if getattr(bundle, "task", "classification") == "causal_lm":
        seq_len = int(test.x.shape[1])
        if args.train_data:
            data = text.user_text_data(bundle, args.train_data, seq_len=seq_len)
            train = datasets.EvalData(x=data.x, y=None, name=data.name, description=data.description,
                                      task="causal_lm")
        else:
            train = text.lm_train_data(bundle, seq_len)
        return datasets.subset(train, samples)
    if args.train_data:
        train = userdata.load_user_data(args.train_data, None, bundle,
                                        image_size=cli.ints(args.image_size, "image-size"),
                                        mean=cli.floats(args.mean, "mean"), std=cli.floats(args.std, "std"))
        if not train.labeled:
            raise cli.UsageError(f"--train-data must be labeled (x and y); {args.train_data} has no labels")
    elif bundle.dataset == "digits":
        train = datasets.digits_split()[0]
    else:
        raise cli.UsageError(f"fine-tuning {bundle.name} needs labeled training data: give --train-data "
                             "(the digits sample models use their training split)")
    return datasets.subset(train, samples)


def _echo(args: argparse.Namespace):
    """Per-epoch lines on stderr for humans (nothing with --json, which prints once)."""
    import sys

    if args.json:
        return None

    def progress(history) -> None:
        row = history.iloc[-1]
        run = f"{row['run']} " if "run" in history else ""
        score = (f"test perplexity {row['test_perplexity']:.4f}" if "test_perplexity" in history
                 else f"test accuracy {row['test_accuracy']:.2%}")
        print(f"{run}epoch {int(row['epoch'])}: loss {row['loss']:.4f}, {score} ({row['seconds']:.1f} s)",
              file=sys.stderr)
    return progress


def _print(report: dict, as_json: bool, lines) -> None:
    if as_json:
        print(json.dumps(report, allow_nan=False))
        return
    for line in lines(report):
        print(line)


def _finetune_lines(report: dict) -> list[str]:
    recovered = report["recovered"]
    lm = "perplexity_before" in report
    if lm and abs(report["perplexity_before"] / report["float_perplexity"] - 1) < 0.005:
        recovered = None  # the plan lost (almost) nothing: a share of it means nothing
    metric, show = ("perplexity", lambda v: f"{v:.4f}") if lm else ("accuracy", lambda v: f"{v:.2%}")
    return [
        f"model {report['model']}, {report['epochs_run']} epochs on {report['train_data']}"
        + (", distilled from the float model" if report["distill"] else ""),
        f"{metric} before {show(report[f'{metric}_before'])} -> after {show(report[f'{metric}_after'])} "
        f"(float {show(report[f'float_{metric}'])})"
        + ("" if recovered is None else f", {recovered:.0%} of the loss recovered"),
        f"size {report['size_bytes']:,} B (float {report['float_size_bytes']:,} B, "
        f"{report['compression_ratio']:.2f}x), {report['seconds']:.1f} s of training",
    ]


def _distill_lines(report: dict) -> list[str]:
    lines = [f"teacher {report['teacher']}: {report['teacher_accuracy']:.2%}, {report['teacher_params']:,} "
             f"parameters, {report['teacher_size_bytes']:,} B",
             f"student {report['student']} distilled: {report['student_accuracy']:.2%}, "
             f"{report['student_params']:,} parameters, {report['student_size_bytes']:,} B"]
    if report["baseline_accuracy"] is not None:
        lines.append(f"student {report['student']} without the teacher (same epochs and seed): "
                     f"{report['baseline_accuracy']:.2%}")
    return lines
