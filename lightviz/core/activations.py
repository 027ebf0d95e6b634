"""Activation quantization: calibrate the input range of every compressible layer, then
fake-quantize those inputs with fixed qparams.

The flow is torch.ao's post-training one (prepare -> calibrate -> convert):

1. **Calibrate** on the *float* model (BatchNorm folded when the plan folds): forward
   pre-hooks on a private copy record, for each compressible layer, the running min/max of
   its input over the first `calib_batches` batches (exactly torch.ao's `MinMaxObserver`)
   and a bounded sample of the input values (for percentile, mse and entropy).
2. **Choose qparams** per layer, per tensor, with quant.py's own range methods and formulas.
3. **Convert**: the compressed copy's layers get forward pre-hooks that fake-quantize their
   input with those fixed qparams (values outside the calibrated range saturate).

Because step 1 uses float weights, one calibration serves every weight setting: it is cached
per (fold_bn, batches, batch size, calibration inputs) and the qparams per activation spec.
A plan whose PTQ methods change a layer's input coordinates (SmoothQuant or AWQ scales, a
rotation, equalization) calibrates on the float model with those transforms applied
(`Engine.calibration_model`), so the ranges are those of the inputs that get quantized.

Per-token granularity (`ActivationSpec.per_token`, the LLM practice) needs no
calibration: each token's input vector (each row of the last dimension) gets its own range,
computed as the model runs (dynamic quantization), with the spec's scheme and range method.

Hooks sit on the module that holds each layer's weight (`LayerInfo.module_path`: the
MultiheadAttention module for its in-projection, whose query, key and value are quantized alike).

Which inputs calibrate is the data's own choice (`EvalData.calibration_inputs`): the digits
test split (and subsets of it) carries the digits *training* split, so that no test image sets
a range; other data (user data, generated inputs) calibrates on the first batches of its own
evaluation inputs. Labels are never used.

>>> wa_label(Plan(default=LayerConfig(quant=QuantSpec(bits=4)), activations=ActivationSpec(bits=8)))
'W4A8'
>>> wa_label(Plan())
'W8A32'
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import torch
from torch import nn

from lightviz.core.quant import (
    QParams,
    _qparams_from_range,
    clip_range,
    code_range,
    fake_quantize,
)
from lightviz.core.specs import ActivationSpec, LayerConfig, Plan, QuantSpec

MAX_SAMPLE_VALUES = 2**16  # input values kept per layer for percentile / mse / entropy (speed)
SAMPLE_SEED = 0
CACHE_ENTRIES = 8
FLOAT_BITS = 32  # how W/A labels write float32
TOKENS_PER_PASS = 2048  # calibration of token sequences: at most this many tokens per forward pass


@dataclass(frozen=True, eq=False)
class InputStats:
    """What calibration saw at one layer's input.

    Attributes:
        name: the layer.
        min_val, max_val: running min / max over all calibration batches (MinMaxObserver's).
        sample: the input values, flattened (float32); every value when they number at most
            MAX_SAMPLE_VALUES, else a seeded uniform sample of that many plus min and max.
        n_values: input values seen in total.
        n_samples: calibration inputs (images) that produced them.
    """

    name: str
    min_val: float
    max_val: float
    sample: torch.Tensor
    n_values: int
    n_samples: int

    @property
    def sampled(self) -> bool:
        return self.sample.numel() < self.n_values


@dataclass(frozen=True, eq=False)
class InputQParams:
    """Fixed per-tensor qparams of one layer's input: clip range, scale and zero-point."""

    name: str
    lo: float  # clip range after the range method (lo <= 0 <= hi)
    hi: float
    qparams: QParams  # one block

    @property
    def scale(self) -> float:
        return float(self.qparams.scale[0])

    @property
    def zero_point(self) -> int:
        return int(self.qparams.zero_point[0])


# --- calibration ---------------------------------------------------------------------------


def calibration_batches(x: torch.Tensor, spec: ActivationSpec) -> list[torch.Tensor]:
    """The first `spec.calib_batches` batches of `spec.batch_size` inputs (fewer if x is short)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError("calibration inputs must be a non-empty tensor (N, ...); "
                         f"got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    n = min(spec.calib_samples, x.shape[0])
    return [x[i:i + spec.batch_size] for i in range(0, n, spec.batch_size)]


def collect_input_stats(model: nn.Module, names: list[str], batches: list[torch.Tensor],
                        max_values: int = MAX_SAMPLE_VALUES) -> dict[str, InputStats]:
    """Run `model` on `batches` and record each named layer's input (see InputStats).

    Hooks go on `model` for the duration of the call only; pass a private copy, never the
    user's model. Layers whose input is not floating point (Embedding indices) or that never
    run are left out.
    """
    modules = dict(model.named_modules())
    seen: dict[str, dict] = {name: {"min": None, "max": None, "parts": [], "n": 0} for name in names}
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    per_batch = max(max_values // max(len(batches), 1), 1)

    def hook(name: str):
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
                return
            entry = seen[name]
            lo, hi = torch.aminmax(x.detach())
            entry["min"] = lo if entry["min"] is None else torch.min(lo, entry["min"])  # MinMaxObserver
            entry["max"] = hi if entry["max"] is None else torch.max(hi, entry["max"])
            flat = x.detach().reshape(-1).float()
            if flat.numel() > per_batch:  # the same CPU-drawn indices on every device
                flat = flat[torch.randint(flat.numel(), (per_batch,), generator=generator).to(flat.device)]
            entry["parts"].append(flat.to("cpu", copy=True))
            entry["n"] += x.numel()
        return record

    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in names]
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.inference_mode():
            for batch in batches:
                # token sequences run a few at a time: an LM's logits are tokens x vocabulary values
                step = len(batch) if batch.is_floating_point() else max(1, TOKENS_PER_PASS // max(batch.shape[-1], 1))
                for start in range(0, len(batch), step):
                    model(batch[start:start + step].to(device))  # on the model's device
    finally:
        for handle in handles:
            handle.remove()
    n_samples = sum(len(batch) for batch in batches)
    stats = {}
    for name, entry in seen.items():
        if entry["min"] is None:
            continue
        sample = torch.cat(entry["parts"])
        if sample.numel() < entry["n"]:  # a sample: keep the true extremes in it
            sample = torch.cat([sample, entry["min"].reshape(1).float().cpu(), entry["max"].reshape(1).float().cpu()])
        stats[name] = InputStats(name, float(entry["min"]), float(entry["max"]), sample, entry["n"], n_samples)
    return stats


def input_qparams(stats: InputStats, spec: ActivationSpec | QuantSpec) -> InputQParams:
    """Per-tensor clip range and qparams of one layer's input under `spec`.

    minmax uses the running min/max (bit-exact with torch.ao's MinMaxObserver fed the same
    batches); the other methods apply quant.py's range methods to the recorded values.
    """
    quant = spec.quant if isinstance(spec, ActivationSpec) else replace(spec, granularity="tensor")
    qmin, qmax = code_range(quant)
    if quant.range_method == "minmax":
        lo = torch.tensor([[min(stats.min_val, 0.0)]], dtype=torch.float32)
        hi = torch.tensor([[max(stats.max_val, 0.0)]], dtype=torch.float32)
    else:
        lo, hi = (t.reshape(1, 1) for t in clip_range(stats.sample, quant))
    scale, zero_point = _qparams_from_range(lo, hi, qmin, qmax, quant.scheme)
    qparams = QParams(scale=scale.reshape(1).float(), zero_point=zero_point.reshape(1).to(torch.int32))
    return InputQParams(stats.name, float(lo), float(hi), qparams)


# --- convert: fake-quantize layer inputs ---------------------------------------------------


class InputFakeQuant:
    """A forward pre-hook: the layer's first input, fake-quantized with fixed qparams (the same
    tensor passed again, as attention's key and value, is replaced by the same result)."""

    def __init__(self, quant: QuantSpec, qparams: QParams) -> None:
        self.quant, self.qparams = quant, qparams

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return None
        q = fake_quantize(x, self.quant, qparams=self.qparams)
        return (q, *(q if a is x else a for a in args[1:]))


class TokenFakeQuant:
    """A forward pre-hook: the first input fake-quantized per token, i.e. one scale (and
    zero-point) per row of its last dimension, chosen at run time from that row.

    >>> hook = TokenFakeQuant(QuantSpec(bits=8, scheme="asymmetric"))
    >>> x = torch.tensor([[[0.0, 1.0], [0.0, 100.0]]])  # two tokens, very different ranges
    >>> hook(None, (x,))[0].tolist()
    [[[0.0, 1.0], [0.0, 100.0]]]
    """

    def __init__(self, quant: QuantSpec) -> None:
        self.quant = replace(quant, granularity="channel")

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() == 0 or x.numel() == 0:
            return None
        rows = x.reshape(-1, x.shape[-1])  # (tokens, features)
        q = fake_quantize(rows, self.quant, axis=0).reshape(x.shape)
        return (q, *(q if a is x else a for a in args[1:]))


def quantize_tokens_(model: nn.Module, names: list[str], spec: ActivationSpec) -> nn.Module:
    """Add per-token input fake-quant hooks to the named modules of `model` in place; returns it."""
    modules = dict(model.named_modules())
    for name in dict.fromkeys(names):
        modules[name].register_forward_pre_hook(TokenFakeQuant(spec.quant))
    return model


def quantize_inputs_(model: nn.Module, qparams: dict[str, InputQParams], spec: ActivationSpec) -> nn.Module:
    """Add input fake-quant hooks to `model` in place (a compressed copy); returns it."""
    modules = dict(model.named_modules())
    for name, item in qparams.items():
        modules[name].register_forward_pre_hook(InputFakeQuant(spec.quant, item.qparams))
    return model


# --- the engine's cache ----------------------------------------------------------------------


class CalibrationCache:
    """Input stats per (fold_bn, batches, batch size, inputs) and qparams per spec, bounded (LRU).

    Keys hold the identity of the calibration tensor; each entry keeps the tensor alive so an
    identity is never reused while its entry exists.
    """

    def __init__(self, limit: int = CACHE_ENTRIES) -> None:
        self.limit = limit
        self._stats: OrderedDict[tuple, tuple[torch.Tensor, dict[str, InputStats]]] = OrderedDict()
        self._qparams: OrderedDict[tuple, dict[str, InputQParams]] = OrderedDict()
        self._lock = threading.RLock()

    def stats(self, engine, plan: Plan, inputs: torch.Tensor) -> dict[str, InputStats]:
        """Calibrate `engine`'s float model (folded as `plan` says) on `inputs`, or reuse.

        Keys are the modules holding the layers' weights (their names, but for attention
        in-projections)."""
        spec = _require_spec(plan)
        key = (plan.fold_bn, spec.calib_batches, spec.batch_size, id(inputs), transform_key(engine, plan))
        with self._lock:
            if key in self._stats:
                self._stats.move_to_end(key)
                return self._stats[key][1]
        float_model = engine.calibration_model(plan, inputs)  # a private copy: hooks are safe
        names = list(dict.fromkeys(layer.module_path for layer in engine.layers))
        stats = collect_input_stats(float_model, names, calibration_batches(inputs, spec))
        with self._lock:
            self._stats[key] = (inputs, stats)
            _trim(self._stats, self.limit)
        return stats

    def qparams(self, engine, plan: Plan, inputs: torch.Tensor) -> dict[str, InputQParams]:
        spec = _require_spec(plan)
        key = (plan.fold_bn, spec, id(inputs), transform_key(engine, plan))
        with self._lock:
            if key in self._qparams:
                self._qparams.move_to_end(key)
                return self._qparams[key]
        result = {name: input_qparams(item, spec) for name, item in self.stats(engine, plan, inputs).items()}
        with self._lock:
            self._qparams[key] = result
            _trim(self._qparams, self.limit * 4)
        return result


def transform_key(engine, plan: Plan) -> tuple:
    """What the calibration model depends on besides folding: the config of every layer whose
    method transforms its coordinates (empty for plans without such methods)."""
    if not plan.uses_methods:
        return ()
    return tuple((layer.name, plan.config_for(layer.name)) for layer in engine.layers
                 if plan.config_for(layer.name).effective_method.transform is not None)


def float_plan(fold_bn: bool = True) -> Plan:
    """Every layer float (BatchNorm folded or not): the model calibration runs."""
    return Plan(default=LayerConfig(keep_float=True), fold_bn=fold_bn)


def _require_spec(plan: Plan) -> ActivationSpec:
    if plan.activations is None:
        raise ValueError("this plan keeps activations float (activations=None): there is nothing to calibrate")
    return plan.activations


def _trim(cache: OrderedDict, limit: int) -> None:
    while len(cache) > limit:
        cache.popitem(last=False)


# --- notation --------------------------------------------------------------------------------


def weight_bits_label(plan: Plan, names: list[str] | None = None) -> str:
    """'8', '32' (float32), or the range '3-8' when layers differ (names: all layers, else overrides)."""
    configs = [plan.default] + [config for _, config in plan.overrides] if names is None else \
        [plan.config_for(name) for name in names]
    bits = {config.effective_quant.bits for config in configs}
    if len(bits) == 1:
        only = bits.pop()
        return str(FLOAT_BITS if only is None else only)
    ints = sorted(FLOAT_BITS if b is None else b for b in bits)
    return f"{ints[0]}-{ints[-1]}"


def wa_label(plan: Plan, names: list[str] | None = None) -> str:
    """W/A notation of a plan: 'W8A8', 'W4A8', 'W4A32' (float32 activations), 'W3-8A8' (mixed).

    32 means float32, as in the common W4A16 for float16 activations.

    Args:
        plan: the plan.
        names: the model's layer names; with them a default no layer uses is ignored.
    """
    act = FLOAT_BITS if plan.activations is None else plan.activations.bits
    return f"W{weight_bits_label(plan, names)}A{act}"
