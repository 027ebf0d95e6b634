"""Per-field overrides: a layer config seen as fields by path, and the fields one changes.

A Plan's override of a layer pins some fields ("quant.bits", "prune.sparsity", "keep_float");
the others follow the plan's default (`Plan.with_default`). These helpers work on any
LayerConfig-shaped object (`quant`, `prune`, `keep_float`), so a new spec field is covered
without a change here.

>>> from lightviz.core.specs import LayerConfig, QuantSpec
>>> changed_fields(LayerConfig(), with_fields(LayerConfig(), {"quant.bits": 4, "keep_float": True}))
('quant.bits', 'keep_float')
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Mapping


def config_fields(config) -> dict[str, Any]:
    """Every field of a layer config by path: 'quant.<field>', 'prune.<field>', 'keep_float'.

    >>> from lightviz.core.specs import LayerConfig, QuantSpec
    >>> config_fields(LayerConfig())["quant.bits"], config_fields(LayerConfig())["keep_float"]
    (8, False)
    """
    values = {f"quant.{f.name}": getattr(config.quant, f.name) for f in fields(config.quant)}
    values |= {f"prune.{f.name}": getattr(config.prune, f.name) for f in fields(config.prune)}
    values["keep_float"] = config.keep_float
    return values


def changed_fields(default, config) -> tuple[str, ...]:
    """Paths where `config` differs from `default`.

    >>> from lightviz.core.specs import LayerConfig, QuantSpec
    >>> changed_fields(LayerConfig(), LayerConfig(quant=QuantSpec(bits=4)))
    ('quant.bits',)
    """
    before, after = config_fields(default), config_fields(config)
    return tuple(path for path in after if after[path] != before.get(path))


def with_fields(config, values: Mapping[str, Any]):
    """`config` with the fields at `values`' paths replaced (validated by the specs)."""
    quant = {path[6:]: value for path, value in values.items() if path.startswith("quant.")}
    prune = {path[6:]: value for path, value in values.items() if path.startswith("prune.")}
    return type(config)(quant=replace(config.quant, **quant), prune=replace(config.prune, **prune),
                        keep_float=values.get("keep_float", config.keep_float))


def merged(base: Mapping, given: Mapping) -> dict:
    """`given` on top of `base`, nested dicts merged key by key (a partial override)."""
    out = dict(base)
    for key, value in given.items():
        out[key] = merged(base[key], value) if isinstance(value, Mapping) and isinstance(
            base.get(key), Mapping) else value
    return out
