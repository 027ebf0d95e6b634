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
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from lightviz.core.methods.spec import MethodSpec

SCHEMES = ("symmetric", "asymmetric")
GRANULARITIES = ("tensor", "channel", "group")
RANGE_METHODS = ("minmax", "percentile", "mse", "entropy")
PRUNE_METHODS = ("unstructured", "filter", "n:m")

RANGE_METHOD_HELP = {
    "minmax": "use the block's full range: no clipping, largest rounding step",
    "percentile": "clip at a percentile of the values: outliers saturate, the step shrinks",
    "mse": "grid-search the clip range that minimizes the squared error of the block",
    "entropy": "TensorRT-style KL calibration over a 2048-bin histogram",
}
# Number formats (lightviz/core/formats.py holds their math). A non-integer format fixes the
# stored bits; MX and NVFP4 also fix the block layout and the scale rule (their specs say how).
NUMBER_FORMATS = ("int", "fp8_e4m3", "fp8_e5m2", "mxfp8", "mxfp6", "mxfp4", "mxint8", "nvfp4", "nf4")
FORMAT_BITS = {"fp8_e4m3": 8, "fp8_e5m2": 8, "mxfp8": 8, "mxfp6": 6, "mxfp4": 4, "mxint8": 8, "nvfp4": 4, "nf4": 4}
FORMAT_BLOCKS = {"mxfp8": 32, "mxfp6": 32, "mxfp4": 32, "mxint8": 32, "nvfp4": 16}
FORMAT_HELP = {
    "int": "integer codes on a uniform grid (bits, scheme, granularity and range method as chosen)",
    "fp8_e4m3": "FP8 E4M3 (max 448): 8-bit floats, a float32 scale per block, finer steps near zero",
    "fp8_e5m2": "FP8 E5M2 (max 57344): wider range, 2 mantissa bits",
    "mxfp8": "OCP MX: blocks of 32 FP8 E4M3 values sharing a power-of-two E8M0 scale",
    "mxfp6": "OCP MX: blocks of 32 FP6 E2M3 values (max 7.5) sharing an E8M0 scale",
    "mxfp4": "OCP MX: blocks of 32 FP4 E2M1 values (0, 0.5, 1, 1.5, 2, 3, 4, 6) sharing an E8M0 scale",
    "mxint8": "OCP MX: blocks of 32 int8 values (fixed point, step 1/64) sharing an E8M0 scale",
    "nvfp4": "NVIDIA: blocks of 16 FP4 E2M1 values with an FP8 E4M3 scale, times a float32 tensor scale",
    "nf4": "QLoRA NormalFloat: 16 levels at normal quantiles, one float32 absmax per block",
}
PRUNE_METHOD_HELP = {
    "unstructured": "zero the individual weights of smallest |w|",
    "filter": "remove whole output channels with the smallest L1 norm",
    "n:m": "keep the n largest |w| in every run of m weights (2:4 at sparsity 0.5)",
}


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    format: str = "int"

    def __post_init__(self) -> None:
        if self.bits is not None and not (_is_int(self.bits) and 1 <= self.bits <= 16):
            raise ValueError(f"bits must be an integer from 1 to 16 or None (float); got {self.bits!r}")
        _choice("scheme", self.scheme, SCHEMES)
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("range_method", self.range_method, RANGE_METHODS)
        _choice("format", self.format, NUMBER_FORMATS)
        if not (_is_int(self.group_size) and self.group_size >= 1):
            raise ValueError(f"group_size must be a positive integer; got {self.group_size!r}")
        if not (isinstance(self.percentile, (int, float)) and 50.0 < self.percentile <= 100.0):
            raise ValueError(f"percentile must be a number in (50, 100]; got {self.percentile!r}")
        object.__setattr__(self, "percentile", float(self.percentile))
        if self.format != "int":
            self._fix_to_format()

    def _fix_to_format(self) -> None:
        """Set the fields a non-integer format decides (see the class docstring)."""
        fixed = {"scheme": "symmetric"}
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
        return f"int{self.bits} {self.scheme[:4]}/{gran}"


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
        _choice("method", self.method, PRUNE_METHODS)
        if not (isinstance(self.sparsity, (int, float)) and not isinstance(self.sparsity, bool)
                and 0.0 <= self.sparsity <= 1.0 and math.isfinite(self.sparsity)):
            raise ValueError(f"sparsity must be a number from 0 to 1; got {self.sparsity!r}")
        if not (_is_int(self.m) and 2 <= self.m <= 64):
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

    >>> ActivationSpec(bits=8).quant.label
    'int8 asym/tensor'
    """

    bits: int = 8
    scheme: str = "asymmetric"
    range_method: str = "minmax"
    percentile: float = 99.99
    calib_batches: int = 4
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not (_is_int(self.bits) and 1 <= self.bits <= 16):
            raise ValueError(f"activation bits must be an integer from 1 to 16; got {self.bits!r} "
                             "(keep activations float with Plan(activations=None))")
        if self.bits == 1 and self.scheme == "symmetric":
            raise ValueError("activation bits=1 with scheme 'symmetric' (binarization) is not supported; "
                             "use scheme 'asymmetric' or 2 bits or more")
        for name in ("calib_batches", "batch_size"):
            value = getattr(self, name)
            if not (_is_int(value) and 1 <= value <= 100_000):
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
    """

    default: LayerConfig = field(default_factory=LayerConfig)
    overrides: tuple[tuple[str, LayerConfig], ...] = ()
    global_prune: bool = False
    fold_bn: bool = True
    activations: ActivationSpec | None = None

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
        pairs = {}
        for name, config in items:
            if not isinstance(name, str) or not name:
                raise ValueError(f"override layer names must be non-empty strings; got {name!r}")
            pairs[name] = LayerConfig(**config) if isinstance(config, Mapping) else config
            if not isinstance(pairs[name], LayerConfig):
                raise ValueError(f"override for {name!r} must be a LayerConfig")
        object.__setattr__(self, "overrides", tuple(sorted(pairs.items())))
        for flag in ("global_prune", "fold_bn"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False; got {getattr(self, flag)!r}")

    def config_for(self, name: str) -> LayerConfig:
        return dict(self.overrides).get(name, self.default)

    def with_override(self, name: str, config: LayerConfig | None) -> Plan:
        """A new Plan where `name` gets `config` (None removes its override)."""
        pairs = dict(self.overrides)
        if config is None or config == self.default:
            pairs.pop(name, None)
        else:
            pairs[name] = config
        return replace(self, overrides=tuple(pairs.items()))

    def with_default(self, config: LayerConfig) -> Plan:
        return replace(self, default=config)

    @property
    def uses_methods(self) -> bool:
        """Whether any layer's config asks for a method other than nearest rounding."""
        return any(config.method.name != "nearest" for config in (self.default, *dict(self.overrides).values()))

    def to_dict(self) -> dict:
        data = {
            "default": _config_dict(self.default),
            "overrides": {name: _config_dict(config) for name, config in self.overrides},
            "global_prune": self.global_prune,
            "fold_bn": self.fold_bn,
        }
        if self.activations is not None:  # absent when float: older plans and links stay identical
            data["activations"] = asdict(self.activations)
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
            return cls(**data)
        except TypeError as error:  # unknown nested keys
            raise ValueError(f"invalid plan: {error}") from None

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"plan is not valid JSON: {error}") from None
        return cls.from_dict(data)


def _config_dict(config: LayerConfig) -> dict:
    """A LayerConfig as JSON data; the default method and format are left out, so plans and
    links saved before they existed stay identical."""
    data = asdict(config)
    if config.method == MethodSpec():
        del data["method"]
    if config.quant.format == "int":
        del data["quant"]["format"]
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
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        text = zlib.decompress(packed).decode()
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError):
        raise ValueError("the link's plan is damaged or incomplete; using the default plan") from None
    return Plan.from_json(text)


# --- training ------------------------------------------------------------------------------

MAX_EPOCHS = 1000


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer and loss settings of one training run (fine-tuning, distillation); validated.

    >>> config = TrainConfig(epochs=2, lr=1e-3)
    >>> config.batch_size, config.distill_weight, config.temperature
    (64, 0.5, 4.0)

    Adam with a cosine learning-rate decay to zero over `epochs` (a short fine-tune ends on
    small steps, so the last epoch's weights are stable). lr 3e-3 by default: on digits-cnn
    at 2 bits per channel it wins back in 5 epochs what 1e-3 needs 10 for, and at 4 and 8
    bits it costs nothing.
    """

    epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    distill_weight: float = 0.5  # alpha: share of the soft (teacher) loss
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not (_is_int(self.epochs) and 1 <= self.epochs <= MAX_EPOCHS):
            raise ValueError(f"epochs must be an integer from 1 to {MAX_EPOCHS}; got {self.epochs!r}")
        if not (_is_finite_number(self.lr) and 0 < self.lr <= 1):
            raise ValueError(f"lr must be a number in (0, 1]; got {self.lr!r}")
        if not (_is_int(self.batch_size) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer; got {self.batch_size!r}")
        if not (_is_int(self.seed) and self.seed >= 0):
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        if not (_is_finite_number(self.distill_weight) and 0 <= self.distill_weight <= 1):
            raise ValueError(f"distill_weight must be a number from 0 to 1; got {self.distill_weight!r}")
        if not (_is_finite_number(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number; got {self.temperature!r}")
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "distill_weight", float(self.distill_weight))
        object.__setattr__(self, "temperature", float(self.temperature))
