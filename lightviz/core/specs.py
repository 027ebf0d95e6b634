"""What the user chose: frozen, validated, hashable, JSON-able specs.

A `Plan` is the single source of truth for a compression configuration: a default
`LayerConfig` plus per-layer overrides. Because every spec is a frozen dataclass it is a
cache key for free, and `Plan.to_json()` is a recipe and a shareable link for free.

>>> plan = Plan(default=LayerConfig(quant=QuantSpec(bits=4)))
>>> plan.with_override("fc1", LayerConfig(keep_float=True)).config_for("fc1").keep_float
True
>>> Plan.from_json(plan.to_json()) == plan
True
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import ItemsView
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Mapping

from lightviz.core.choices import (  # noqa: F401 - the specs' vocabulary, importable from here too
    FORMAT_BITS,
    FORMAT_BLOCKS,
    FORMAT_HELP,
    GRANULARITIES,
    MAX_PLAN_CHARS,
    MAX_PLAN_DEPTH,
    NUMBER_FORMATS,
    PRUNE_METHOD_HELP,
    PRUNE_METHODS,
    RANGE_METHOD_HELP,
    RANGE_METHODS,
    SCALE_DTYPES,
    SCHEMES,
    check_choice,
    is_finite_number,
    is_int,
)
from lightviz.core.messages import first_line, json_depth, preview
from lightviz.core.methods.spec import MethodSpec
from lightviz.core.overrides import changed_fields, config_fields, merged, with_fields


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize one tensor. `bits=None` keeps it float.

    `format` picks the number format (NUMBER_FORMATS; lightviz/core/formats.py). A non-integer
    format sets `bits` to its storage bits (None still keeps the tensor float) and is
    sign-magnitude, so `scheme` becomes symmetric; MX and NVFP4 also fix `granularity` to
    groups of their block (32, 16) and `range_method` to minmax, as their specs define the scale.

    >>> QuantSpec(bits=4, scheme="asymmetric").levels
    16
    >>> QuantSpec(format="mxfp4").label
    'mxfp4 (blocks of 32)'
    """

    bits: int | None = 8
    scheme: str = "symmetric"
    granularity: str = "channel"
    group_size: int = 128
    range_method: str = "minmax"
    percentile: float = 99.99
    scale_dtype: str = "float32"  # storage of each block's scale: float32, float16, bfloat16 (size and values)
    format: str = "int"

    def __post_init__(self) -> None:
        if self.bits is not None and not (is_int(self.bits) and 1 <= self.bits <= 16):
            raise ValueError(f"bits must be an integer from 1 to 16 or None (float); got {self.bits!r}")
        check_choice("scheme", self.scheme, SCHEMES)
        check_choice("scale_dtype", self.scale_dtype, SCALE_DTYPES)
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("range_method", self.range_method, RANGE_METHODS)
        check_choice("format", self.format, NUMBER_FORMATS)
        if not (is_int(self.group_size) and self.group_size >= 1):
            raise ValueError(f"group_size must be a positive integer; got {self.group_size!r}")
        if not (isinstance(self.percentile, (int, float)) and 50.0 < self.percentile <= 100.0):
            raise ValueError(f"percentile must be a number in (50, 100]; got {self.percentile!r}")
        object.__setattr__(self, "percentile", float(self.percentile))
        if self.format != "int":
            self._fix_to_format()

    def _fix_to_format(self) -> None:
        """Set the fields a non-integer format decides (see the class docstring)."""
        fixed = {"scheme": "symmetric", "scale_dtype": "float32"}  # the format decides its scales
        if self.bits is not None:
            fixed["bits"] = FORMAT_BITS[self.format]
        if self.format in FORMAT_BLOCKS:
            fixed.update(granularity="group", group_size=FORMAT_BLOCKS[self.format], range_method="minmax")
        elif self.range_method == "entropy":
            raise ValueError(f"range_method 'entropy' calibrates integer grids; format {self.format!r} takes "
                             "minmax, percentile or mse")
        for name, value in fixed.items():
            object.__setattr__(self, name, value)

    @property
    def is_float(self) -> bool:
        return self.bits is None

    @property
    def levels(self) -> int:
        """Number of distinct integer codes (2 for symmetric 1-bit binarization)."""
        if self.bits is None:
            raise ValueError("a float spec has no quantization levels")
        if self.format != "int":
            raise ValueError(f"levels counts integer codes; format {self.format!r} has its own grid "
                             "(lightviz.core.formats.element_values)")
        if self.scheme == "symmetric" and self.bits > 1:
            return 2 ** self.bits - 1  # narrow range: -(2^(b-1)-1) .. 2^(b-1)-1
        return 2 ** self.bits

    @property
    def label(self) -> str:
        """Short human label, e.g. 'int4 sym/channel', 'fp8_e4m3/channel', 'mxfp4 (blocks of 32)'."""
        if self.bits is None:
            return "float32"
        gran = f"group{self.group_size}" if self.granularity == "group" else self.granularity
        if self.format in FORMAT_BLOCKS:
            return f"{self.format} (blocks of {self.group_size})"
        if self.format != "int":
            return f"{self.format}/{gran}"
        scales = {"float16": ", fp16 scales", "bfloat16": ", bf16 scales"}.get(self.scale_dtype, "")
        return f"int{self.bits} {self.scheme[:4]}/{gran}{scales}"


@dataclass(frozen=True)
class PruneSpec:
    """How to prune one weight. For `n:m`, `sparsity` sets n = m - round(sparsity * m).

    >>> PruneSpec(sparsity=0.5, method="n:m").n
    2
    """

    sparsity: float = 0.0
    method: str = "unstructured"
    m: int = 4

    def __post_init__(self) -> None:
        check_choice("method", self.method, PRUNE_METHODS)
        if not (isinstance(self.sparsity, (int, float)) and not isinstance(self.sparsity, bool)
                and 0.0 <= self.sparsity <= 1.0 and math.isfinite(self.sparsity)):
            raise ValueError(f"sparsity must be a number from 0 to 1; got {self.sparsity!r}")
        if not (is_int(self.m) and 2 <= self.m <= 64):
            raise ValueError(f"m must be an integer from 2 to 64; got {self.m!r}")
        object.__setattr__(self, "sparsity", float(self.sparsity))

    @property
    def active(self) -> bool:
        return self.sparsity > 0.0 and (self.method != "n:m" or self.n < self.m)

    @property
    def n(self) -> int:
        """Weights kept per run of m (n:m only)."""
        return self.m - round(self.sparsity * self.m)

    @property
    def label(self) -> str:
        if not self.active:
            return "dense"
        if self.method == "n:m":
            return f"{self.n}:{self.m}"
        return f"{self.method} {self.sparsity:.0%}"


@dataclass(frozen=True)
class ActivationSpec:
    """How to quantize the input of every compressible layer: per tensor, calibrated.

    The clip range of each layer's input is fixed once, from the float model run on the first
    `calib_batches` batches of `batch_size` calibration inputs (lightviz/core/activations.py), with
    the same range methods as weights. Asymmetric by default: inputs after a ReLU are >= 0 and
    an affine grid spends no code on negatives (torch.ao's quint8 activations).

    `per_token=True` instead gives every token its own range at run time (each row of the
    input's last dimension: a token's features in a transformer's Linear layers), the dynamic
    per-token quantization of LLM practice; nothing is calibrated then.

    >>> ActivationSpec(bits=8).quant.label
    'int8 asym/tensor'
    """

    bits: int = 8
    scheme: str = "asymmetric"
    range_method: str = "minmax"
    percentile: float = 99.99
    calib_batches: int = 4
    batch_size: int = 32
    per_token: bool = False  # one scale per token (row of the last dimension), chosen at run time

    def __post_init__(self) -> None:
        if not isinstance(self.per_token, bool):
            raise ValueError(f"per_token must be True or False; got {self.per_token!r}")
        if not (is_int(self.bits) and 1 <= self.bits <= 16):
            raise ValueError(f"activation bits must be an integer from 1 to 16; got {self.bits!r} "
                             "(keep activations float with Plan(activations=None))")
        if self.bits == 1 and self.scheme == "symmetric":
            raise ValueError("activation bits=1 with scheme 'symmetric' (binarization) is not supported; "
                             "use scheme 'asymmetric' or 2 bits or more")
        for name in ("calib_batches", "batch_size"):
            value = getattr(self, name)
            if not (is_int(value) and 1 <= value <= 100_000):
                raise ValueError(f"{name} must be an integer from 1 to 100000; got {value!r}")
        _ = self.quant  # validates scheme, range_method and percentile with QuantSpec's messages
        object.__setattr__(self, "percentile", float(self.percentile))

    @property
    def quant(self) -> QuantSpec:
        """The per-tensor QuantSpec the calibrated ranges feed."""
        return QuantSpec(bits=self.bits, scheme=self.scheme, granularity="tensor",
                         range_method=self.range_method, percentile=self.percentile)

    @property
    def calib_samples(self) -> int:
        return self.calib_batches * self.batch_size


@dataclass(frozen=True)
class LayerConfig:
    """Everything one layer gets: quantization, pruning, or kept float (neither)."""

    quant: QuantSpec = field(default_factory=QuantSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    keep_float: bool = False
    method: MethodSpec = field(default_factory=MethodSpec)  # how weights are rounded (methods/spec.py)

    def __post_init__(self) -> None:
        if isinstance(self.quant, Mapping):
            object.__setattr__(self, "quant", QuantSpec(**self.quant))
        if isinstance(self.prune, Mapping):
            object.__setattr__(self, "prune", PruneSpec(**self.prune))
        if isinstance(self.method, Mapping):
            object.__setattr__(self, "method", MethodSpec(**self.method))
        if not isinstance(self.method, MethodSpec):
            raise ValueError(f"method must be a MethodSpec; got {type(self.method).__name__}")
        if not isinstance(self.quant, QuantSpec):
            raise ValueError(f"quant must be a QuantSpec; got {type(self.quant).__name__}")
        if not isinstance(self.prune, PruneSpec):
            raise ValueError(f"prune must be a PruneSpec; got {type(self.prune).__name__}")
        if not isinstance(self.keep_float, bool):
            raise ValueError(f"keep_float must be True or False; got {self.keep_float!r}")

    @property
    def effective_quant(self) -> QuantSpec:
        return replace(self.quant, bits=None) if self.keep_float else self.quant

    @property
    def effective_prune(self) -> PruneSpec:
        return PruneSpec() if self.keep_float else self.prune

    @property
    def effective_method(self) -> MethodSpec:
        """The method that runs: none (nearest) for a layer kept float."""
        return MethodSpec() if self.effective_quant.bits is None else self.method


@dataclass(frozen=True)
class Plan:
    """A default LayerConfig plus per-layer overrides; the whole model's compression recipe.

    Args:
        default: config of every compressible layer without an override.
        overrides: {layer name: LayerConfig}; stored as a sorted tuple of pairs (hashable).
        global_prune: prune unstructured layers with one magnitude threshold over all of
            them, at the default sparsity (torch.nn.utils.prune.global_unstructured).
        fold_bn: fold BatchNorm into the preceding conv/linear before compressing, as
            deployed int8 models do.
        activations: quantize the input of every compressible layer (None: keep them float).
            Absent from the JSON when None, so plans saved before it existed load unchanged.
        pinned: {layer name: the fields of its override the user set}, as paths of
            `config_fields` ("quant.bits", "prune.sparsity", "keep_float"). Overrides are per
            field: when the default changes (`with_default`), an overridden layer keeps its
            pinned fields and follows the default in every other one. A layer not listed pins
            the fields where its config differs from the default. In the JSON only where that
            is not already so (a field pinned at the default's value).
    """

    default: LayerConfig = field(default_factory=LayerConfig)
    overrides: tuple[tuple[str, LayerConfig], ...] = ()
    global_prune: bool = False
    fold_bn: bool = True
    activations: ActivationSpec | None = None
    pinned: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.activations, Mapping):
            object.__setattr__(self, "activations", ActivationSpec(**self.activations))
        if self.activations is not None and not isinstance(self.activations, ActivationSpec):
            raise ValueError(f"activations must be an ActivationSpec or None; got {type(self.activations).__name__}")
        if isinstance(self.default, Mapping):
            object.__setattr__(self, "default", LayerConfig(**self.default))
        if not isinstance(self.default, LayerConfig):
            raise ValueError(f"default must be a LayerConfig; got {type(self.default).__name__}")
        items = self.overrides.items() if isinstance(self.overrides, Mapping) else self.overrides
        if not isinstance(items, (tuple, list, ItemsView)) or not all(
                isinstance(item, (tuple, list)) and len(item) == 2 for item in items):
            raise ValueError('overrides must map layer names to layer configs, {"layer name": {"quant": ...}}, '
                             f"or be a list of [layer name, config] pairs; got {preview(self.overrides)}")
        pairs = {}
        for name, config in items:
            if not isinstance(name, str) or not name:
                raise ValueError(f"override layer names must be non-empty strings; got {name!r}")
            pairs[name] = LayerConfig(**config) if isinstance(config, Mapping) else config
            if not isinstance(pairs[name], LayerConfig):
                raise ValueError(f"override for {name!r} must be a LayerConfig")
        object.__setattr__(self, "overrides", tuple(sorted(pairs.items())))
        object.__setattr__(self, "pinned", self._normalized_pins())
        for flag in ("global_prune", "fold_bn"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False; got {getattr(self, flag)!r}")

    def _normalized_pins(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Validated pins, one entry per override: given ones, else the fields that differ."""
        given = self.pinned.items() if isinstance(self.pinned, Mapping) else self.pinned
        given = {name: paths for name, paths in given}
        known = set(config_fields(self.default))
        pins = []
        for name, config in self.overrides:
            paths = given.get(name)
            if paths is None:
                paths = changed_fields(self.default, config)
            if isinstance(paths, str) or not all(isinstance(p, str) and p in known for p in paths):
                raise ValueError(f"pinned fields of {name!r} must be a list of {sorted(known)}; got {paths!r}")
            pins.append((name, tuple(sorted(set(paths)))))
        return tuple(pins)  # pins of layers without an override are dropped: nothing to pin

    def config_for(self, name: str) -> LayerConfig:
        return dict(self.overrides).get(name, self.default)

    def pins_for(self, name: str) -> tuple[str, ...]:
        """The fields the override of `name` pins (empty without an override)."""
        return dict(self.pinned).get(name, ())

    def with_override(self, name: str, config: LayerConfig | None, pinned: tuple[str, ...] | None = None) -> Plan:
        """A new Plan where `name` gets `config` (None removes its override).

        Args:
            pinned: the fields of `config` the user set (see `config_fields`); default: those
                that differ from the plan's default. With nothing pinned and `config` equal to
                the default, the override goes.
        """
        pairs, pins = dict(self.overrides), dict(self.pinned)
        pinned = changed_fields(self.default, config) if pinned is None and config is not None else pinned
        if config is None or (config == self.default and not pinned):
            pairs.pop(name, None)
            pins.pop(name, None)
        else:
            pairs[name], pins[name] = config, tuple(pinned)
        return replace(self, overrides=tuple(pairs.items()), pinned=tuple(pins.items()))

    def with_default(self, config: LayerConfig) -> Plan:
        """A new Plan with default `config`: each override keeps its pinned fields and takes
        every other field from the new default (an override left with no pin goes).

        >>> plan = Plan().with_override("fc1", LayerConfig(quant=QuantSpec(bits=4)))
        >>> rebased = plan.with_default(LayerConfig(quant=QuantSpec(scheme="asymmetric")))
        >>> rebased.config_for("fc1").quant.label, rebased.pins_for("fc1")
        ('int4 asym/channel', ('quant.bits',))
        """
        pairs, pins = [], []
        for name, old in self.overrides:
            paths = self.pins_for(name)
            if paths:
                old_values = config_fields(old)
                pairs.append((name, with_fields(config, {path: old_values[path] for path in paths})))
                pins.append((name, paths))
        return replace(self, default=config, overrides=tuple(pairs), pinned=tuple(pins))

    @property
    def uses_methods(self) -> bool:
        """Whether any layer's config asks for a method other than nearest rounding."""
        return any(config.method.name != "nearest" for config in (self.default, *dict(self.overrides).values()))

    @property
    def uses_formats(self) -> bool:
        """Whether any layer's config asks for a number format other than integers."""
        return any(config.quant.format != "int" for config in (self.default, *dict(self.overrides).values()))

    def to_dict(self) -> dict:
        data = {
            "default": _config_dict(self.default),
            "overrides": {name: _config_dict(config) for name, config in self.overrides},
            "global_prune": self.global_prune,
            "fold_bn": self.fold_bn,
        }
        if self.activations is not None:  # absent when float: older plans and links stay identical
            data["activations"] = asdict(self.activations)
            if not self.activations.per_token:
                data["activations"].pop("per_token")
        extra_pins = {name: list(paths) for name, paths in self.pinned
                      if paths != changed_fields(self.default, self.config_for(name))}
        if extra_pins:  # absent when every pin is a difference from the default (the usual case)
            data["pinned"] = extra_pins
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping) -> Plan:
        if not isinstance(data, Mapping):
            raise ValueError(f"a plan must be a JSON object; got {type(data).__name__}")
        allowed = {f.name for f in fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown plan keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        try:
            data = dict(data)
            overrides = data.get("overrides")
            if isinstance(overrides, Mapping) and any(isinstance(c, Mapping) for c in overrides.values()):
                # a partial override ({"quant": {"bits": 4}}) takes its other fields from the default
                default = data.get("default", LayerConfig())
                base = asdict(default if isinstance(default, LayerConfig) else LayerConfig(**default))
                data["overrides"] = {name: merged(base, config) if isinstance(config, Mapping) else config
                                     for name, config in overrides.items()}
            return cls(**data)
        except TypeError as error:  # unknown nested keys
            raise ValueError(f"invalid plan: {error}") from None

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan a JSON text holds; ValueError (never RecursionError) for anything else.

        Size and nesting are checked before parsing: a plan is at most MAX_PLAN_CHARS long and
        MAX_PLAN_DEPTH levels deep.

        >>> Plan.from_json("[" * 100_000 + "]" * 100_000)
        Traceback (most recent call last):
        ...
        ValueError: plan nests deeper than 16 levels (a plan needs 4); it is not a lightviz plan
        """
        if not isinstance(text, str):
            raise ValueError(f"plan must be JSON text; got {type(text).__name__}")
        if len(text) > MAX_PLAN_CHARS:
            raise ValueError(f"plan is {len(text):,} characters long, over the limit of {MAX_PLAN_CHARS:,}; "
                             "it is not a lightviz plan")
        if json_depth(text) > MAX_PLAN_DEPTH:
            raise ValueError(f"plan nests deeper than {MAX_PLAN_DEPTH} levels (a plan needs 4); "
                             "it is not a lightviz plan")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"plan is not valid JSON: {first_line(error)}") from None
        return cls.from_dict(data)


def _config_dict(config: LayerConfig) -> dict:
    """A LayerConfig as JSON data without the newer fields at their defaults (float32 scales, the
    default method, the integer format), so plans and links saved before they existed stay
    byte-identical."""
    data = asdict(config)
    if config.method == MethodSpec():
        del data["method"]
    if config.quant.format == "int":
        del data["quant"]["format"]
    if config.quant.scale_dtype == "float32":
        del data["quant"]["scale_dtype"]
    return data


def plan_to_token(plan: Plan) -> str:
    """A compact URL-safe token of a plan (for shareable links).

    >>> plan_from_token(plan_to_token(Plan(fold_bn=False))) == Plan(fold_bn=False)
    True
    """
    packed = zlib.compress(json.dumps(plan.to_dict(), separators=(",", ":"), sort_keys=True).encode(), 9)
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


def plan_from_token(token: str) -> Plan:
    """The plan a `plan_to_token` token holds; ValueError if the token is damaged."""
    if not isinstance(token, str) or len(token) > MAX_PLAN_CHARS:
        raise ValueError("the link's plan is too long to be a lightviz plan")
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        unpacker = zlib.decompressobj()
        raw = unpacker.decompress(packed, MAX_PLAN_CHARS + 1)  # bounded: a tiny token can inflate to gigabytes
        if len(raw) > MAX_PLAN_CHARS or not unpacker.eof:
            raise ValueError("too long")
        text = raw.decode()
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError):
        raise ValueError("the link's plan is damaged, incomplete or too long to be a lightviz plan") from None
    return Plan.from_json(text)
