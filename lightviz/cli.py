"""Command line: `python -m lightviz models | evaluate | sweep | sensitivity | allocate | finetune`.

Bad input exits with code 2 and one line on stderr, never a traceback.

    python -m lightviz evaluate --model digits-cnn --bits 4 --granularity tensor --json
    python -m lightviz sweep --model digits-cnn --bits 2,4,8 --scheme symmetric,asymmetric --out r.csv
    python -m lightviz evaluate --model weights.safetensors --arch resnet18 --data images.zip --json

A model file is loaded as data, never as code (see lightviz.loading); TorchScript and .pt2
archives (they run code) and pickled whole modules (still read weights-only) need --trust-code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from lightviz.specs import GRANULARITIES, PRUNE_METHODS, RANGE_METHODS, SCHEMES, Plan, PruneSpec, QuantSpec


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except (UsageError, ValueError, OSError) as error:  # OSError: a file that is missing or unreadable
        print(f"lightviz: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - users see one line, never a traceback
        print(f"lightviz: internal error ({type(error).__name__}): {_one_line(error)}", file=sys.stderr)
        return 1


# --- commands ----------------------------------------------------------------------------


def _models(args: argparse.Namespace) -> int:
    from lightviz import zoo

    if args.json:
        print(json.dumps({"samples": zoo.list_models(), "torchvision": zoo.list_torchvision_models()}))
        return 0
    for name in zoo.list_models():
        print(f"{name:18s} {zoo.SAMPLE_MODELS[name].description}")
    print(f"\ntorchvision architectures (random init, fidelity only): {', '.join(zoo.list_torchvision_models())}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lightviz import cli_analysis
    from lightviz.engine import Engine

    bundle, data = _load(args)
    plan = cli_analysis.apply_activation_flags(plan_from_args(args), args)
    engine = Engine(bundle.model)
    evaluation = engine.evaluate(plan, data, _terminal_progress())
    table = engine.layer_table(plan)
    report = {
        "model": bundle.name, "data": data.description, "note": bundle.note,
        "input_shape": list(bundle.input_shape), "num_classes": bundle.num_classes,
        **evaluation.to_dict(),
        "layers": [
            {"name": row.name, "type": row.type, "bits": None if _isnan(row.bits) else int(row.bits),
             "scheme": row.scheme, "granularity": row.granularity, "sparsity": row.achieved_sparsity,
             "format": row.format, "sqnr_db": _finite(row.sqnr_db), "mse": row.mse,
             "size_bytes": int(row.size_bytes)}
            for row in table.itertuples()
        ],
        "plan": plan.to_dict(),
    }
    report.update(cli_analysis.evaluate_extras(engine, plan, data))  # "wa", activation ranges
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        _print_summary(report)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from lightviz.engine import Engine
    from lightviz.sweep import run_sweep, sweep_configs

    bundle, data = _load(args)
    bits = [_parse_bits(b) for b in _split(args.bits, "bits")]
    schemes = _split(args.scheme, "scheme", SCHEMES)
    granularities = _split(args.granularity, "granularity", GRANULARITIES)
    sparsities = [_parse_float(s, "sparsity") for s in _split(args.sparsity, "sparsity")]
    base = plan_from_args(args, with_default_flags=False)
    plans = sweep_configs(bits, schemes, granularities, sparsities, args.prune_method or "unstructured", base)
    out = Path(args.out)
    if not out.parent.exists():
        raise UsageError(f"--out: folder {out.parent} does not exist")
    interactive = sys.stderr.isatty()
    df = run_sweep(Engine(bundle.model), data, plans, progress=lambda i, n: interactive and print(
        f"\r{i}/{n} configurations", end="" if i < n else "\n", file=sys.stderr))
    df.insert(0, "model", bundle.name)
    df.to_csv(out, index=False)
    print(f"wrote {len(df)} configurations to {out}")
    return 0


# --- plans and loading -------------------------------------------------------------------


def plan_from_args(args: argparse.Namespace, with_default_flags: bool = True) -> Plan:
    """The Plan the flags describe: --plan as a base, explicit flags override its default."""
    plan = Plan()
    if getattr(args, "plan", None):
        path = Path(args.plan)
        if not path.is_file():
            raise UsageError(f"--plan: no such file {path}")
        plan = Plan.from_json(path.read_text())
    quant, prune = plan.default.quant, plan.default.prune
    changes = {}
    if with_default_flags and args.bits is not None:
        changes["bits"] = _parse_bits(args.bits)
    for flag in ("scheme", "granularity", "group_size", "range_method", "percentile"):
        value = getattr(args, flag, None)
        if value is not None and (with_default_flags or flag not in ("scheme", "granularity")):
            changes[flag] = value
    quant = replace(quant, **changes)
    prune_changes = {}
    if with_default_flags and args.sparsity is not None:
        prune_changes["sparsity"] = _parse_float(args.sparsity, "sparsity")
    if args.prune_method is not None:
        prune_changes["method"] = args.prune_method
    prune = replace(prune, **prune_changes)
    plan = replace(plan, default=replace(plan.default, quant=quant, prune=prune))
    if args.no_fold_bn:
        plan = replace(plan, fold_bn=False)
    if getattr(args, "global_prune", False):
        plan = replace(plan, global_prune=True)
    return plan


def _terminal_progress():
    """A progress callback drawing one updating line on stderr, or None when stderr is no terminal."""
    if not sys.stderr.isatty():
        return None

    def report(fraction: float, text: str) -> None:
        end = "\n" if fraction >= 1.0 else ""
        print(f"\r\033[K{fraction:4.0%} {text}", end=end, file=sys.stderr, flush=True)
    return report


def _load(args: argparse.Namespace):
    """(bundle, data) the flags name: a model by name or file, data from --data or the default."""
    from lightviz import data as datasets
    from lightviz import userdata

    bundle = _load_bundle(args)
    max_samples = _positive(args.max_samples, "max-samples")
    if args.data:
        data = userdata.load_user_data(
            args.data, None, bundle, image_size=_ints(args.image_size, "image-size"),
            mean=_floats(args.mean, "mean"), std=_floats(args.std, "std"), max_samples=max_samples)
    else:
        if args.image_size or args.mean or args.std:
            raise UsageError("--image-size, --mean and --std apply to an image folder given with --data")
        data = datasets.eval_data_for(bundle, max_samples)
        userdata.check_data(bundle, data)
    return bundle, data


def _load_bundle(args: argparse.Namespace):
    from lightviz import loading, zoo

    model = args.model
    input_shape = _ints(args.input_shape, "input-shape")
    if input_shape is not None and isinstance(input_shape, int):
        input_shape = (input_shape,)
    if not _is_path(model):
        if args.arch:
            raise UsageError(f"--arch goes with a model file (--model path/to/weights.pth --arch {args.arch}); "
                             f"{model!r} is a model name")
        if args.trust_code or input_shape:
            raise UsageError("--trust-code and --input-shape go with a model file given to --model")
        return loading.load_pretrained(model) if args.pretrained else zoo.load_model(model)
    if args.pretrained:
        raise UsageError("--pretrained takes a torchvision architecture name (--model resnet18 --pretrained), "
                         "not a file")
    return loading.load_user_model(model, arch=args.arch, trust_code=args.trust_code, input_shape=input_shape)


def _is_path(model: str) -> bool:
    """A model argument is a file unless it is a known name without a path separator; an
    unknown bare name stays a name, so its error lists the names that exist."""
    from lightviz import zoo

    from lightviz.loading import MODEL_SUFFIXES

    if "/" in model or os.sep in model:
        return True
    if model in zoo.list_architectures():
        return False
    return Path(model).exists() or Path(model).suffix.lower() in MODEL_SUFFIXES


# --- parsing -----------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    from lightviz import cli_analysis, cli_finetune

    parser = _Parser(prog="python -m lightviz", description="Explore quantization and pruning.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models = commands.add_parser("models", help="list the sample models and torchvision architectures")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=_models)

    evaluate = commands.add_parser("evaluate", help="compress a model under one plan and report")
    _model_flags(evaluate)
    _plan_flags(evaluate, sweepable=False)
    cli_analysis.add_activation_flags(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(run=_evaluate)

    sweep = commands.add_parser("sweep", help="evaluate every combination; one CSV row each")
    _model_flags(sweep)
    _plan_flags(sweep, sweepable=True)
    sweep.add_argument("--out", required=True, help="CSV file to write")
    sweep.set_defaults(run=_sweep)
    cli_analysis.register_cli(commands)  # sensitivity, allocate
    cli_finetune.register(commands)  # finetune
    return parser


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a sample name (see `models`), a torchvision architecture, or a model file "
                             "(.safetensors, .pt, .pth state_dict; with --arch)")
    parser.add_argument("--arch", help="architecture of a state_dict file: a sample name or torchvision architecture")
    parser.add_argument("--pretrained", action="store_true",
                        help="torchvision pretrained weights for --model NAME, from the local torch cache only")
    parser.add_argument("--trust-code", action="store_true",
                        help="allow TorchScript and .pt2 archives (they run code when loaded) and pickled whole "
                             "modules (still read weights-only: torch.nn, torchvision and lightviz classes only); "
                             "only for files you trust")
    parser.add_argument("--input-shape", help="shape of one input without batch, e.g. 3,32,32 "
                                              "(default: the architecture's)")
    parser.add_argument("--data", help="evaluation data: an .npz with x (and y), or a folder or .zip of class folders")
    parser.add_argument("--image-size", help="resize images to this: N or H,W (default: the model's input size)")
    parser.add_argument("--mean", help="per-channel mean to subtract from images in [0, 1], e.g. 0.485,0.456,0.406")
    parser.add_argument("--std", help="per-channel std to divide images by, e.g. 0.229,0.224,0.225")
    parser.add_argument("--max-samples", type=int,
                        help="evaluate on a seeded random subset of this many samples "
                             "(models without a dataset: this many generated inputs; default 32)")


def _plan_flags(parser: argparse.ArgumentParser, sweepable: bool) -> None:
    many = " (comma-separated list)" if sweepable else ""
    parser.add_argument("--bits", default="8" if sweepable else None,
                        help=f"1..16, or 'float'{many}")
    parser.add_argument("--scheme", default="symmetric" if sweepable else None,
                        **({} if sweepable else {"choices": SCHEMES}), help=f"symmetric | asymmetric{many}")
    parser.add_argument("--granularity", default="channel" if sweepable else None,
                        **({} if sweepable else {"choices": GRANULARITIES}), help=f"tensor | channel | group{many}")
    parser.add_argument("--group-size", type=int, help="weights per group (granularity group)")
    parser.add_argument("--range-method", choices=RANGE_METHODS)
    parser.add_argument("--percentile", type=float, help="for --range-method percentile, e.g. 99.9")
    parser.add_argument("--sparsity", default="0" if sweepable else None, help=f"0..1{many}")
    parser.add_argument("--prune-method", choices=PRUNE_METHODS)
    parser.add_argument("--global-prune", action="store_true", help="one magnitude threshold over all layers")
    parser.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm separate (default: fold)")
    parser.add_argument("--plan", help="a plan JSON file (flags override its default)")


def _parse_bits(text: str | int | None) -> int | None:
    if text is None or str(text).lower() in ("float", "none", "fp32", "32"):
        return None
    try:
        bits = int(text)
    except ValueError:
        raise UsageError(f"--bits must be an integer from 1 to 16 or 'float'; got {text!r}") from None
    QuantSpec(bits=bits)  # validates the range with the library's own message
    return bits


def _parse_float(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--{name} must be a number; got {text!r}") from None
    if name == "sparsity":
        PruneSpec(sparsity=value)
    return value


def _positive(value: int | None, name: str) -> int | None:
    if value is not None and value < 1:
        raise UsageError(f"--{name} must be a positive integer; got {value}")
    return value


def _ints(text: str | None, name: str) -> int | tuple[int, ...] | None:
    """'32' -> 32, '3,32,32' -> (3, 32, 32)."""
    if text is None:
        return None
    try:
        values = tuple(int(item) for item in _split(text, name))
    except ValueError:
        raise UsageError(f"--{name} must be positive integers separated by commas; got {text!r}") from None
    if any(v < 1 for v in values):
        raise UsageError(f"--{name} must be positive integers separated by commas; got {text!r}")
    return values[0] if len(values) == 1 else values


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    return tuple(_parse_float(item, name) for item in _split(text, name))


def _split(text: str, name: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise UsageError(f"--{name} needs at least one value")
    for item in items:
        if allowed and item not in allowed:
            raise UsageError(f"--{name} values must be among {', '.join(allowed)}; got {item!r}")
    return items


def _print_summary(report: dict) -> None:
    acc = report["accuracy"]
    print(f"model {report['model']}: {report['data']}")
    print(f"weights/activations {report['wa']}") if report.get("wa") else None
    if acc is not None:
        print(f"accuracy {acc:.2%} (float {report['float_accuracy']:.2%})")
    print(f"agreement with float {report['agreement']:.2%}, KL {report['kl']:.4g}")
    print(f"size {report['size_bytes']:,} B (float {report['float_size_bytes']:,} B, "
          f"{report['compression_ratio']:.2f}x), {report['avg_bits_per_weight']:.2f} bits/weight")


def _finite(value: float) -> float | None:
    """JSON has no infinity: an exact layer's SQNR (inf) is written as null."""
    return None if value is None or math.isinf(value) or math.isnan(value) else float(value)


def _isnan(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())
