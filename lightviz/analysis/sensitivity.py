"""Per-layer sensitivity: compress one layer at a time and measure what the model loses.

For each layer and each setting (a bit-width with the base plan's scheme, granularity and
range method; or a sparsity with float weights), the plan keeps every other layer float and
overrides that one layer (`single_layer_plan`). Each row holds the accuracy, its drop against
the float model, the binomial standard error of the accuracy, agreement and KL against the
float model, and the layer's and the model's size.

Speed: the float model's activations before a layer never change while that layer changes.
`split.PrefixCache` runs the float model once, keeps the values live at every layer, and each
setting then runs only the network's tail from its layer onward. Logits are bit-identical to
`Engine.evaluate` of the same single-layer plan (checked on the first setting; on a mismatch,
or a model torch.fx cannot trace, every setting runs the full forward instead).

Activation quantization is not part of these plans: sensitivity is about weights.

Language models (data with task "causal_lm") get perplexity, float_perplexity and
perplexity_increase (relative: 0.05 = 5% higher) in place of the four accuracy columns;
agreement and KL are per predicted token. `units` groups layers: a unit (a transformer block's
Linear layers, `blocks(engine)`) is compressed as a whole, every other layer float.

Columns (SENSITIVITY_COLUMNS):

| column                | meaning                                                          |
|-----------------------|------------------------------------------------------------------|
| layer, type, params   | the layer, its module class, its weight count                    |
| setting, kind         | "4 bits" / "fp8_e4m3" / "50% sparse"; "bits", "format" or "sparsity" |
| bits, sparsity        | the layer's bits (None: float) and sparsity                      |
| accuracy, float_accuracy | top-1 with only this layer compressed, and of the float model (None without labels) |
| accuracy_drop         | float_accuracy - accuracy (positive = worse)                     |
| accuracy_se           | binomial standard error sqrt(p(1-p)/n) of accuracy               |
| agreement, kl         | top-1 agreement with the float model, mean KL(p_float || p) nats  |
| layer_size_bytes      | the layer's storage under the setting (layer_float_size_bytes: float32) |
| size_bytes            | the whole model's storage with only this layer compressed        |
| n_samples             | evaluation inputs                                                |
| format                | the number format of the setting ("int" for bits, None for sparsity) |
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Iterable

import pandas as pd
import torch

from lightviz.analysis.parallel import Backend, LocalBackend, slices
from lightviz.core import metrics
from lightviz.core.activations import float_plan
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData, subset
from lightviz.core.prefix import PrefixCache
from lightviz.core.specs import LayerConfig, Plan, PruneSpec
from lightviz.core.task import task_of

SENSITIVITY_COLUMNS = [
    "layer", "type", "params", "setting", "kind", "bits", "sparsity",
    "accuracy", "float_accuracy", "accuracy_drop", "accuracy_se", "agreement", "kl",
    "layer_size_bytes", "layer_float_size_bytes", "size_bytes", "n_samples", "format",
]
LM_SENSITIVITY_COLUMNS = [
    "layer", "type", "params", "setting", "kind", "bits", "sparsity",
    "perplexity", "float_perplexity", "perplexity_increase", "agreement", "kl",
    "layer_size_bytes", "layer_float_size_bytes", "size_bytes", "n_samples",
]
DEFAULT_BITS = (2, 3, 4, 8)


def blocks(engine: Engine, names: Iterable[str] | None = None) -> dict[str, list[str]]:
    """{block: its layers} for a transformer: layers grouped by the repeated block they sit in
    (the module path up to the first numeric part, e.g. "transformer.h.3"); layers outside
    every block (embeddings, LM head) are left out.

    >>> from collections import OrderedDict
    >>> from torch import nn
    >>> model = nn.Sequential(OrderedDict(wte=nn.Embedding(8, 4), h=nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])))
    >>> blocks(Engine(model))
    {'h.0': ['h.0'], 'h.1': ['h.1']}
    """
    units: dict[str, list[str]] = {}
    chosen = None if names is None else set(names)
    for layer in engine.layers:
        parts = layer.name.split(".")
        index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        if index is None or (chosen is not None and layer.name not in chosen):
            continue
        units.setdefault(".".join(parts[:index + 1]), []).append(layer.name)
    return units


def single_layer_plan(base: Plan, layer: str, config: LayerConfig) -> Plan:
    """Every layer float except `layer`, which gets `config`; folding as `base` says.

    >>> from lightviz.core.specs import QuantSpec
    >>> single_layer_plan(Plan(), "fc1", LayerConfig(quant=QuantSpec(bits=4))).config_for("fc2").keep_float
    True
    """
    return Plan(default=LayerConfig(keep_float=True), overrides={layer: config}, fold_bn=base.fold_bn)


def unit_plan(base: Plan, layers: list[str], config: LayerConfig) -> Plan:
    """Every layer float except `layers`, which all get `config`."""
    return Plan(default=LayerConfig(keep_float=True), overrides={name: config for name in layers},
                fold_bn=base.fold_bn)


def settings(base: Plan, bits: Iterable[int] = DEFAULT_BITS, sparsities: Iterable[float] = (),
             formats: Iterable[str] = ()) -> list[tuple[str, str, LayerConfig]]:
    """(label, kind, config) of each setting: integer bits with the base's quantization, number
    formats (fp8_e4m3, mxfp4, ...), then sparsities.

    Raises:
        ValueError: no setting, or a bits / sparsity / format value out of range (the specs' messages).
    """
    quant, prune = base.default.quant, base.default.prune
    out = []
    for b in dict.fromkeys(bits):
        out.append((f"{b} bits", "bits", LayerConfig(quant=replace(quant, bits=b, format="int"))))
    for f in dict.fromkeys(formats):
        integer = replace(quant, format="int", bits=quant.bits or 8)
        out.append((f, "format", LayerConfig(quant=replace(integer, format=f))))
    for s in dict.fromkeys(float(s) for s in sparsities):
        spec = PruneSpec(sparsity=s, method=prune.method, m=prune.m)
        out.append((f"{s:.0%} sparse", "sparsity", LayerConfig(quant=replace(quant, bits=None), prune=spec)))
    if not out:
        raise ValueError("sensitivity needs at least one setting: give bits (1 to 16), formats and/or sparsities "
                         "(0 to 1)")
    return out


def sensitivity(engine: Engine, data: EvalData, bits: Iterable[int] = DEFAULT_BITS,
                sparsities: Iterable[float] = (), base: Plan | None = None, max_samples: int | None = None,
                layers: Iterable[str] | None = None, reuse: bool = True,
                progress: Callable[[int, int], None] | None = None,
                backend: Backend | None = None,
                units: dict[str, list[str]] | None = None, formats: Iterable[str] = ()) -> pd.DataFrame:
    """One row per (layer, setting) with only that layer compressed (columns above).

    Args:
        engine: the float model's engine (its per-layer cache is reused).
        data: evaluation data; with `max_samples`, a seeded subset of it (data.subset).
        bits: bit-widths to try, with `base`'s scheme, granularity, group size, range method.
        sparsities: sparsities to try with float weights, with `base`'s pruning method.
        formats: number formats to try (fp8_e4m3, mxfp4, nvfp4, ...), with `base`'s granularity.
        base: where those settings and BatchNorm folding come from (default: Plan()).
        layers: the layers to analyse (default: all, in model order).
        reuse: run only each layer's tail from cached activations (False: full forwards).
        progress: called as progress(done, total) after each setting (each slice on Ray).
        backend: where it runs (parallel.py): default here; a RayBackend runs contiguous
            slices of layers as tasks, each reusing its own float activations. Same rows.
        units: {unit name: its layers} to compress together (e.g. `blocks(engine)`); the
            "layer" column then names units. Default: every layer its own unit. Units (and
            language models) run full forwards here, whatever the backend.

    Returns:
        A DataFrame (SENSITIVITY_COLUMNS, or LM_SENSITIVITY_COLUMNS for token data); `df.attrs`
        holds "reuse" (whether tails were reused), "note" (why not), "seconds", "data" (the
        data's description), "task" and "units" ({unit: layers}).

    >>> from lightviz.io.datasets import generated_inputs
    >>> engine = Engine(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)))
    >>> df = sensitivity(engine, generated_inputs((4,), n=8), bits=[2, 8])
    >>> df[["layer", "setting"]].values.tolist()
    [['1', '2 bits'], ['1', '8 bits']]
    """
    started = time.perf_counter()
    base = base or Plan()
    task = task_of(data)
    chosen = settings(base, bits, sparsities, formats)
    if units is not None:
        return _unit_sensitivity(engine, subset(data, max_samples), chosen, base, units, progress, started)
    names = _layer_names(engine, layers)
    data = subset(data, max_samples)
    if task.is_lm:  # full forwards: an LM's graph does not trace for reuse
        return _unit_sensitivity(engine, data, chosen, base, {name: [name] for name in names}, progress, started)
    total = len(names) * len(chosen)
    if backend is None or isinstance(backend, LocalBackend):
        parts = [layer_rows(engine, data, (names, chosen, base, reuse), progress=progress)]
    else:
        done = [0]

        def finished(index: int, part: tuple[list[dict], bool, str]) -> None:
            done[0] += len(part[0])
            if progress:
                progress(done[0], total)
        items = [(names_slice, chosen, base, reuse) for names_slice in slices(names, backend.workers)]
        parts = backend.map(layer_rows, engine, data, items, on_result=finished)
    rows = [row for part in parts for row in part[0]]
    notes = [part[2] for part in parts if part[2]]
    df = pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)
    df.attrs.update(reuse=all(part[1] for part in parts), note=notes[0] if notes else "",
                    seconds=time.perf_counter() - started, data=data.description)
    return df


def layer_rows(engine: Engine, data: EvalData, item: tuple, progress: Callable[[int, int], None] | None = None
               ) -> tuple[list[dict], bool, str]:
    """The sensitivity rows of some layers: a backend task (parallel.py).

    Args:
        item: (layer names, settings, base plan, reuse), as `sensitivity` cuts them.

    Returns:
        (rows, whether tails were reused, why not).
    """
    names, chosen, base, reuse = item
    reference = engine.logits(None, data)
    float_accuracy = metrics.accuracy(reference, data.y) if data.labeled else None
    runner, note = _runner(engine, data, names, base) if reuse else (None, "reuse turned off")
    float_sizes = {name: engine.compress_layer(float_plan(base.fold_bn), name).size.total_bytes for name in names}
    rows, total = [], len(names) * len(chosen)
    for name in names:
        info = engine.by_name[name]
        for label, kind, config in chosen:
            plan = single_layer_plan(base, name, config)
            result = engine.compress_layer(plan, name)
            if runner is not None:
                logits = runner.run_from(name, {"weight": result.weight_hat})
                if not rows and not torch.equal(logits, engine.logits(plan, data)):
                    runner, note = None, "the traced tail did not reproduce the full forward; ran full forwards"
                    logits = engine.logits(plan, data)
            else:
                logits = engine.logits(plan, data)
            accuracy = metrics.accuracy(logits, data.y) if data.labeled else None
            rows.append({
                "layer": name, "type": info.kind, "params": info.n_weights, "setting": label, "kind": kind,
                "bits": config.effective_quant.bits, "sparsity": result.prune.sparsity,
                "accuracy": accuracy, "float_accuracy": float_accuracy,
                "accuracy_drop": None if accuracy is None else float_accuracy - accuracy,
                "accuracy_se": None if accuracy is None else metrics.standard_error(accuracy, len(data)),
                "agreement": metrics.agreement(reference, logits), "kl": metrics.mean_kl(reference, logits),
                "layer_size_bytes": result.size.total_bytes, "layer_float_size_bytes": float_sizes[name],
                "size_bytes": engine.size_bytes(plan), "n_samples": len(data),
                "format": None if kind == "sparsity" else config.quant.format,
            })
            if progress:
                progress(len(rows), total)
    return rows, runner is not None, note


def _unit_sensitivity(engine: Engine, data: EvalData, chosen: list, base: Plan, units: dict[str, list[str]],
                      progress: Callable[[int, int], None] | None, started: float) -> pd.DataFrame:
    """Rows for units of layers compressed together, with full forwards (any task)."""
    task = task_of(data)
    if not units or any(not layers for layers in units.values()):
        raise ValueError("units must map each unit name to a non-empty list of layers")
    for layers in units.values():
        _layer_names(engine, layers)
    reference = engine.logits(None, data)
    float_score = task.score(reference, data.x, data.y)
    reference_plan = float_plan(base.fold_bn)
    rows, total = [], len(units) * len(chosen)
    for unit, layers in units.items():
        infos = [engine.by_name[name] for name in layers]
        float_size = sum(engine.compress_layer(reference_plan, name).size.total_bytes for name in layers)
        for label, kind, config in chosen:
            plan = unit_plan(base, layers, config)
            results = [engine.compress_layer(plan, name) for name in layers]
            logits = engine.logits(plan, data)
            score = task.score(logits, data.x, data.y)
            row = {"layer": unit, "type": infos[0].kind if len(infos) == 1 else f"block of {len(infos)}",
                   "params": sum(info.n_weights for info in infos), "setting": label, "kind": kind,
                   "bits": config.effective_quant.bits, "sparsity": results[0].prune.sparsity,
                   "agreement": task.agreement(reference, logits), "kl": task.kl(reference, logits),
                   "layer_size_bytes": sum(r.size.total_bytes for r in results), "layer_float_size_bytes": float_size,
                   "size_bytes": engine.size_bytes(plan), "n_samples": len(data)}
            if task.is_lm:
                row.update(perplexity=score, float_perplexity=float_score, perplexity_increase=task.drop(score, float_score))
            else:
                row.update(accuracy=score, float_accuracy=float_score,
                           accuracy_drop=None if score is None else float_score - score,
                           accuracy_se=None if score is None else metrics.standard_error(score, len(data)))
            rows.append(row)
            if progress:
                progress(len(rows), total)
    df = pd.DataFrame(rows, columns=LM_SENSITIVITY_COLUMNS if task.is_lm else SENSITIVITY_COLUMNS)
    note = "each setting ran a full forward" + (" (a unit's layers compressed together)" if
                                                 any(len(v) > 1 for v in units.values()) else "")
    df.attrs.update(reuse=False, note=note, seconds=time.perf_counter() - started,
                    data=data.description, task=task.name, units=dict(units))
    return df


def _layer_names(engine: Engine, layers: Iterable[str] | None) -> list[str]:
    if layers is None:
        return [layer.name for layer in engine.layers]
    names = list(dict.fromkeys(layers))
    unknown = [name for name in names if name not in engine.by_name]
    if unknown or not names:
        raise ValueError(f"layers must be among {list(engine.by_name)}; got {names!r}")
    return names


def _runner(engine: Engine, data: EvalData, names: list[str], base: Plan) -> tuple[PrefixCache | None, str]:
    """The tail runner on the float model (folded as the base plan says), or None and why."""
    try:
        return PrefixCache(engine.compress(float_plan(base.fold_bn)), data.x, names), ""
    except Exception as error:  # noqa: BLE001 - any tracing failure means "run full forwards"
        return None, f"torch.fx could not split the model ({type(error).__name__}: {error}); ran full forwards"


def pivot(df: pd.DataFrame, value: str = "accuracy_drop") -> pd.DataFrame:
    """Layers (rows, model order) x settings (columns, given order) of one column."""
    table = df.pivot(index="layer", columns="setting", values=value)
    return table.loc[list(dict.fromkeys(df["layer"])), list(dict.fromkeys(df["setting"]))]
