"""Per-field overrides: a layer config seen as fields by path, and the fields one changes.

A Plan's override of a layer pins some fields ("quant.bits", "prune.sparsity", "keep_float",
"method");
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


NESTED = ("quant", "prune")  # specs whose fields are pinned one by one; any other field is one value


def config_fields(config) -> dict[str, Any]:
    """Every field of a layer config by path: 'quant.<field>', 'prune.<field>', then its other
    fields whole ('keep_float', 'method').

    >>> from lightviz.core.specs import LayerConfig, QuantSpec
    >>> config_fields(LayerConfig())["quant.bits"], config_fields(LayerConfig())["keep_float"]
    (8, False)
    """
    values = {f"{part}.{f.name}": getattr(getattr(config, part), f.name)
              for part in NESTED for f in fields(getattr(config, part))}
    values |= {f.name: getattr(config, f.name) for f in fields(config) if f.name not in NESTED}
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
    nested = {part: replace(getattr(config, part), **{path[len(part) + 1:]: value for path, value in values.items()
                                                      if path.startswith(f"{part}.")}) for part in NESTED}
    whole = {path: value for path, value in values.items() if "." not in path}
    return replace(config, **nested, **whole)


def merged(base: Mapping, given: Mapping) -> dict:
    """`given` on top of `base`, nested dicts merged key by key (a partial override)."""
    out = dict(base)
    for key, value in given.items():
        out[key] = merged(base[key], value) if isinstance(value, Mapping) and isinstance(
            base.get(key), Mapping) else value
    return out
