"""What every CLI command shares: the error convention, the model/data/plan/activation flags,
loading what they name, and small parsing and JSON helpers.

Errors: raise `UsageError` (or ValueError/OSError from the library) for bad input; `main`
prints it as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

from lightviz.cli.methodflags import method_flags, method_from_args
from lightviz.core.specs import (
    FORMAT_BITS,
    GRANULARITIES,
    MAX_PLAN_CHARS,
    NUMBER_FORMATS,
    PRUNE_METHODS,
    RANGE_METHODS,
    SCHEMES,
    ActivationSpec,
    Plan,
    PruneSpec,
    QuantSpec,
)


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as UsageError (one line) instead of printed with usage."""

    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise UsageError(message)


# --- plans and loading -------------------------------------------------------------------


def plan_from_args(args: argparse.Namespace, with_default_flags: bool = True) -> Plan:
    """The Plan the flags describe: --plan as a base, explicit flags override its default."""
    plan = read_plan(args.plan, "plan") if getattr(args, "plan", None) else Plan()
    quant, prune = plan.default.quant, plan.default.prune
    changes = {}
    if with_default_flags and args.bits is not None:
        changes["bits"] = parse_bits(args.bits)
    for flag in ("scheme", "granularity", "group_size", "range_method", "percentile"):
        value = getattr(args, flag, None)
        if value is not None and (with_default_flags or flag not in ("scheme", "granularity")):
            changes[flag] = value
    number_format = getattr(args, "number_format", None) or quant.format
    bits = changes.get("bits")
    if bits is not None and number_format != "int" and bits != FORMAT_BITS[number_format]:
        raise UsageError(f"format {number_format} stores {FORMAT_BITS[number_format]} bits per weight; "
                         f"drop --bits {bits} or add --format int")
    changes["format"] = number_format
    quant = replace(quant, **changes)
    prune_changes = {}
    if with_default_flags and args.sparsity is not None:
        prune_changes["sparsity"] = parse_float(args.sparsity, "sparsity")
    if args.prune_method is not None:
        prune_changes["method"] = args.prune_method
    prune = replace(prune, **prune_changes)
    plan = replace(plan, default=replace(plan.default, quant=quant, prune=prune,
                                         method=method_from_args(args, plan.default.method)))
    if args.no_fold_bn:
        plan = replace(plan, fold_bn=False)
    if getattr(args, "global_prune", False):
        plan = replace(plan, global_prune=True)
    return _apply_lm_flags(plan, args, with_default_flags)


def _apply_lm_flags(plan: Plan, args: argparse.Namespace, with_default_flags: bool) -> Plan:
    """--preset (a weight-only preset replaces bits, scheme, granularity, group size and scale type)
    and --scale-dtype."""
    from lightviz.core.task import preset_spec

    quant = plan.default.quant
    preset = getattr(args, "preset", None)
    if preset:
        if with_default_flags and getattr(args, "bits", None) is not None:
            raise UsageError("--preset sets the bits; leave out --bits (or the preset)")
        chosen = preset_spec(preset)
        quant = replace(quant, bits=chosen.bits if with_default_flags else quant.bits, scheme=chosen.scheme,
                        granularity=chosen.granularity, group_size=chosen.group_size, scale_dtype=chosen.scale_dtype)
    if getattr(args, "scale_dtype", None):
        quant = replace(quant, scale_dtype=args.scale_dtype)
    return replace(plan, default=replace(plan.default, quant=quant))


def for_model(plan: Plan, args: argparse.Namespace, bundle, engine) -> Plan:
    """The plan as the model takes it: a language model keeps its embeddings and LM head float
    unless --compress-embeddings (or the plan itself overrides them)."""
    if getattr(bundle, "task", "classification") != "causal_lm":
        return plan
    if plan.uses_methods or plan.uses_formats:
        raise UsageError("PTQ methods and number formats cover image classifiers; a language model takes "
                         "--preset, --bits/--group-size and --scale-dtype")
    if getattr(args, "compress_embeddings", False):
        return plan
    from lightviz.core.task import float_role_layers, with_float_embeddings

    if any(name in dict(plan.overrides) for name in float_role_layers(engine.layers)):
        return plan  # the plan says what these layers get
    return with_float_embeddings(plan, engine.layers)


def read_plan(text: str, flag: str) -> Plan:
    """A plan flag's value: a plan JSON file, or the JSON itself (a value starting with '{');
    UsageError naming the flag for anything else (a file's size is checked before it is read)."""
    if text.lstrip().startswith("{"):
        try:
            return Plan.from_json(text)
        except ValueError as error:
            raise UsageError(f"--{flag}: {one_line(error)}") from None
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"--{flag}: no such file {path} (give a plan JSON file, or the JSON itself)")
    if path.stat().st_size > MAX_PLAN_CHARS:
        raise UsageError(f"--{flag}: {path} is {path.stat().st_size:,} bytes, over the limit of {MAX_PLAN_CHARS:,} "
                         "for a plan; it is not a lightviz plan")
    try:
        return Plan.from_json(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"--{flag}: {path} is not UTF-8 text; expected a plan JSON file") from None
    except ValueError as error:
        raise UsageError(f"--{flag} {path}: {one_line(error)}") from None


def check_cost(engine, plans) -> None:
    """UsageError when a plan would take too long to compute: the app's own guard
    (entropy calibration over too many quantization blocks), with what to do instead."""
    from lightviz.analysis.explore import interactive_cost_error

    for plan in plans:
        reason = interactive_cost_error(engine, plan)
        if reason:
            raise UsageError(reason)


def terminal_progress():
    """A progress callback drawing one updating line on stderr, or None when stderr is no terminal."""
    if not sys.stderr.isatty():
        return None

    def report(fraction: float, text: str) -> None:
        end = "\n" if fraction >= 1.0 else ""
        print(f"\r\033[K{fraction:4.0%} {text}", end=end, file=sys.stderr, flush=True)
    return report


def load(args: argparse.Namespace):
    """(bundle, data) the flags name: a model by name or file, data from --data or the default."""
    from lightviz.core.device import resolve_device
    from lightviz.io import datasets, userdata

    resolve_device(device_choice(args))  # `cuda` without CUDA: one line, before anything loads
    bundle = _load_bundle(args)
    max_samples = positive(args.max_samples, "max-samples")
    if getattr(bundle, "task", "classification") == "causal_lm":
        return bundle, _text_data(args, bundle, max_samples)
    if getattr(args, "seq_len", None) or getattr(args, "calib_data", None):
        raise UsageError("--seq-len and --calib-data apply to language models (text data)")
    if args.data:
        data = userdata.load_user_data(
            args.data, None, bundle, image_size=ints(args.image_size, "image-size"),
            mean=floats(args.mean, "mean"), std=floats(args.std, "std"), max_samples=max_samples)
    else:
        if args.image_size or args.mean or args.std:
            raise UsageError("--image-size, --mean and --std apply to an image folder given with --data")
        data = datasets.eval_data_for(bundle, max_samples)
        userdata.check_data(bundle, data)
    return bundle, data


def _text_data(args: argparse.Namespace, bundle, max_samples: int | None):
    """A language model's evaluation text: --data (.txt / .jsonl) or the shipped held-out text."""
    from lightviz.core.evaldata import subset
    from lightviz.io import text

    if args.image_size or args.mean or args.std:
        raise UsageError("--image-size, --mean and --std apply to images; a language model reads text")
    seq_len = positive(getattr(args, "seq_len", None), "seq-len") or min(text.DEFAULT_SEQ_LEN, bundle.input_shape[0])
    if args.data:
        data = text.user_text_data(bundle, args.data, seq_len=seq_len, calibration=getattr(args, "calib_data", None))
        return subset(data, max_samples)
    if getattr(args, "calib_data", None):
        raise UsageError("--calib-data goes with --data (your evaluation text); the shipped text has its own")
    return subset(text.sample_text_data(bundle, seq_len), max_samples or text.DEFAULT_SEQUENCES)


def _load_bundle(args: argparse.Namespace):
    from lightviz.io import hf, loading, zoo

    model = args.model
    if not model.strip():
        raise UsageError("--model needs a sample name, a torchvision architecture or a model file; got an empty "
                         "string (see `python -m lightviz models`)")
    if _is_path(model) and hf.is_hf_folder(model):
        if args.arch or args.trust_code or args.input_shape or args.pretrained:
            raise UsageError("--arch, --trust-code, --input-shape and --pretrained do not apply to a Hugging Face "
                             "model folder (its config.json says the architecture; its code is never run)")
        return hf.load_hf_folder(model)
    input_shape = ints(args.input_shape, "input-shape")
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
    from lightviz.io.catalog import (
        LANGUAGE_MODELS,
        SAMPLE_DESCRIPTIONS,
        TORCHVISION_CLASSIFIERS,
    )
    from lightviz.io.loading import MODEL_SUFFIXES

    if "/" in model or os.sep in model:
        return True
    if model in SAMPLE_DESCRIPTIONS or model in TORCHVISION_CLASSIFIERS or model in LANGUAGE_MODELS:
        return False
    return Path(model).exists() or Path(model).suffix.lower() in MODEL_SUFFIXES


# --- parsing -----------------------------------------------------------------------------


def model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a sample name (see `models`), a torchvision architecture, a model file "
                             "(.safetensors, .pt, .pth state_dict; with --arch), or a Hugging Face causal LM folder "
                             "(config.json + weights; its code is never run)")
    parser.add_argument("--arch", help="architecture of a state_dict file: a sample name or torchvision architecture")
    parser.add_argument("--pretrained", action="store_true",
                        help="torchvision pretrained weights for --model NAME, from the local torch cache only")
    parser.add_argument("--trust-code", action="store_true",
                        help="allow TorchScript and .pt2 archives (they run code when loaded) and pickled whole "
                             "modules (still read weights-only: torch.nn, torchvision and lightviz classes only); "
                             "only for files you trust")
    parser.add_argument("--input-shape", help="shape of one input without batch, e.g. 3,32,32 "
                                              "(default: the architecture's)")
    parser.add_argument("--data", help="evaluation data: an .npz with x (and y), or a folder or .zip of class folders; "
                                       "for a language model a UTF-8 .txt or .jsonl (\"text\" per line)")
    parser.add_argument("--seq-len", type=int, help="language models: tokens per evaluation sequence (default 256)")
    parser.add_argument("--calib-data", help="language models: a separate .txt / .jsonl for calibration "
                                             "(default: the last sequences of --data)")
    parser.add_argument("--image-size", help="resize images to this: N or H,W (default: the model's input size)")
    parser.add_argument("--mean", help="per-channel mean to subtract from images in [0, 1], e.g. 0.485,0.456,0.406")
    parser.add_argument("--std", help="per-channel std to divide images by, e.g. 0.229,0.224,0.225")
    parser.add_argument("--max-samples", type=int,
                        help="evaluate on a seeded random subset of this many samples "
                             "(models without a dataset: this many generated inputs; default 32; "
                             "language models: sequences, default 8)")
    parser.add_argument("--device", default=None,
                        help="where to compute: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda "
                             "(refused without CUDA), cuda:N; default $LIGHTVIZ_DEVICE or auto")


def plan_flags(parser: argparse.ArgumentParser, sweepable: bool, number_format: bool = True) -> None:
    """The plan's flags; `number_format`: with --format (export has its own, the file format)."""
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
    parser.add_argument("--plan", help="a plan JSON file, or the JSON itself (flags override its default)")
    if number_format:
        parser.add_argument("--format", dest="number_format", choices=NUMBER_FORMATS,
                            help="number format: int (default), fp8_e4m3, fp8_e5m2, mxfp8, mxfp6, mxfp4, mxint8, "
                                 "nvfp4, nf4 (non-int formats set the bits themselves)")
    method_flags(parser)
    lm_flags(parser)


def lm_flags(parser: argparse.ArgumentParser) -> None:
    """--preset, --scale-dtype, --compress-embeddings."""
    from lightviz.core.specs import SCALE_DTYPES

    parser.add_argument("--preset", help="weight-only preset: w8, w4g128, w4g64, w4g32, w3g128, w2g64 "
                                         "(asymmetric groups, float16 scales)")
    parser.add_argument("--scale-dtype", choices=SCALE_DTYPES, help="how scales are stored (default float32)")
    parser.add_argument("--compress-embeddings", action="store_true",
                        help="language models: compress the embeddings and LM head too (default: kept float)")


def parse_bits(text: str | int | None) -> int | None:
    if text is None or str(text).lower() in ("float", "none", "fp32", "32"):
        return None
    try:
        bits = int(text)
    except ValueError:
        raise UsageError(f"--bits must be an integer from 1 to 16 or 'float'; got {text!r}") from None
    QuantSpec(bits=bits)  # validates the range with the library's own message
    return bits


def parse_float(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--{name} must be a number; got {text!r}") from None
    if name == "sparsity":
        PruneSpec(sparsity=value)
    return value


def positive(value: int | None, name: str) -> int | None:
    if value is not None and value < 1:
        raise UsageError(f"--{name} must be a positive integer; got {value}")
    return value


def ints(text: str | None, name: str) -> int | tuple[int, ...] | None:
    """'32' -> 32, '3,32,32' -> (3, 32, 32)."""
    if text is None:
        return None
    try:
        values = tuple(int(item) for item in split(text, name))
    except ValueError:
        raise UsageError(f"--{name} must be positive integers separated by commas; got {text!r}") from None
    if any(v < 1 for v in values):
        raise UsageError(f"--{name} must be positive integers separated by commas; got {text!r}")
    return values[0] if len(values) == 1 else values


def floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    return tuple(parse_float(item, name) for item in split(text, name))


def split(text: str, name: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise UsageError(f"--{name} needs at least one value")
    for item in items:
        if allowed and item not in allowed:
            raise UsageError(f"--{name} values must be among {', '.join(allowed)}; got {item!r}")
    return items


def one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def add_activation_flags(parser: argparse.ArgumentParser) -> None:
    """--act-bits, --act-scheme, --act-range-method, --act-percentile, --calib-batches, --calib-batch-size."""
    parser.add_argument("--act-bits", help="quantize every layer's input to 1..16 bits, per tensor, calibrated "
                                           "('float' keeps them float, the default)")
    parser.add_argument("--act-scheme", choices=SCHEMES, help="activation scheme (default asymmetric)")
    parser.add_argument("--act-per-token", action="store_true",
                        help="one activation scale per token, chosen as the model runs (no calibration)")
    parser.add_argument("--act-range-method", choices=RANGE_METHODS, help="activation clip range (default minmax)")
    parser.add_argument("--act-percentile", type=float, help="for --act-range-method percentile, e.g. 99.99")
    parser.add_argument("--calib-batches", type=int, help="calibration batches (default 4)")
    parser.add_argument("--calib-batch-size", type=int, help="inputs per calibration batch (default 32)")


def apply_activation_flags(plan: Plan, args: argparse.Namespace) -> Plan:
    """`plan` with the activation flags applied on top of its own activation spec (if any)."""
    flags = {"scheme": args.act_scheme, "range_method": args.act_range_method, "percentile": args.act_percentile,
             "calib_batches": args.calib_batches, "batch_size": args.calib_batch_size,
             "per_token": True if getattr(args, "act_per_token", False) else None}
    changes = {key: value for key, value in flags.items() if value is not None}
    if args.act_bits is not None and str(args.act_bits).lower() in ("float", "none", "fp32", "32"):
        return replace(plan, activations=None)
    if args.act_bits is not None:
        try:
            changes["bits"] = int(args.act_bits)
        except ValueError:
            raise UsageError(
                f"--act-bits must be an integer from 1 to 16 or 'float'; got {args.act_bits!r}") from None
    if not changes:
        return plan
    if plan.activations is None and "bits" not in changes:
        raise UsageError("--act-scheme, --act-range-method, --act-percentile, --act-per-token and --calib-batches "
                         "need --act-bits")
    return replace(plan, activations=replace(plan.activations or ActivationSpec(), **changes))


def out_path(text: str | None) -> Path | None:
    if not text:
        return None
    out = Path(text)
    if not out.parent.exists():
        raise UsageError(f"--out: folder {out.parent} does not exist")
    return out


def with_notes(report: dict) -> dict:
    """`report` made JSON-safe, with a "notes" list saying which numbers became null and why.

    Infinite SQNR means a layer is reproduced exactly; any other NaN or infinity is float32
    overflow (weights or outputs beyond its range, about 3.4e38).

    >>> with_notes({"kl": float("nan"), "layers": [{"name": "fc", "sqnr_db": float("inf")}]})["notes"]
    ['kl is null: it came out as nan (float32 overflow: weights or model outputs beyond its range, about 3.4e38)', 'sqnr_db is null where a layer is reproduced exactly (infinite SQNR): fc']
    """
    overflow, exact, notes = {}, [], list(report.get("notes", []))

    def visit(value, key, owner):
        if isinstance(value, dict):
            return {k: visit(v, k, value) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [visit(item, key, owner) for item in value]
        safe = json_safe(value)
        if safe is None and value is not None:
            if key == "sqnr_db" and safe is None and float(value) == math.inf:
                exact.append(str(owner.get("name", "?")))
            else:
                overflow.setdefault(key, []).append(f"{float(value)}")
        return safe

    safe = visit(report, None, report)
    for key, values in overflow.items():
        kinds = ", ".join(sorted(set(values)))
        where = f" in {len(values)} entries" if len(values) > 1 else ""
        notes.append(f"{key} is null{where}: it came out as {kinds} (float32 overflow: weights or model outputs "
                     "beyond its range, about 3.4e38)")
    if exact:
        notes.append(f"sqnr_db is null where a layer is reproduced exactly (infinite SQNR): {', '.join(exact)}")
    if notes:
        safe["notes"] = notes
    return safe


def json_safe(value):
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


# --- device, Ray, safe output ------------------------------------------------------------------


def device_choice(args: argparse.Namespace) -> str:
    """--device as given, else $LIGHTVIZ_DEVICE, else auto."""
    from lightviz.core.device import default_choice

    return getattr(args, "device", None) or default_choice()
