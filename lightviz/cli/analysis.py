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
import sys

from lightviz.cli import common as cli
from lightviz.cli import compute
from lightviz.core.specs import (
    GRANULARITIES,
    NUMBER_FORMATS,
    PRUNE_METHODS,
    RANGE_METHODS,
    SCHEMES,
    Plan,
)
from lightviz.io.outfile import write_atomic

DEFAULT_SENSITIVITY_BITS = "2,3,4,8"
DEFAULT_ALLOCATE_BITS = "2,3,4,6,8"


# --- activation flags of `evaluate` ------------------------------------------------------------


# --- sensitivity and allocate -----------------------------------------------------------------


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `sensitivity` and `allocate` commands to cli.py's subparsers."""
    sens = commands.add_parser("sensitivity", help="compress one layer at a time: accuracy drop and KL per setting")
    cli.model_flags(sens)
    sens.add_argument("--bits", default=DEFAULT_SENSITIVITY_BITS, help="bit-widths to try (comma-separated)")
    sens.add_argument("--sparsity", help="sparsities to try with float weights (comma-separated, 0..1)")
    sens.add_argument("--formats", help="number formats to try, comma-separated (fp8_e4m3, mxfp4, nvfp4, nf4, ...)")
    sens.add_argument("--gradient", action="store_true",
                      help="also score every layer x setting from backward passes (diagonal Fisher: predicted KL) "
                           "and report its rank correlation with the measured KL")
    sens.add_argument("--gradient-only", action="store_true",
                      help="only the gradient scores (no forward pass per layer and setting)")
    sens.add_argument("--layers", help="only these layers (comma-separated; default all)")
    _base_flags(sens)
    sens.add_argument("--no-reuse", action="store_true", help="run full forwards (no cached activations)")
    compute.ray_flags(sens)
    sens.add_argument("--out", help="also write the rows to this CSV file")
    sens.add_argument("--json", action="store_true", help="print one JSON object")
    sens.set_defaults(run=_sensitivity)

    alloc = commands.add_parser("allocate", help="mixed precision: bits per layer under a size budget or a drop")
    cli.model_flags(alloc)
    budget = alloc.add_mutually_exclusive_group(required=True)
    budget.add_argument("--avg-bits", type=float, help="storage bits per weight, scales included, at most this")
    budget.add_argument("--size-bytes", type=int, help="model size in bytes at most this")
    budget.add_argument("--max-drop", type=float,
                        help="smallest plan whose accuracy drop is at most this (0.01 = 1 point; "
                             "language models: relative perplexity increase, 0.01 = 1%%)")
    alloc.add_argument("--bits", default=DEFAULT_ALLOCATE_BITS, help="bit-widths a layer may take (comma-separated)")
    alloc.add_argument("--objective", choices=("kl", "accuracy_drop", "perplexity_increase", "gradient"), default="kl",
                       help="per-layer cost summed by the knapsack (default kl: smooth, additive; gradient: the "
                            "KL predicted from backward passes, no forward pass per layer and bit-width)")
    alloc.add_argument("--method", choices=("knapsack", "greedy"), default="knapsack")
    alloc.add_argument("--refine", type=int, default=8, help="knapsack choices measured before picking (default 8)")
    alloc.add_argument("--compare", action="store_true", help="also evaluate the uniform plans at each --bits")
    _base_flags(alloc)
    compute.ray_flags(alloc)
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
    parser.add_argument("--blocks", action="store_true",
                        help="language models: one unit per transformer block (its layers together)")
    cli.lm_flags(parser)


def _base_plan(args: argparse.Namespace) -> Plan:
    return cli.plan_from_args(argparse.Namespace(**{**vars(args), "bits": None, "sparsity": None, "method": None}))


def _check_cost(engine, base: Plan, bits: list[int]) -> None:
    """The app's cost guard over the layer settings tried: every layer at each bit-width."""
    from lightviz.analysis.mixed import uniform_at

    cli.check_cost(engine, [uniform_at(base, b) for b in bits])


def _units(args: argparse.Namespace, bundle, engine):
    """--blocks: the transformer blocks as units (language models only); else None (every layer)."""
    if not args.blocks:
        return None
    from lightviz.analysis.sensitivity import blocks

    units = blocks(engine)
    if getattr(bundle, "task", "classification") != "causal_lm" or not units:
        raise cli.UsageError("--blocks groups a language model's layers by transformer block; "
                             f"{bundle.name} has no such blocks")
    return units


def _bits_list(text: str) -> list[int]:
    bits = [cli.parse_bits(item) for item in cli.split(text, "bits")]
    if None in bits:
        raise cli.UsageError("--bits lists bit-widths from 1 to 16 here ('float' is the reference already)")
    return bits


def _sensitivity(args: argparse.Namespace) -> int:
    from lightviz.analysis.gradsens import gradient_sensitivity, rank_correlation
    from lightviz.analysis.sensitivity import pivot, sensitivity
    from lightviz.core.task import task_of

    bundle, data = cli.load(args)
    bits = _bits_list(args.bits)
    sparsities = ([cli.parse_float(s, "sparsity") for s in cli.split(args.sparsity, "sparsity")]
                  if args.sparsity else [])
    formats = cli.split(args.formats, "formats", NUMBER_FORMATS) if args.formats else []
    layers = cli.split(args.layers, "layers") if args.layers else None
    out = cli.out_path(args.out)
    engine, base = compute.engine(args, bundle), _base_plan(args)
    units = _units(args, bundle, engine)
    if units is not None and layers:
        raise cli.UsageError("--layers and --blocks do not go together")
    scored = None
    if args.gradient or args.gradient_only:
        if units is not None or task_of(data).is_lm:
            raise cli.UsageError("--gradient scores classifiers' layers; language models use measured sensitivity")
        scored = gradient_sensitivity(engine, data, bits, sparsities, base=base, formats=formats, layers=layers)
    if args.gradient_only:
        return _gradient_report(args, bundle, data, scored, out)
    _check_cost(engine, base, bits)
    with compute.backend(args) as backend:
        df = sensitivity(engine, data, bits, sparsities, base=base, layers=layers, units=units,
                         reuse=not args.no_reuse, backend=backend, formats=formats,
                         progress=compute.progress_printer(sys.stderr.isatty() and not args.json, "layer settings"))
    if out:
        write_atomic(out, lambda path: df.to_csv(path, index=False))
    task = task_of(data)
    if args.json:
        report = {"model": bundle.name, "data": data.description, "n_samples": len(data),
                  task.float_metric: df[task.float_metric].iloc[0], "settings": list(dict.fromkeys(df["setting"])),
                  "reused_activations": df.attrs["reuse"], "seconds": df.attrs["seconds"],
                  "rows": [{key: cli.json_safe(value) for key, value in row.items()} for row in df.to_dict("records")]}
        if scored is not None:
            report.update(gradient_seconds=scored.attrs["seconds"], rank_correlation=rank_correlation(df, scored),
                          gradient_rows=scored.to_dict("records"))
        print(json.dumps(cli.json_safe(report), allow_nan=False))
        return 0
    if scored is not None:
        print(f"gradient scores in {scored.attrs['seconds']:.1f} s (measured {df.attrs['seconds']:.1f} s); "
              f"Spearman rank correlation with the measured KL: {rank_correlation(df, scored):.3f}")
    labeled = data.labeled or task.is_lm
    value = task.drop_column if labeled else "kl"
    table = pivot(df, value) * (100 if labeled else 1)
    print(f"model {bundle.name}: {data.description}")
    print(f"{task.drop_label if labeled else 'KL vs float (nats)'} with only that "
          f"{'block' if units else 'layer'} compressed:")
    print(table.round(3).to_string())
    if out:
        print(f"wrote {len(df)} rows to {out}")
    return 0


def _gradient_report(args: argparse.Namespace, bundle, data, scored, out) -> int:
    from lightviz.analysis.sensitivity import pivot

    if out:
        write_atomic(out, lambda path: scored.to_csv(path, index=False))
    if args.json:
        report = {"model": bundle.name, "data": data.description, "n_samples": len(data),
                  "settings": list(dict.fromkeys(scored["setting"])), "gradient_seconds": scored.attrs["seconds"],
                  "gradient_rows": scored.to_dict("records")}
        print(json.dumps(cli.json_safe(report), allow_nan=False))
        return 0
    print(f"model {bundle.name}: {data.description}")
    print(f"predicted KL (nats) from {scored.attrs['passes']} backward passes in {scored.attrs['seconds']:.1f} s:")
    print(pivot(scored, "score").to_string(float_format=lambda v: f"{v:.3g}"))
    return 0


def _allocate(args: argparse.Namespace) -> int:
    from lightviz.analysis.gradsens import gradient_sensitivity
    from lightviz.analysis.mixed import allocate, uniform_at
    from lightviz.analysis.parallel import evaluate_plan
    from lightviz.analysis.sensitivity import sensitivity
    from lightviz.core.activations import wa_label
    from lightviz.core.task import task_of, wa_names

    bundle, data = cli.load(args)
    bits = _bits_list(args.bits)
    out = cli.out_path(args.out)
    engine = compute.engine(args, bundle)
    base = cli.for_model(_base_plan(args), args, bundle, engine)
    units = _units(args, bundle, engine)
    if units is None and task_of(data).is_lm:  # the layers the base plan quantizes: not the float embeddings
        units = {layer.name: [layer.name] for layer in engine.layers if not base.config_for(layer.name).keep_float}
    if args.objective == "gradient" and (units is not None or task_of(data).is_lm):
        raise cli.UsageError("--objective gradient scores classifiers' layers; language models use kl or "
                             "perplexity_increase")
    _check_cost(engine, base, bits)
    with compute.backend(args) as backend:
        if args.objective == "gradient":
            sens = gradient_sensitivity(engine, data, bits, base=base)
        else:
            sens = sensitivity(engine, data, bits, base=base, units=units, backend=backend)
        result = allocate(engine, data, sens, base, size_bytes=args.size_bytes, avg_bits=args.avg_bits,
                          max_drop=args.max_drop, objective=args.objective, method=args.method, refine=args.refine,
                          backend=backend)
        uniform = (backend.map(evaluate_plan, engine, data,
                               [cli.for_model(uniform_at(base, b), args, bundle, engine) for b in bits])
                   if args.compare else [])
    names = wa_names(result.plan, engine.layers)  # an LM's float embeddings do not count in W/A
    report = {"model": bundle.name, "data": data.description, "wa": wa_label(result.plan, names), **result.to_dict()}
    if args.compare:
        report["uniform"] = [{"bits": b, **evaluation.to_dict()} for b, evaluation in zip(bits, uniform)]
    if out:
        write_atomic(out, lambda path: path.write_text(result.plan.to_json(indent=2) + "\n"))
    if args.json:
        print(json.dumps(cli.json_safe(report), allow_nan=False))
        return 0
    ev = result.evaluation
    print(f"model {bundle.name}: {result.budget}, {result.method} on {result.objective}")
    print("bits: " + ", ".join(f"{name} {b}" for name, b in result.bits.items()))
    if ev.accuracy is not None:
        print(f"accuracy {ev.accuracy:.2%} (float {ev.float_accuracy:.2%})")
    if ev.perplexity is not None:
        print(f"perplexity {ev.perplexity:.4f} (float {ev.float_perplexity:.4f})")
    quantized = ev.quantized_bits_per_weight
    print(f"size {ev.size_bytes:,} B ({ev.compression_ratio:.2f}x), {ev.avg_bits_per_weight:.2f} bits/weight"
          + (f" ({quantized:.3f} per quantized weight, scales included)" if quantized is not None else ""))
    for row in report.get("uniform", []):
        if "perplexity" in row:
            print(f"  uniform {row['bits']} bits: perplexity {row['perplexity']:.4f}, size {row['size_bytes']:,} B")
            continue
        acc = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
        print(f"  uniform {row['bits']} bits: accuracy {acc}, size {row['size_bytes']:,} B")
    if out:
        print(f"wrote the plan to {out}")
    return 0
