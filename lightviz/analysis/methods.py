"""Methods side by side: the same model, the same bits, each PTQ method; what each buys.

For every setting (integer bit-widths with the base plan's scheme and granularity, or number
formats) and every method, the base plan gets that setting and method on every layer and is
evaluated: accuracy (or agreement without labels), KL, size, the time the method took, and per
layer the weight SQNR and the *output* SQNR, 10 log10(sum y^2 / sum (y - y_hat)^2) of the layer
alone on the calibration inputs it sees in the float model: GPTQ and AdaRound trade weight
error for output error, so the second is the one they improve. Round-to-nearest is always
included as the baseline; the float model's numbers come with every row.

Columns of `rows` (METHOD_COLUMNS): method, setting, bits, format, accuracy, float_accuracy,
agreement, kl, size_bytes, float_size_bytes, compression_ratio, seconds, n_samples.
Columns of `layers` (LAYER_METHOD_COLUMNS): method, setting, layer, weight_sqnr_db,
output_sqnr_db, method_note.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import pandas as pd
import torch
from torch import nn

from lightviz.core import metrics
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.methods.compute import layer_output
from lightviz.core.methods.spec import MethodSpec
from lightviz.core.specs import LayerConfig, Plan, PruneSpec

METHOD_COLUMNS = ["method", "setting", "bits", "format", "accuracy", "float_accuracy", "agreement", "kl",
                  "size_bytes", "float_size_bytes", "compression_ratio", "seconds", "n_samples"]
LAYER_METHOD_COLUMNS = ["method", "setting", "layer", "weight_sqnr_db", "output_sqnr_db", "method_note"]
OUTPUT_SAMPLES = 64  # calibration inputs the per-layer output error is measured on


@dataclass(frozen=True, eq=False)
class MethodsComparison:
    """One row per (method, setting), one per (method, setting, layer), and the float baseline."""

    rows: pd.DataFrame
    layers: pd.DataFrame
    float_accuracy: float | None
    float_size_bytes: int

    def to_dict(self) -> dict:
        return {"float_accuracy": self.float_accuracy, "float_size_bytes": self.float_size_bytes,
                "rows": self.rows.to_dict("records"), "layers": self.layers.to_dict("records")}


def method_plan(base: Plan, method: MethodSpec, bits: int | None = None, number_format: str | None = None) -> Plan:
    """`base` with every layer at `bits` (integer) or `number_format`, rounded by `method`; no
    per-layer overrides, no pruning.

    >>> method_plan(Plan(), MethodSpec("gptq"), bits=3).default.quant.label
    'int3 symm/channel'
    """
    quant = base.default.quant
    if number_format is not None and number_format != "int":
        quant = replace(replace(quant, format="int", bits=quant.bits or 8), format=number_format)
    else:
        quant = replace(quant, bits=bits, format="int")
    default = LayerConfig(quant=quant, prune=PruneSpec(), method=method)
    return replace(base, default=default, overrides=(), global_prune=False)


def compare_methods(engine: Engine, data: EvalData, methods: Iterable[str | MethodSpec], bits: Iterable[int] = (),
                    formats: Iterable[str] = (), base: Plan | None = None, method_settings: MethodSpec | None = None,
                    progress: Callable[[float, str], None] | None = None) -> MethodsComparison:
    """Evaluate each method at each setting (see the module doc).

    Args:
        methods: names ("gptq", "equalize+bias_correction") or MethodSpecs; nearest is added first.
        bits, formats: the settings (at least one).
        base: scheme, granularity, range method, folding, activations (default Plan()).
        method_settings: calib_samples, damp, act_order, alpha, iterations, seed for named methods.
        progress: (fraction done, what runs now).

    Raises:
        ValueError: no setting, an unknown method, or bad bits / format.
    """
    base = base or Plan()
    template = method_settings or MethodSpec()
    specs = [MethodSpec()] + [m if isinstance(m, MethodSpec) else replace(template, name=m) for m in methods]
    specs = list({spec.name: spec for spec in specs}.values())
    chosen = [(f"W{b}", b, None) for b in dict.fromkeys(bits)] + [(f, None, f) for f in dict.fromkeys(formats)]
    if not chosen:
        raise ValueError("compare_methods needs at least one setting: bits (e.g. 4, 3) or formats (e.g. mxfp4)")
    plans = [(spec, label, method_plan(base, spec, b, f)) for label, b, f in chosen for spec in specs]
    float_accuracy = metrics.accuracy(engine.logits(None, data), data.y) if data.labeled else None
    rows, layer_rows = [], []
    for index, (spec, label, plan) in enumerate(plans):
        def report(fraction: float, text: str, index=index, spec=spec, label=label) -> None:
            if progress is not None:
                progress((index + fraction) / len(plans), f"{spec.name} at {label}: {text}")
        started = time.perf_counter()
        results = engine.compress_layers(plan, calibration=data,
                                         progress=lambda done, n: report(0.8 * done / n, f"layer {done} of {n}"))
        seconds = time.perf_counter() - started
        evaluation = engine.evaluate(plan, data, lambda f, text: report(0.8 + 0.2 * f, text))
        quant = plan.default.quant
        rows.append({"method": spec.name, "setting": label, "bits": quant.bits, "format": quant.format,
                     **{k: v for k, v in evaluation.to_dict().items() if k in METHOD_COLUMNS}, "seconds": seconds})
        output_sqnr = layer_output_sqnr(engine, plan, results, data)
        for name, r in results.items():
            layer_rows.append({"method": spec.name, "setting": label, "layer": name,
                               "weight_sqnr_db": metrics.sqnr_db(r.weight, r.weight_hat),
                               "output_sqnr_db": output_sqnr.get(name, math.nan),
                               "method_note": r.extras.note if r.extras is not None else ""})
    return MethodsComparison(pd.DataFrame(rows, columns=METHOD_COLUMNS),
                             pd.DataFrame(layer_rows, columns=LAYER_METHOD_COLUMNS),
                             float_accuracy, engine.float_size_bytes)


def layer_output_sqnr(engine: Engine, plan: Plan, results: dict, data: EvalData,
                      samples: int = OUTPUT_SAMPLES) -> dict[str, float]:
    """Each layer's output SQNR (dB) alone: its compressed weights and bias against its float ones,
    on the inputs it receives in the (transformed) float model, the first `samples` calibration inputs."""
    model = engine.calibration_model(plan, data.calibration_inputs)
    modules, sums, handles = dict(model.named_modules()), {}, []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, y: torch.Tensor) -> None:
            r = results[name]
            if not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
                return
            bias = r.extras.bias if r.extras is not None else module.bias
            y_hat = layer_output(module, args[0], r.weight_hat.to(args[0].dtype), bias)
            signal, noise = float(y.double().pow(2).sum()), float((y.double() - y_hat.double()).pow(2).sum())
            sums[name] = (signal, noise)
        return record

    for name in results:
        if not isinstance(modules[name], nn.Embedding):
            handles.append(modules[name].register_forward_hook(hook(name)))
    with torch.no_grad():
        model(data.calibration_inputs[:samples])
    return {name: (math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf)
            for name, (signal, noise) in sums.items()}
