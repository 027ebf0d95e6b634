"""CLI commands `models`, `evaluate` and `sweep`.

    python -m lightviz models
    python -m lightviz evaluate --model digits-cnn --bits 4 --granularity tensor --json
    python -m lightviz sweep --model digits-cnn --bits 2,4,8 --scheme symmetric,asymmetric --out r.csv

A model file is loaded as data, never as code (see lightviz.io.loading); TorchScript and .pt2
archives (they run code) and pickled whole modules (still read weights-only) need --trust-code.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from lightviz.cli import common as cli


def register(commands: argparse._SubParsersAction) -> None:
    """Add `models`, `evaluate` and `sweep` to the CLI's subparsers."""
    models = commands.add_parser("models", help="list the sample models and torchvision architectures")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=_models)

    evaluate = commands.add_parser("evaluate", help="compress a model under one plan and report")
    cli.model_flags(evaluate)
    cli.plan_flags(evaluate, sweepable=False)
    cli.add_activation_flags(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(run=_evaluate)

    sweep = commands.add_parser("sweep", help="evaluate every combination; one CSV row each")
    cli.model_flags(sweep)
    cli.plan_flags(sweep, sweepable=True)
    sweep.add_argument("--out", required=True, help="CSV file to write")
    sweep.set_defaults(run=_sweep)


def _models(args: argparse.Namespace) -> int:
    from lightviz.io.catalog import (  # plain data: no torch import
        SAMPLE_DESCRIPTIONS,
        TORCHVISION_CLASSIFIERS,
    )

    if args.json:
        print(json.dumps({"samples": list(SAMPLE_DESCRIPTIONS), "torchvision": list(TORCHVISION_CLASSIFIERS)}))
        return 0
    for name, description in SAMPLE_DESCRIPTIONS.items():
        print(f"{name:18s} {description}")
    print(f"\ntorchvision architectures (random init, fidelity only): {', '.join(TORCHVISION_CLASSIFIERS)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lightviz.core.engine import Engine

    bundle, data = cli.load(args)
    plan = cli.apply_activation_flags(cli.plan_from_args(args), args)
    engine = Engine(bundle.model)
    evaluation = engine.evaluate(plan, data, cli.terminal_progress())
    table = engine.layer_table(plan, data)
    report = {
        "model": bundle.name, "data": data.description, "note": bundle.note,
        "input_shape": list(bundle.input_shape), "num_classes": bundle.num_classes,
        **evaluation.to_dict(),
        "layers": [
            {"name": row.name, "type": row.type, "bits": None if _isnan(row.bits) else int(row.bits),
             "scheme": row.scheme, "granularity": row.granularity, "sparsity": row.achieved_sparsity,
             "format": row.format, "sqnr_db": cli.json_safe(float(row.sqnr_db)), "mse": row.mse,
             "size_bytes": int(row.size_bytes), "number_format": row.number_format, "method": row.method,
             "method_note": row.method_note}
            for row in table.itertuples()
        ],
        "plan": plan.to_dict(),
    }
    report.update(evaluate_extras(engine, plan, data))  # "wa", activation ranges
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        _print_summary(report)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from lightviz.analysis.sweep import run_sweep, sweep_configs
    from lightviz.core.engine import Engine

    bundle, data = cli.load(args)
    bits = [cli.parse_bits(b) for b in cli.split(args.bits, "bits")]
    schemes = cli.split(args.scheme, "scheme", cli.SCHEMES)
    granularities = cli.split(args.granularity, "granularity", cli.GRANULARITIES)
    sparsities = [cli.parse_float(s, "sparsity") for s in cli.split(args.sparsity, "sparsity")]
    base = cli.plan_from_args(args, with_default_flags=False)
    plans = sweep_configs(bits, schemes, granularities, sparsities, args.prune_method or "unstructured", base)
    out = cli.out_path(args.out)
    interactive = sys.stderr.isatty()
    df = run_sweep(Engine(bundle.model), data, plans, progress=lambda i, n: interactive and print(
        f"\r{i}/{n} configurations", end="" if i < n else "\n", file=sys.stderr))
    df.insert(0, "model", bundle.name)
    df.to_csv(out, index=False)
    print(f"wrote {len(df)} configurations to {out}")
    return 0


def evaluate_extras(engine, plan, data) -> dict:
    """What `evaluate --json` adds: the W/A label and, with activations, each layer's input range."""
    from lightviz.core.activations import wa_label

    extras = {"wa": wa_label(plan, [layer.name for layer in engine.layers])}
    if plan.activations is not None:
        ranges = engine.activation_qparams(plan, data)
        extras["activation_ranges"] = [{"name": name, "lo": item.lo, "hi": item.hi, "scale": item.scale,
                                        "zero_point": item.zero_point} for name, item in ranges.items()]
    return extras


def _print_summary(report: dict) -> None:
    acc = report["accuracy"]
    print(f"model {report['model']}: {report['data']}")
    print(f"weights/activations {report['wa']}") if report.get("wa") else None
    if acc is not None:
        print(f"accuracy {acc:.2%} (float {report['float_accuracy']:.2%})")
    print(f"agreement with float {report['agreement']:.2%}, KL {report['kl']:.4g}")
    print(f"size {report['size_bytes']:,} B (float {report['float_size_bytes']:,} B, "
          f"{report['compression_ratio']:.2f}x), {report['avg_bits_per_weight']:.2f} bits/weight")


def _isnan(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
