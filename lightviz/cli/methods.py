"""CLI command `compare-methods`, registered into `python -m lightviz` by cli/__init__.py.

    python -m lightviz compare-methods --model digits-mobilenet --bits 4,3 --methods nearest,gptq,adaround --json
    python -m lightviz compare-methods --model resnet18 --max-samples 64 --formats mxfp4,nvfp4 --methods gptq

Each method at each bit-width (or number format) on every layer, evaluated: accuracy (or
agreement), size, the time the method took, and per layer the weight and output SQNR;
round-to-nearest is always the first method and the float model the reference.
Errors follow cli/__init__.py: bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from lightviz.cli import common as cli
from lightviz.cli.methodflags import method_flags, method_from_args
from lightviz.core.specs import GRANULARITIES, NUMBER_FORMATS, RANGE_METHODS, SCHEMES


def register(commands: argparse._SubParsersAction) -> None:
    """Add `compare-methods` to the CLI's subparsers."""
    parser = commands.add_parser("compare-methods", help="PTQ methods side by side: accuracy, size, per-layer error")
    cli.model_flags(parser)
    parser.add_argument("--methods", default="nearest,gptq,adaround,bias_correction",
                        help="comma-separated methods (nearest is always included), e.g. gptq,equalize+bias_correction")
    parser.add_argument("--bits", help="integer bit-widths, comma-separated (default 4,3 unless --formats)")
    parser.add_argument("--formats", help=f"number formats, comma-separated: {', '.join(NUMBER_FORMATS[1:])}")
    parser.add_argument("--scheme", choices=SCHEMES, help="default symmetric")
    parser.add_argument("--granularity", choices=GRANULARITIES, help="default channel")
    parser.add_argument("--group-size", type=int, help="weights per group (granularity group)")
    parser.add_argument("--range-method", choices=RANGE_METHODS)
    parser.add_argument("--percentile", type=float, help="for --range-method percentile")
    parser.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm separate (default: fold)")
    parser.add_argument("--plan", help="a plan JSON file whose settings are the base")
    method_flags(parser, with_method=False)
    parser.add_argument("--out", help="also write the rows to this CSV file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=_compare)


def _compare(args: argparse.Namespace) -> int:
    from lightviz.analysis.methods import compare_methods
    from lightviz.core.engine import Engine
    from lightviz.core.methods.spec import MethodSpec

    methods = [MethodSpec(name).name for name in cli.split(args.methods, "methods")]
    bits = [cli.parse_bits(b) for b in cli.split(args.bits, "bits")] if args.bits else []
    if None in bits:
        raise cli.UsageError("--bits lists bit-widths from 1 to 16 here (the float model is the reference already)")
    formats = cli.split(args.formats, "formats", NUMBER_FORMATS) if args.formats else []
    if not bits and not formats:
        bits = [4, 3]
    base_args = argparse.Namespace(**{**vars(args), "bits": None, "sparsity": None, "prune_method": None,
                                      "format": None, "method": None})
    base = cli.plan_from_args(base_args)
    settings = method_from_args(args)
    out = cli.out_path(args.out)
    bundle, data = cli.load(args)
    progress = cli.terminal_progress() if not args.json else None
    result = compare_methods(Engine(bundle.model), data, methods, bits, formats, base, settings, progress)
    if out:
        result.rows.to_csv(out, index=False)
    if args.json:
        report = {"model": bundle.name, "data": data.description, "n_samples": len(data), **result.to_dict()}
        print(json.dumps(cli.json_safe(report), allow_nan=False))
        return 0
    rows = result.rows
    print(f"model {bundle.name}: {data.description}")
    acc = "float accuracy n/a" if result.float_accuracy is None else f"float accuracy {result.float_accuracy:.2%}"
    print(f"{acc}, float size {result.float_size_bytes:,} B")
    for row in rows.itertuples():
        score = f"accuracy {row.accuracy:.2%}" if row.accuracy == row.accuracy and row.accuracy is not None \
            else f"agreement {row.agreement:.2%}"
        print(f"  {row.setting:>8s} {row.method:28s} {score}, KL {row.kl:.4g}, {row.size_bytes:,} B, "
              f"{row.seconds:.1f} s", file=sys.stdout)
    if out:
        print(f"wrote {len(rows)} rows to {out}")
    return 0
