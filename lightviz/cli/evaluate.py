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
from lightviz.cli import compute
from lightviz.io.outfile import write_atomic


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
    compute.ray_flags(sweep)
    sweep.add_argument("--out", required=True, help="CSV file to write (written whole at the end, or not at all)")
    sweep.set_defaults(run=_sweep)


def _models(args: argparse.Namespace) -> int:
    from lightviz.io.catalog import (  # plain data: no torch import
        LANGUAGE_MODELS,
        SAMPLE_DESCRIPTIONS,
        TORCHVISION_CLASSIFIERS,
    )

    if args.json:
        print(json.dumps({"samples": list(SAMPLE_DESCRIPTIONS), "torchvision": list(TORCHVISION_CLASSIFIERS),
                          "language_models": list(LANGUAGE_MODELS)}))
        return 0
    for name, description in SAMPLE_DESCRIPTIONS.items():
        print(f"{name:18s} {description}")
    print("\nlanguage models (perplexity on held-out text; or --model path/to/hf-folder):")
    for name, description in LANGUAGE_MODELS.items():
        print(f"{name:18s} {description}")
    print(f"\ntorchvision architectures (random init, fidelity only): {', '.join(TORCHVISION_CLASSIFIERS)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    bundle, data = cli.load(args)
    engine = compute.engine(args, bundle)
    plan = cli.for_model(cli.apply_activation_flags(cli.plan_from_args(args), args), args, bundle, engine)
    cli.check_cost(engine, [plan])
    evaluation = engine.evaluate(plan, data, cli.terminal_progress())
    table = engine.layer_table(plan, data)
    shape = ({"task": "causal_lm", "context": bundle.input_shape[0], "vocab_size": bundle.num_classes,
              "tokenizer": getattr(bundle.tokenizer, "name", None), "seq_len": int(data.x.shape[1])}
             if evaluation.task == "causal_lm" else
             {"input_shape": list(bundle.input_shape), "num_classes": bundle.num_classes})
    report = {
        "model": bundle.name, "data": data.description, "note": bundle.note, **shape,
        **evaluation.to_dict(),
        "layers": [
            {"name": row.name, "type": row.type, "bits": None if _isnan(row.bits) else int(row.bits),
             "scheme": row.scheme, "granularity": row.granularity, "sparsity": row.achieved_sparsity,
             "format": row.format, "sqnr_db": float(row.sqnr_db), "mse": row.mse,
             "size_bytes": int(row.size_bytes), "number_format": row.number_format, "method": row.method,
             "method_note": row.method_note}
            for row in table.itertuples()
        ],
        "plan": plan.to_dict(),
    }
    report.update(evaluate_extras(engine, plan, data))  # "wa", activation ranges
    report["notes"] = _logit_notes(engine, plan, data)
    report = cli.with_notes(report)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        _print_summary(report)
    return 0


def _logit_notes(engine, plan, data) -> list[str]:
    """A note for each model whose logits hold NaN or inf on some inputs (weights near float32's limit)."""
    from lightviz.core.metrics import nonfinite_rows

    notes = []
    for what, p in (("float", None), ("compressed", plan)):
        bad = nonfinite_rows(engine.logits(p, data))  # cached by evaluate: no second pass
        if bad:
            notes.append(f"the {what} model's outputs overflow float32 (NaN or inf logits) on {bad} of {len(data)} "
                         "inputs: its predictions there, and accuracy, agreement and KL, mean little")
    return notes


def _sweep(args: argparse.Namespace) -> int:
    from lightviz.analysis.sweep import run_sweep, sweep_configs

    if args.preset:
        raise cli.UsageError("sweep lists bits, schemes and granularities itself; instead of --preset give e.g. "
                             "--granularity group --group-size 128 --scheme asymmetric --scale-dtype float16")
    bundle, data = cli.load(args)
    bits = [cli.parse_bits(b) for b in cli.split(args.bits, "bits")]
    schemes = cli.split(args.scheme, "scheme", cli.SCHEMES)
    granularities = cli.split(args.granularity, "granularity", cli.GRANULARITIES)
    sparsities = [cli.parse_float(s, "sparsity") for s in cli.split(args.sparsity, "sparsity")]
    base = cli.plan_from_args(args, with_default_flags=False)
    plans = sweep_configs(bits, schemes, granularities, sparsities, args.prune_method or "unstructured", base)
    engine = compute.engine(args, bundle)
    plans = [cli.for_model(plan, args, bundle, engine) for plan in plans]  # an LM keeps its embeddings float
    out = cli.out_path(args.out)
    cli.check_cost(engine, plans)
    with compute.backend(args) as backend:
        df = run_sweep(engine, data, plans, progress=compute.progress_printer(sys.stderr.isatty(), "configurations"),
                       backend=backend)
    df.insert(0, "model", bundle.name)
    write_atomic(out, lambda path: df.to_csv(path, index=False))
    print(f"wrote {len(df)} configurations to {out}")
    return 0


def evaluate_extras(engine, plan, data) -> dict:
    """What `evaluate --json` adds: the W/A label and, with activations, each layer's input range."""
    from lightviz.core.activations import wa_label
    from lightviz.core.task import task_of, wa_names

    names = [layer.name for layer in engine.layers]
    if task_of(data).is_lm:  # W/A as LM users write it: the embeddings and head kept float do not count
        names = wa_names(plan, engine.layers)
    extras = {"wa": wa_label(plan, names)}
    if plan.activations is not None and not plan.activations.per_token:  # per token: no fixed ranges
        ranges = engine.activation_qparams(plan, data)
        extras["activation_ranges"] = [{"name": name, "lo": item.lo, "hi": item.hi, "scale": item.scale,
                                        "zero_point": item.zero_point} for name, item in ranges.items()]
    return extras


def _print_summary(report: dict) -> None:
    acc = report.get("accuracy")
    print(f"model {report['model']}: {report['data']}")
    print(f"weights/activations {report['wa']}") if report.get("wa") else None
    if acc is not None:
        print(f"accuracy {acc:.2%} (float {report['float_accuracy']:.2%})")
    if report.get("perplexity") is not None:
        change = report["perplexity"] / report["float_perplexity"] - 1
        print(f"perplexity {report['perplexity']:.4f} (float {report['float_perplexity']:.4f}, {change:+.2%}) "
              f"on {report['n_tokens']:,} predicted tokens")
    unit = "next-token agreement" if report.get("perplexity") is not None else "agreement with float"
    kl = "n/a" if report["kl"] is None else f"{report['kl']:.4g}"
    print(f"{unit} {report['agreement']:.2%}, KL {kl}")
    bits = report.get("quantized_bits_per_weight")
    print(f"size {report['size_bytes']:,} B (float {report['float_size_bytes']:,} B, "
          f"{report['compression_ratio']:.2f}x), {report['avg_bits_per_weight']:.2f} bits/weight"
          + (f" ({bits:.3f} per quantized weight, scales included)" if bits is not None else ""))
    for note in report.get("notes", []):
        if note.startswith(("the ", "kl ")):  # about what this summary shows (--json has every note)
            print(f"note: {note}")


def _isnan(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
