"""CLI commands for the deeper analyses, registered into `python -m lightviz` by cli.py.

    python -m lightviz evaluate --model digits-cnn --bits 4 --act-bits 8 --json        # W4A8
    python -m lightviz sensitivity --model digits-cnn --bits 2,3,4,8 --sparsity 0.5 --json
    python -m lightviz allocate --model digits-mobilenet --avg-bits 4 --json
    python -m lightviz allocate --model digits-cnn --max-drop 0.01 --out plan.json

Errors follow cli.py: bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

from lightviz import cli
from lightviz.activations import wa_label
from lightviz.specs import GRANULARITIES, PRUNE_METHODS, RANGE_METHODS, SCHEMES, ActivationSpec, Plan

DEFAULT_SENSITIVITY_BITS = "2,3,4,8"
DEFAULT_ALLOCATE_BITS = "2,3,4,6,8"


# --- activation flags of `evaluate` ------------------------------------------------------------


def add_activation_flags(parser: argparse.ArgumentParser) -> None:
    """--act-bits, --act-scheme, --act-range-method, --act-percentile, --calib-batches, --calib-batch-size."""
    parser.add_argument("--act-bits", help="quantize every layer's input to 1..16 bits, per tensor, calibrated "
                                           "('float' keeps them float, the default)")
    parser.add_argument("--act-scheme", choices=SCHEMES, help="activation scheme (default asymmetric)")
    parser.add_argument("--act-range-method", choices=RANGE_METHODS, help="activation clip range (default minmax)")
    parser.add_argument("--act-percentile", type=float, help="for --act-range-method percentile, e.g. 99.99")
    parser.add_argument("--calib-batches", type=int, help="calibration batches (default 4)")
    parser.add_argument("--calib-batch-size", type=int, help="inputs per calibration batch (default 32)")


def apply_activation_flags(plan: Plan, args: argparse.Namespace) -> Plan:
    """`plan` with the activation flags applied on top of its own activation spec (if any)."""
    flags = {"scheme": args.act_scheme, "range_method": args.act_range_method, "percentile": args.act_percentile,
             "calib_batches": args.calib_batches, "batch_size": args.calib_batch_size}
    changes = {key: value for key, value in flags.items() if value is not None}
    if args.act_bits is not None and str(args.act_bits).lower() in ("float", "none", "fp32", "32"):
        return replace(plan, activations=None)
    if args.act_bits is not None:
        try:
            changes["bits"] = int(args.act_bits)
        except ValueError:
            raise cli.UsageError(
                f"--act-bits must be an integer from 1 to 16 or 'float'; got {args.act_bits!r}") from None
    if not changes:
        return plan
    if plan.activations is None and "bits" not in changes:
        raise cli.UsageError("--act-scheme, --act-range-method, --act-percentile and --calib-batches need --act-bits")
    return replace(plan, activations=replace(plan.activations or ActivationSpec(), **changes))


def evaluate_extras(engine, plan: Plan, data) -> dict:
    """What `evaluate --json` adds: the W/A label and, with activations, each layer's input range."""
    extras = {"wa": wa_label(plan, [layer.name for layer in engine.layers])}
    if plan.activations is not None:
        from lightviz.activations import calibration_inputs

        ranges = engine.activation_qparams(plan, calibration_inputs(data))
        extras["activation_ranges"] = [{"name": name, "lo": item.lo, "hi": item.hi, "scale": item.scale,
                                        "zero_point": item.zero_point} for name, item in ranges.items()]
    return extras


# --- sensitivity and allocate -----------------------------------------------------------------


def register_cli(commands: argparse._SubParsersAction) -> None:
    """Add the `sensitivity` and `allocate` commands to cli.py's subparsers."""
    sens = commands.add_parser("sensitivity", help="compress one layer at a time: accuracy drop and KL per setting")
    cli._model_flags(sens)
    sens.add_argument("--bits", default=DEFAULT_SENSITIVITY_BITS, help="bit-widths to try (comma-separated)")
    sens.add_argument("--sparsity", help="sparsities to try with float weights (comma-separated, 0..1)")
    sens.add_argument("--layers", help="only these layers (comma-separated; default all)")
    _base_flags(sens)
    sens.add_argument("--no-reuse", action="store_true", help="run full forwards (no cached activations)")
    sens.add_argument("--out", help="also write the rows to this CSV file")
    sens.add_argument("--json", action="store_true", help="print one JSON object")
    sens.set_defaults(run=_sensitivity)

    alloc = commands.add_parser("allocate", help="mixed precision: bits per layer under a size budget or a drop")
    cli._model_flags(alloc)
    budget = alloc.add_mutually_exclusive_group(required=True)
    budget.add_argument("--avg-bits", type=float, help="storage bits per weight, scales included, at most this")
    budget.add_argument("--size-bytes", type=int, help="model size in bytes at most this")
    budget.add_argument("--max-drop", type=float,
                        help="smallest plan whose accuracy drop is at most this (0.01 = 1 point)")
    alloc.add_argument("--bits", default=DEFAULT_ALLOCATE_BITS, help="bit-widths a layer may take (comma-separated)")
    alloc.add_argument("--objective", choices=("kl", "accuracy_drop"), default="kl",
                       help="per-layer cost summed by the knapsack (default kl: smooth, additive)")
    alloc.add_argument("--method", choices=("knapsack", "greedy"), default="knapsack")
    alloc.add_argument("--refine", type=int, default=8, help="knapsack choices measured before picking (default 8)")
    alloc.add_argument("--compare", action="store_true", help="also evaluate the uniform plans at each --bits")
    _base_flags(alloc)
    alloc.add_argument("--out", help="also write the plan JSON to this file (for `evaluate --plan`)")
    alloc.add_argument("--json", action="store_true", help="print one JSON object")
    alloc.set_defaults(run=_allocate)


def _base_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheme", choices=SCHEMES, help="weight scheme (default symmetric)")
    parser.add_argument("--granularity", choices=GRANULARITIES, help="default channel")
    parser.add_argument("--group-size", type=int, help="weights per group (granularity group)")
    parser.add_argument("--range-method", choices=RANGE_METHODS)
    parser.add_argument("--percentile", type=float, help="for --range-method percentile")
    parser.add_argument("--prune-method", choices=PRUNE_METHODS, help="for --sparsity (default unstructured)")
    parser.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm separate (default: fold)")
    parser.add_argument("--plan", help="a plan JSON file whose settings are the base")


def _base_plan(args: argparse.Namespace) -> Plan:
    return cli.plan_from_args(argparse.Namespace(**{**vars(args), "bits": None, "sparsity": None}))


def _bits_list(text: str) -> list[int]:
    bits = [cli._parse_bits(item) for item in cli._split(text, "bits")]
    if None in bits:
        raise cli.UsageError("--bits lists bit-widths from 1 to 16 here ('float' is the reference already)")
    return bits


def _sensitivity(args: argparse.Namespace) -> int:
    from lightviz.engine import Engine
    from lightviz.sensitivity import pivot, sensitivity

    bundle, data = cli._load(args)
    bits = _bits_list(args.bits)
    sparsities = ([cli._parse_float(s, "sparsity") for s in cli._split(args.sparsity, "sparsity")]
                  if args.sparsity else [])
    layers = cli._split(args.layers, "layers") if args.layers else None
    out = _out_path(args.out)
    interactive = sys.stderr.isatty() and not args.json
    df = sensitivity(Engine(bundle.model), data, bits, sparsities, base=_base_plan(args), layers=layers,
                     reuse=not args.no_reuse, progress=lambda i, n: interactive and print(
                         f"\r{i}/{n} layer settings", end="" if i < n else "\n", file=sys.stderr))
    if out:
        df.to_csv(out, index=False)
    if args.json:
        report = {"model": bundle.name, "data": data.description, "n_samples": len(data),
                  "float_accuracy": df["float_accuracy"].iloc[0], "settings": list(dict.fromkeys(df["setting"])),
                  "reused_activations": df.attrs["reuse"], "seconds": df.attrs["seconds"],
                  "rows": [{key: _clean(value) for key, value in row.items()} for row in df.to_dict("records")]}
        print(json.dumps(_clean(report), allow_nan=False))
        return 0
    value = "accuracy_drop" if data.labeled else "kl"
    table = pivot(df, value) * (100 if data.labeled else 1)
    print(f"model {bundle.name}: {data.description}")
    print(f"{'accuracy drop (points)' if data.labeled else 'KL vs float (nats)'} with only that layer compressed:")
    print(table.round(3).to_string())
    if out:
        print(f"wrote {len(df)} rows to {out}")
    return 0


def _allocate(args: argparse.Namespace) -> int:
    from lightviz.engine import Engine
    from lightviz.mixed import allocate, uniform_at
    from lightviz.sensitivity import sensitivity

    bundle, data = cli._load(args)
    bits = _bits_list(args.bits)
    base = _base_plan(args)
    out = _out_path(args.out)
    engine = Engine(bundle.model)
    sens = sensitivity(engine, data, bits, base=base)
    result = allocate(engine, data, sens, base, size_bytes=args.size_bytes, avg_bits=args.avg_bits,
                      max_drop=args.max_drop, objective=args.objective, method=args.method, refine=args.refine)
    names = [layer.name for layer in engine.layers]
    report = {"model": bundle.name, "data": data.description, "wa": wa_label(result.plan, names), **result.to_dict()}
    if args.compare:
        report["uniform"] = [{"bits": b, **engine.evaluate(uniform_at(base, b), data).to_dict()} for b in bits]
    if out:
        out.write_text(result.plan.to_json(indent=2) + "\n")
    if args.json:
        print(json.dumps(_clean(report), allow_nan=False))
        return 0
    ev = result.evaluation
    print(f"model {bundle.name}: {result.budget}, {result.method} on {result.objective}")
    print("bits: " + ", ".join(f"{name} {b}" for name, b in result.bits.items()))
    if ev.accuracy is not None:
        print(f"accuracy {ev.accuracy:.2%} (float {ev.float_accuracy:.2%})")
    print(f"size {ev.size_bytes:,} B ({ev.compression_ratio:.2f}x), {ev.avg_bits_per_weight:.2f} bits/weight")
    for row in report.get("uniform", []):
        acc = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
        print(f"  uniform {row['bits']} bits: accuracy {acc}, size {row['size_bytes']:,} B")
    if out:
        print(f"wrote the plan to {out}")
    return 0


def _out_path(text: str | None) -> Path | None:
    if not text:
        return None
    out = Path(text)
    if not out.parent.exists():
        raise cli.UsageError(f"--out: folder {out.parent} does not exist")
    return out


def _clean(value):
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value
