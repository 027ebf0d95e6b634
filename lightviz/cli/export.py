"""CLI commands `export`, `benchmark` and `inspect`: the plan as a file a runtime runs, its measured
speed, and what a packed file holds.

    python -m lightviz export --model digits-cnn --bits 8 --act-bits 8 --format onnx --out model.onnx
    python -m lightviz export --model digits-cnn --bits 4 --sparsity 0.5 --format lightviz --out model.safetensors
    python -m lightviz export --model digits-mlp --sparsity 0.5 --prune-method filter --physical --format onnx --out s.onnx
    python -m lightviz benchmark --model resnet18 --bits 8 --act-bits 8 --json
    python -m lightviz inspect model.safetensors

An export is checked before it is written (onnxruntime against lightviz's simulation, or the
packed file read back) and written atomically: a refused or failed export leaves nothing at --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lightviz.cli import common as cli

FORMATS = {"onnx": ".onnx", "lightviz": ".safetensors"}
AGREEMENT_FLOOR = 0.995


def register(commands: argparse._SubParsersAction) -> None:
    """Add `export`, `benchmark` and `inspect` to the CLI's subparsers."""
    export = commands.add_parser("export", help="write the plan's model: ONNX (QDQ) or a packed .safetensors file")
    cli.model_flags(export)
    cli.plan_flags(export, sweepable=False, number_format=False)
    cli.add_activation_flags(export)
    export.add_argument("--format", required=True, choices=tuple(FORMATS),
                        help="onnx: QDQ graph for onnxruntime and other ONNX runtimes; lightviz: packed codes, "
                             "exactly the plan's size plus a header")
    export.add_argument("--out", required=True, help="file to write (.onnx or .safetensors)")
    export.add_argument("--physical", action="store_true",
                        help="with filter pruning and --format onnx: remove the pruned filters and the inputs "
                             "they feed, for a smaller dense model")
    export.add_argument("--opset", type=int, default=21, help="ONNX opset, 18-23 (default 21: blocked and INT4 "
                                                              "DequantizeLinear)")
    export.add_argument("--no-check", action="store_true", help="skip running the export in onnxruntime first")
    export.add_argument("--json", action="store_true", help="print one JSON object")
    export.set_defaults(run=_export)

    bench = commands.add_parser("benchmark", help="measured onnxruntime CPU latency: float export vs the plan's")
    cli.model_flags(bench)
    cli.plan_flags(bench, sweepable=False)
    cli.add_activation_flags(bench)
    bench.add_argument("--batch", default="1,32", help="batch sizes (comma-separated, default 1,32)")
    bench.add_argument("--runs", type=int, default=10, help="timed runs per engine and batch (default 10)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    bench.add_argument("--threads", type=int, help="intra-op threads (default: one per CPU core)")
    bench.add_argument("--budget", type=float, default=60.0,
                       help="seconds of timed runs per batch size at most (default 60; at least 3 runs)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(run=_benchmark)

    inspect = commands.add_parser("inspect", help="what a packed lightviz file holds (and check it)")
    inspect.add_argument("file", help="a .safetensors file written by `export --format lightviz`")
    inspect.add_argument("--plan-out", help="also write its plan JSON to this file")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(run=_inspect)


# --- export -----------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    out = _checked_out(args)
    from lightviz.core.engine import Engine

    bundle, data = cli.load(args)
    if args.format == "onnx" and bundle.task == "causal_lm":
        raise cli.UsageError("ONNX export covers image classifiers; export a language model with --format lightviz "
                             "(the packed .safetensors file)")
    engine = Engine(bundle.model)
    plan = cli.for_model(cli.apply_activation_flags(cli.plan_from_args(args), args), args, bundle, engine)
    engine.check_plan(plan)
    report = {"model": bundle.name, "format": args.format, "path": str(out), "plan": plan.to_dict()}
    if args.format == "lightviz":
        report.update(_export_packed(engine, plan, out, bundle.name, data))
    else:
        report.update(_export_onnx(engine, plan, data, out, bundle, args))
    if args.json:
        print(json.dumps(cli.json_safe(report), allow_nan=False))
    else:
        _print_export(report)
    return 0


def _checked_out(args: argparse.Namespace) -> Path:
    out = cli.out_path(args.out)
    suffix = FORMATS[args.format]
    if out.suffix.lower() != suffix:
        raise cli.UsageError(f"--out for --format {args.format} must end with {suffix}; got {out.name!r}")
    if args.physical and args.format != "onnx":
        raise cli.UsageError("--physical goes with --format onnx; the packed lightviz file already stores nothing "
                             "for pruned filters (its 'filters removed' format)")
    if args.format == "lightviz" and (args.opset != 21 or args.no_check):
        raise cli.UsageError("--opset and --no-check go with --format onnx")
    return out


def _export_packed(engine, plan, out: Path, name: str, data) -> dict:
    from lightviz.io.outfile import write_atomic
    from lightviz.io.packed import load_packed, packed_bytes

    content = packed_bytes(engine, plan, name, data)
    packed = load_packed(content)  # read it back before writing: what lands on disk loads
    size = write_atomic(out, content)
    return {"bytes": size, "size_bytes": packed.size_bytes, "header_bytes": packed.header_bytes,
            "plan_size_bytes": engine.size_bytes(plan),
            "layers": [{"name": layer.name, "format": layer.format, "bits": layer.quant.bits, "bytes": layer.nbytes}
                       for layer in packed.layers.values()]}


def _export_onnx(engine, plan, data, out: Path, bundle, args: argparse.Namespace) -> dict:
    from lightviz.io.onnx_export import export_onnx
    from lightviz.io.onnx_runtime import runtime_check

    extra = {}
    if args.physical:
        from lightviz.io.physical import make_physical

        physical = make_physical(engine, plan, bundle.input_shape, data)
        export = export_onnx(engine, plan, data, opset=args.opset, model_name=bundle.name,
                             carrier=physical.model, codes=physical.codes)
        extra["physical"] = physical.to_dict()
    else:
        export = export_onnx(engine, plan, data, opset=args.opset, model_name=bundle.name)
    if not args.no_check:
        check = runtime_check(engine, plan, data, export)
        extra["check"] = check.to_dict()
        if check.agreement < AGREEMENT_FLOOR:
            print(f"lightviz: warning: onnxruntime picks the same class as lightviz's simulation on only "
                  f"{check.agreement:.1%} of {check.n_samples} inputs (max logit difference "
                  f"{check.max_logit_diff:.3g}): integer kernels round differently (e.g. the bias in int32)",
                  file=sys.stderr)
    size = export.save(out)
    return {"bytes": size, "opset": export.opset, "seconds": export.seconds, "layers": export.summary(), **extra}


def _print_export(report: dict) -> None:
    print(f"wrote {report['path']} ({report['bytes']:,} bytes): {report['model']} as {report['format']}")
    if "header_bytes" in report:
        print(f"  tensors {report['size_bytes']:,} B = the plan's size {report['plan_size_bytes']:,} B; "
              f"header {report['header_bytes']:,} B")
    for layer in report["layers"]:
        if report["format"] == "onnx":
            codes = f" codes {layer['codes']}" if layer["codes"] else ""
            print(f"  {layer['name']:24s} {layer['op']:14s} {layer['weight']:8s} {layer['form']}{codes}; "
                  f"input {layer['input']}")
        else:
            bits = "float32" if layer["bits"] is None else f"{layer['bits']}-bit"
            print(f"  {layer['name']:24s} {bits:8s} {layer['format']:16s} {layer['bytes']:,} B")
    if "check" in report:
        check = report["check"]
        print(f"onnxruntime vs lightviz: top-1 agreement {check['agreement']:.2%} on {check['n_samples']} inputs, "
              f"max logit difference {check['max_logit_diff']:.3g}")
    physical = report.get("physical")
    if physical:
        print(f"physical: {physical['params_before']:,} -> {physical['params_after']:,} parameters; removed "
              + (", ".join(f"{name} {n}" for name, n in physical["removed"].items()) or "nothing"))
        for name, why in physical["kept_masked"].items():
            print(f"  kept masked {name}: {why}")


# --- benchmark --------------------------------------------------------------------------------


def _benchmark(args: argparse.Namespace) -> int:
    # Idle OpenMP threads sleep instead of spinning (as `make run` sets it): spinning threads of one
    # engine would steal the cores the engine being timed needs. Only works before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    batches = cli.ints(args.batch, "batch")
    batches = (batches,) if isinstance(batches, int) else tuple(batches)
    for name in ("runs", "warmup", "threads"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise cli.UsageError(f"--{name} must be a {'non-negative' if name == 'warmup' else 'positive'} integer; "
                                 f"got {value}")
    from lightviz.analysis.latency import benchmark
    from lightviz.core.engine import Engine

    bundle, data = cli.load(args)
    if bundle.task == "causal_lm":
        raise cli.UsageError("benchmark times the ONNX export in onnxruntime, which covers image classifiers, not "
                             "language models")
    plan = cli.apply_activation_flags(cli.plan_from_args(args), args)
    engine = Engine(bundle.model)
    engine.check_plan(plan)
    bench = benchmark(engine, plan, data, batches=batches, runs=args.runs, warmup=args.warmup,
                      threads=args.threads, budget_s=args.budget)
    report = {"model": bundle.name, "plan": plan.to_dict(), **bench.to_dict(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    if args.json:
        print(json.dumps(cli.json_safe(report), allow_nan=False))
        return 0
    print(f"model {bundle.name}, plan {bench.wa}: onnxruntime {report['onnxruntime']} CPU, {bench.threads} threads, "
          f"median of up to {args.runs} runs after {bench.warmup} warm-up (load average {bench.load_average[0]})")
    frame = bench.frame()
    table = frame.pivot(index="batch", columns="engine", values="median_ms")
    table["speed-up"] = bench.speedups().values()
    print(table.round(3).to_string())
    totals = bench.totals
    print(f"MACs {totals['macs']:,} per input; bit-operations {totals['bit_operations']:,} "
          f"({totals['bit_operation_reduction']:.1f}x fewer than float32)")
    print("onnxruntime ran: " + ", ".join(f"{op} {n}" for op, n in bench.runtime_ops.items()))
    for note in bench.notes:
        print(f"- {note}")
    return 0


# --- inspect ----------------------------------------------------------------------------------


def _inspect(args: argparse.Namespace) -> int:
    from lightviz.core.activations import wa_label
    from lightviz.io.outfile import write_atomic
    from lightviz.io.packed import load_packed

    path = Path(args.file)
    if not path.is_file():
        raise cli.UsageError(f"no such file {path}")
    packed = load_packed(path)
    plan_out = cli.out_path(args.plan_out)
    report = {"file": str(path), "model": packed.model_name, "wa": wa_label(packed.plan, list(packed.layers)),
              "file_bytes": packed.file_bytes, "size_bytes": packed.size_bytes, "header_bytes": packed.header_bytes,
              "layers": [{"name": layer.name, "shape": list(layer.weight.shape), "bits": layer.quant.bits,
                          "scheme": layer.quant.scheme, "granularity": layer.quant.granularity,
                          "format": layer.format, "bytes": layer.nbytes} for layer in packed.layers.values()],
              "other_tensors": len(packed.state), "plan": packed.plan.to_dict()}
    if plan_out:
        write_atomic(plan_out, (packed.plan.to_json(indent=2) + "\n").encode())
    if args.json:
        print(json.dumps(cli.json_safe(report), allow_nan=False))
        return 0
    print(f"{path}: lightviz packed file of {packed.model_name or 'a model'}, plan {report['wa']}, checksum ok")
    print(f"  {packed.file_bytes:,} bytes = {packed.size_bytes:,} B of tensors (the plan's size) "
          f"+ {packed.header_bytes:,} B header")
    for layer in report["layers"]:
        bits = "float32" if layer["bits"] is None else f"int{layer['bits']} {layer['scheme'][:4]}/{layer['granularity']}"
        print(f"  {layer['name']:24s} {'x'.join(map(str, layer['shape'])):14s} {bits:22s} {layer['format']:16s} "
              f"{layer['bytes']:,} B")
    if plan_out:
        print(f"wrote its plan to {plan_out}")
    return 0
