"""The per-layer table a user edits, and turning its edits into per-layer Plan overrides.

The table shows each layer's configured settings (what the Plan says, not the effective
float-ness: keep_float is its own column; n:m sparsity as achieved, 1 - n/m). An edit of a
cell overrides that one field of that layer (the Plan pins it); every other field keeps
following the global default. An edit back to the default's value unpins the field, and a
layer with no pinned field left has no override.

>>> plan = Plan()
>>> apply_layer_edits(plan, ["fc1", "fc2"], {0: {"bits": 4}}).overrides[0][0]
'fc1'
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

import pandas as pd

from lightviz.core.engine import Engine
from lightviz.core.overrides import config_fields
from lightviz.core.specs import LayerConfig, Plan, PruneSpec, QuantSpec

FLOAT_BITS_LABEL = "float"
BITS_CHOICES = [str(b) for b in range(1, 17)] + [FLOAT_BITS_LABEL]
EDITABLE = ["bits", "scheme", "granularity", "sparsity", "keep_float", "number_format", "method"]
EDITOR_COLUMNS = ["layer", "type", "shape", "params", *EDITABLE, "method_note", "override", "pinned", "storage"]
COLUMN_FIELDS = {"bits": "quant.bits", "scheme": "quant.scheme", "granularity": "quant.granularity",
                 "sparsity": "prune.sparsity", "keep_float": "keep_float", "number_format": "quant.format",
                 "method": "method"}  # table column -> Plan field
COLUMN_NAMES = {path: {"keep_float": "float", "number_format": "format"}.get(column, column)
                for column, path in COLUMN_FIELDS.items()}


def bits_label(bits: int | None) -> str:
    """'8' for 8 bits, 'float' for None."""
    return FLOAT_BITS_LABEL if bits is None else str(bits)


def parse_bits(value: Any) -> int | None:
    """The bits a cell holds: 'float'/None/'' -> None, '4' or 4 -> 4. Raises ValueError."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", FLOAT_BITS_LABEL)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"bits must be an integer from 1 to 16 or 'float'; got {value!r}") from None
    if not number.is_integer():
        raise ValueError(f"bits must be an integer from 1 to 16 or 'float'; got {value!r}")
    return int(number)


def layer_editor_frame(engine: Engine, plan: Plan, table: pd.DataFrame) -> pd.DataFrame:
    """One row per layer, in engine order (columns EDITOR_COLUMNS).

    `table` is `engine.layer_table(plan)`, used for the storage format each layer ends up in and
    for what its method did (or why it does not apply).
    """
    formats = dict(zip(table["name"], table["format"]))
    notes = dict(zip(table["name"], table["method_note"])) if "method_note" in table else {}
    overridden = dict(plan.overrides)
    rows = []
    for layer in engine.layers:
        config = plan.config_for(layer.name)
        rows.append({
            "layer": layer.name, "shape": "×".join(map(str, layer.shape)),
            "type": layer.role + (f" (tied: {', '.join(layer.tied)})" if layer.tied else ""),
            "params": layer.n_weights, "bits": bits_label(config.quant.bits), "scheme": config.quant.scheme,
            "granularity": config.quant.granularity, "sparsity": shown_sparsity(config.prune),
            "keep_float": config.keep_float, "number_format": config.quant.format, "method": config.method.name,
            "override": layer.name in overridden,
            "pinned": ", ".join(COLUMN_NAMES.get(path, path.split(".")[-1]) for path in plan.pins_for(layer.name)),
            "storage": formats.get(layer.name, ""), "method_note": notes.get(layer.name, ""),
        })
    return pd.DataFrame(rows, columns=EDITOR_COLUMNS)


def shown_sparsity(prune: PruneSpec) -> float:
    """The sparsity a layer gets: n:m keeps n of every m, so 0.65 at m = 4 is 1:4, 0.75.

    >>> shown_sparsity(PruneSpec(sparsity=0.65, method="n:m")), shown_sparsity(PruneSpec(sparsity=0.65))
    (0.75, 0.65)
    """
    if prune.method == "n:m":
        return 1 - prune.n / prune.m
    return prune.sparsity


def apply_layer_edits(plan: Plan, names: Sequence[str], edited_rows: Mapping[Any, Mapping[str, Any]]) -> Plan:
    """A new Plan with each edited row's changes as an override of that row's layer.

    Args:
        plan: the current plan (the table was built from it).
        names: layer name of each row, in table order.
        edited_rows: {row position: {column: new value}}, as st.data_editor reports edits
            (positions may arrive as strings).

    Raises:
        ValueError: a row outside the table, a read-only column, or a value the specs refuse
            (the message names the layer).
    """
    for row, changes in edited_rows.items():
        try:
            position = int(row)
        except (TypeError, ValueError):
            raise ValueError(f"edited row must be a row number; got {row!r}") from None
        if not 0 <= position < len(names):
            raise ValueError(f"edited row {position} is outside the table of {len(names)} layers")
        name = names[position]
        try:
            config = edit_config(plan.config_for(name), changes)
        except ValueError as error:
            raise ValueError(f"layer {name}: {error}") from None
        edited = {COLUMN_FIELDS[column] for column in changes}
        now, default = config_fields(config), config_fields(plan.default)
        pins = (set(plan.pins_for(name)) | edited) - {path for path in edited if now[path] == default[path]}
        plan = plan.with_override(name, config, pinned=tuple(pins))
    return plan


def edit_config(config: LayerConfig, changes: Mapping[str, Any]) -> LayerConfig:
    """`config` with the table's editable columns in `changes` applied. Raises ValueError."""
    quant, prune, keep_float, method = config.quant, config.prune, config.keep_float, config.method
    for column, value in changes.items():
        if column == "bits":
            bits = parse_bits(value)
            if quant.format != "int" and bits is not None and bits != quant.bits:
                raise ValueError(f"format {quant.format} stores {quant.bits} bits per weight; set the format to int "
                                 "to choose the bits")
            quant = replace(quant, bits=bits)
        elif column in ("scheme", "granularity"):
            quant = replace(quant, **{column: value})
        elif column == "sparsity":
            prune = replace(prune, sparsity=0.0 if value is None else value)
        elif column == "keep_float":
            keep_float = bool(value)
        elif column == "number_format":
            quant = QuantSpec(**{**{f: getattr(quant, f) for f in ("scheme", "granularity", "group_size",
                                                                     "range_method", "percentile", "scale_dtype")},
                                 "bits": quant.bits, "format": value})
        elif column == "method":
            method = replace(method, name=value)
        else:
            raise ValueError(f"column {column!r} is read-only; editable columns: {', '.join(EDITABLE)}")
    return LayerConfig(quant=quant, prune=prune, keep_float=keep_float, method=method)
