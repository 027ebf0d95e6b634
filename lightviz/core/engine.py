"""Float model + Plan -> compressed copy, with a bounded per-layer cache.

The engine never modifies the float model. Each layer's result is cached under (layer,
fold_bn, effective quant spec, prune key), so changing one layer's setting recomputes only
that layer; the cache is an LRU bounded in bytes, not a copy per click. Plans with PTQ methods
(gptq, adaround, equalize, ...) run through lightviz/core/methods/pipeline.py, whose keys add
what each method depends on: its settings, the calibration inputs, the equalized layer sets
and, for methods that read the quantized model's inputs, every layer upstream.

>>> engine = Engine(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
>>> engine.compress_layers(Plan())["1"].size.format
'dense'
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from lightviz.core import metrics
from lightviz.core.activations import (
    CalibrationCache,
    InputQParams,
    InputStats,
    quantize_inputs_,
    quantize_tokens_,
)
from lightviz.core.batches import BATCH_VALUES, EVAL_BATCH, eval_batch_size, run_model  # noqa: F401
from lightviz.core.device import model_device, resolve_device
from lightviz.core.evaldata import EvalData
from lightviz.core.layers import LayerInfo, find_layers, folded_weights
from lightviz.core.methods.apply import LayerState, build_model
from lightviz.core.prune import global_prune_counts, keep_largest, prune_mask
from lightviz.core.quant import choose_qparams, fake_quantize
from lightviz.core.result import Evaluation, LayerResult
from lightviz.core.size import state_bytes, weight_size
from lightviz.core.specs import LayerConfig, Plan, PruneSpec, QuantSpec
from lightviz.core.task import task_of

CACHE_BYTES = 512 * 2**20
RUNNERS = 2  # datasets (and foldings) whose activations an engine keeps for prefix reuse
LOGITS_CACHE_BYTES = 2**30  # cached logits (an LM's are sequences x tokens x vocabulary)

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is being done)


class Engine:
    """Compresses one float model under any number of Plans, caching per layer.

    Args:
        model: the float model; it is put in eval mode and never modified otherwise.
        cache_bytes: bound on the cached compressed weights (LRU).
        device: where compression and forward passes run (lightviz.core.device: "auto",
            "cpu", "cuda", a torch.device); None: where the model is. On another device than
            the model's, the engine works on its own copy there. Inputs move one batch at a
            time; logits and metrics come back to the CPU.
        prefix_bytes: with a positive budget, `logits` of a plan recompute only what follows
            the first layer it changes from the last plan (lightviz.core.incremental), keeping
            at most this many bytes of activations for each of its last RUNNERS (data,
            folding) pairs; `run_info(plan, data)` says what a run reused.
    """

    def __init__(self, model: nn.Module, cache_bytes: int = CACHE_BYTES,
                 device: str | torch.device | None = None, prefix_bytes: int = 0) -> None:
        self.device = model_device(model) if device is None else resolve_device(device)
        if model_device(model) != self.device:
            model = copy.deepcopy(model).to(self.device)  # the caller's model stays where it is
        self.model = model.eval()
        self.layers = find_layers(model)
        self.by_name = {layer.name: layer for layer in self.layers}
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple, LayerResult] = OrderedDict()
        self._cached_bytes = 0
        self._folded: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._logits: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.RLock()  # a Streamlit server shares one engine across sessions
        self._calibration = CalibrationCache()  # activation ranges (lightviz/core/activations.py)
        self._fidelity_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # LayerResult -> metrics
        self.method_state: dict = {}  # the methods pipeline's own bounded caches (order, equalization)
        self.float_size_bytes = state_bytes(model.state_dict())
        self.stats = {"hits": 0, "misses": 0}
        self.prefix_bytes = int(prefix_bytes)
        self._runners: OrderedDict[tuple, tuple] = OrderedDict()  # (id(data), fold_bn) -> (data, runner, why not)
        self.last_run = None  # incremental.RunInfo of the last plan run incrementally

    # --- per layer ---------------------------------------------------------------------

    def compress_layers(self, plan: Plan, progress: Callable[[int, int], None] | None = None,
                        calibration: torch.Tensor | EvalData | None = None) -> dict[str, LayerResult]:
        """Every layer's result under `plan`, reusing cached layers.

        Args:
            progress: called with (layers done, layers) after each layer.
            calibration: inputs (N, ...) the plan's data-driven methods read (gptq, adaround,
                bias_correction, smoothquant, awq); `evaluate` and `logits` pass the data's own.
        """
        self.check_plan(plan)
        counts = self._global_counts(plan)
        if plan.uses_methods:
            from lightviz.core.methods.pipeline import run_methods
            return run_methods(self, plan, _inputs(calibration), counts, progress)
        results = {}
        for layer in self.layers:
            results[layer.name] = self._layer(layer, plan, counts.get(layer.name))
            if progress is not None:
                progress(len(results), len(self.layers))
        return results

    def compress_layer(self, plan: Plan, name: str, calibration: torch.Tensor | EvalData | None = None
                       ) -> LayerResult:
        """One layer's result under `plan` (calibration: as compress_layers)."""
        self.check_plan(plan)
        if name not in self.by_name:
            raise ValueError(f"no compressible layer named {name!r}")
        if plan.uses_methods:  # a method may depend on other layers: the pipeline sorts it out (cached)
            return self.compress_layers(plan, calibration=calibration)[name]
        return self._layer(self.by_name[name], plan, self._global_counts(plan).get(name))

    def reference_weight(self, name: str, fold_bn: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) of a layer as compression sees it: BatchNorm folded or not."""
        layer = self.by_name[name]
        if not fold_bn or layer.bn is None:
            module = self.model.get_submodule(layer.module_path)
            bias = getattr(module, layer.bias_param, None) if layer.bias_param else None
            return getattr(module, layer.param).detach(), None if bias is None else bias.detach()
        with self._lock:
            if name not in self._folded:
                self._folded[name] = folded_weights(self.model, layer)
            return self._folded[name]

    def base_key(self, layer: LayerInfo, plan: Plan, global_count: int | None) -> tuple:
        """The cache key of a layer rounded to nearest: (name, folded, quant, prune or global count)."""
        config = plan.config_for(layer.name)
        prune = config.effective_prune if global_count is None else ("global", global_count)
        return layer.name, plan.fold_bn and layer.bn is not None, config.effective_quant, prune

    def _layer(self, layer: LayerInfo, plan: Plan, global_count: int | None) -> LayerResult:
        key = self.base_key(layer, plan, global_count)
        hit = self.cache_get(key)
        if hit is not None:
            return hit
        config = plan.config_for(layer.name)
        result = self._compute(layer, key[1], config.effective_quant, config.effective_prune, global_count)
        self.cache_put(key, result)
        return result

    def cache_get(self, key: tuple) -> LayerResult | None:
        """A cached layer result (LRU), or None."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.stats["hits"] += 1
            return hit

    def cache_put(self, key: tuple, result: LayerResult) -> None:
        """Cache a layer result, evicting the least recently used past `cache_bytes`."""
        with self._lock:
            self.stats["misses"] += 1
            if key in self._cache:
                return
            self._cache[key] = result
            self._cached_bytes += result.nbytes
            while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes

    def _compute(self, layer: LayerInfo, fold: bool, quant: QuantSpec, prune: PruneSpec,
                 global_count: int | None) -> LayerResult:
        weight, bias = self.reference_weight(layer.name, fold)
        if global_count is not None:
            mask = keep_largest(weight, global_count) if global_count else None
            prune = PruneSpec(sparsity=global_count / weight.numel(), method="unstructured")
        else:
            mask = prune_mask(weight, prune, layer.axis) if prune.active else None
        pruned = weight if mask is None else weight * mask
        qparams = None if quant.bits is None else choose_qparams(pruned, quant, layer.axis)
        weight_hat = pruned.clone() if qparams is None else fake_quantize(pruned, quant, layer.axis, qparams)
        if mask is not None and qparams is not None:  # 1-bit codes map 0 to +s: pruned weights stay 0
            weight_hat.mul_(mask)
        size = weight_size(layer.shape, quant, mask, prune, layer.axis, 0 if bias is None else bias.numel())
        return LayerResult(layer, quant, prune, weight, weight_hat, mask, qparams, size)

    def _global_counts(self, plan: Plan) -> dict[str, int]:
        """Per-layer pruned counts when the plan prunes globally, else {}."""
        spec = plan.default.prune
        if not (plan.global_prune and spec.method == "unstructured" and spec.active
                and not plan.default.keep_float):
            return {}
        names = [layer.name for layer in self.layers
                 if plan.config_for(layer.name).prune == spec and not plan.config_for(layer.name).keep_float]
        weights = [self.reference_weight(name, plan.fold_bn)[0] for name in names]
        return dict(zip(names, global_prune_counts(weights, spec.sparsity)))

    def check_plan(self, plan: Plan) -> None:
        """Raise ValueError when `plan` overrides a layer this model does not have."""
        unknown = [name for name, _ in plan.overrides if name not in self.by_name]
        if unknown:
            raise ValueError(f"plan overrides layers this model does not have: {unknown}; "
                             f"its layers are {list(self.by_name)}")

    # --- whole model -------------------------------------------------------------------

    def compress(self, plan: Plan, calibration: torch.Tensor | EvalData | None = None) -> nn.Module:
        """A new model with the plan applied (BatchNorm folded into Identity when asked).

        Args:
            plan: the recipe; when it quantizes activations, each layer's input is
                fake-quantized with ranges calibrated on `calibration` (activations.py).
            calibration: inputs (N, ...) for activation calibration; labels are never used.
                `logits` and `evaluate` pick them for you (`EvalData.calibration_inputs`).
        """
        results = self.compress_layers(plan, calibration=calibration if plan.uses_methods else None)
        model = self._build(plan, results, quantized=True)
        if plan.activations is not None and plan.activations.per_token:  # dynamic: no calibration
            quantize_tokens_(model, [layer.module_path for layer in self.layers], plan.activations)
        elif plan.activations is not None:
            quantize_inputs_(model, self.activation_qparams(plan, calibration), plan.activations)
        return model.eval()

    def _build(self, plan: Plan, results: dict[str, LayerResult], quantized: bool) -> nn.Module:
        """A copy of the model with each layer's compressed (or transformed float) weights and bias,
        method transforms and clamps, folded BatchNorms removed."""
        states, clamps = {}, {}
        for name, r in results.items():
            extras = r.extras
            bias = self.reference_weight(name, plan.fold_bn)[1]
            if extras is not None:
                bias = extras.bias if quantized else extras.reference_bias
                clamps.update(extras.clamps)
            states[name] = LayerState(r.weight_hat if quantized else r.weight, bias,
                                      extras and extras.input_scale, extras and extras.input_rotation)
        removed = tuple(r.layer.bn for r in results.values() if plan.fold_bn and r.layer.bn is not None)
        return build_model(self.model, states, clamps, removed, {name: r.layer for name, r in results.items()})

    def calibration_model(self, plan: Plan, calibration: torch.Tensor | None = None) -> nn.Module:
        """The float model activation ranges calibrate on: BatchNorm folded as the plan says, and
        the plan's method transforms (equalization, SmoothQuant/AWQ scales, rotations) applied."""
        from lightviz.core.activations import float_plan
        if not plan.uses_methods:
            return self.compress(float_plan(plan.fold_bn))
        return self._build(plan, self.compress_layers(plan, calibration=calibration), quantized=False)

    def activation_qparams(self, plan: Plan, calibration: torch.Tensor | EvalData | None) -> dict[str, InputQParams]:
        """Per-layer input clip ranges and qparams of `plan.activations`, calibrated (cached)."""
        if calibration is None:
            raise ValueError("the plan quantizes activations: give calibration inputs, e.g. "
                             "engine.compress(plan, calibration=x); Engine.evaluate picks them itself")
        inputs = calibration.calibration_inputs if isinstance(calibration, EvalData) else calibration
        return self._calibration.qparams(self, plan, inputs)

    def activation_stats(self, plan: Plan, calibration: torch.Tensor | EvalData) -> dict[str, InputStats]:
        """What calibration recorded at each layer's input (min, max, a sample of values); cached."""
        inputs = calibration.calibration_inputs if isinstance(calibration, EvalData) else calibration
        return self._calibration.stats(self, plan, inputs)

    def size_bytes(self, plan: Plan, results: dict[str, LayerResult] | None = None) -> int:
        """Bytes of the compressed model: compressed layers plus everything else at its dtype."""
        results = results or self.compress_layers(plan)
        state = self.model.state_dict()
        covered = set()
        for layer in self.layers:
            covered |= {layer.weight_key, layer.bias_key} | {f"{alias}.weight" for alias in layer.tied}
            if plan.fold_bn and layer.bn is not None:  # folded away into the layer's bias
                covered |= {key for key in state if key.startswith(f"{layer.bn}.")}
        rest = state_bytes({key: value for key, value in state.items() if key not in covered})
        return rest + sum(result.size.total_bytes for result in results.values())

    def logits(self, plan: Plan | None, data: EvalData,
               progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Logits of the compressed model (or the float one for plan=None) on data.x; cached.

        Activation ranges, when the plan quantizes activations, are calibrated on
        `data.calibration_inputs`: the training split for the digits test split,
        else the first batches of data.x.

        Args:
            progress: called with (samples done, samples) after each batch that runs.
        """
        cached = self.cached_logits(plan, data)
        if cached is not None:
            return cached
        reusable = plan is not None and self.prefix_bytes and not plan.uses_methods  # methods change more than weights
        out, info = self._incremental(plan, data, progress) if reusable else (None, None)
        if out is None:
            needs = plan is not None and (plan.activations is not None or plan.uses_methods)
            model = self.model if plan is None else self.compress(plan, data.calibration_inputs if needs else None)
            out = run_model(model, data.x, progress=progress)
        with self._lock:
            self._logits[(plan, id(data))] = (data, out, info)  # holding data keeps its id from being reused
            while len(self._logits) > 64 or (len(self._logits) > 1 and sum(
                    entry[1].numel() * entry[1].element_size() for entry in self._logits.values()) > LOGITS_CACHE_BYTES):
                self._logits.popitem(last=False)
        return out

    def _incremental(self, plan: Plan, data: EvalData, progress) -> tuple:
        """(logits, RunInfo) from the prefix runner of (data, folding), or (None, None): run a full forward."""
        from lightviz.core.incremental import PlanRunner, input_hooks

        key = (id(data), plan.fold_bn)
        with self._lock:
            found = self._runners.get(key)
            if found is not None and found[0] is data:
                self._runners.move_to_end(key)
        if found is None or found[0] is not data:
            try:
                found = (data, PlanRunner(self, data, plan.fold_bn, self.prefix_bytes), "")
            except Exception as error:  # noqa: BLE001 - untraceable: full forwards, said once
                found = (data, None, f"torch.fx could not trace the model ({type(error).__name__}); full forwards")
            with self._lock:
                self._runners[key] = found
                while len(self._runners) > RUNNERS:  # each keeps at most prefix_bytes of activations
                    self._runners.popitem(last=False)
        runner = found[1]
        if runner is None:
            return None, None
        hooks = (input_hooks(plan, self.activation_qparams(plan, data.calibration_inputs))
                 if plan.activations is not None else None)
        done = runner.logits(plan, self.compress_layers(plan), hooks, progress)
        if done is None:
            return None, None
        self.last_run = done[1]
        return done

    def cached_logits(self, plan: Plan | None, data: EvalData) -> torch.Tensor | None:
        """The logits `logits(plan, data)` would return when they are cached, else None."""
        key = (plan, id(data))
        with self._lock:
            entry = self._logits.get(key)
            if entry is None or entry[0] is not data:
                return None
            self._logits.move_to_end(key)
            return entry[1]

    def run_info(self, plan: Plan, data: EvalData):
        """How the cached logits of (plan, data) were computed (incremental.RunInfo), or None for a
        full forward or logits no longer cached."""
        with self._lock:
            entry = self._logits.get((plan, id(data)))
            return entry[2] if entry is not None and entry[0] is data else None

    def evaluate(self, plan: Plan, data: EvalData, progress: Progress | None = None) -> Evaluation:
        """Accuracy, fidelity to the float model, and size of `plan` on `data`.

        Args:
            progress: called with (fraction done, what is running) while layers are compressed
                and while the float and compressed models run (passes already cached are skipped).
        """
        passes = [(p, what) for p, what in ((None, "float"), (plan, "compressed"))
                  if self.cached_logits(p, data) is None]
        stages = _Stages(progress, [3.0 if plan.uses_methods else 0.1] + [1.0] * len(passes))
        results = self.compress_layers(plan, stages.reporter(0, "Compressing layers", "layers"),
                                       calibration=data)
        for index, (p, what) in enumerate(passes, start=1):
            self.logits(p, data, stages.reporter(index, f"Running the {what} model", "samples"))
        reference, test = self.logits(None, data), self.logits(plan, data)
        labeled = data.y is not None
        n_weights = sum(r.size.n_weights for r in results.values())
        common = dict(n_samples=len(data.x), size_bytes=self.size_bytes(plan, results),
                      float_size_bytes=self.float_size_bytes,
                      avg_bits_per_weight=sum(r.size.weight_bits for r in results.values()) / max(n_weights, 1))
        task = task_of(data)
        if task.is_lm:
            quantized = [r.size for r in results.values() if r.quant.bits is not None]
            return Evaluation(
                accuracy=None, float_accuracy=None, task=task.name, n_tokens=data.x.shape[0] * (data.x.shape[1] - 1),
                quantized_bits_per_weight=(sum(s.weight_bits for s in quantized) / sum(s.n_weights for s in quantized)
                                           if quantized else None),
                **task.model_metrics(reference, test, data.x, data.y), **common)
        return Evaluation(
            accuracy=metrics.accuracy(test, data.y) if labeled else None,
            float_accuracy=metrics.accuracy(reference, data.y) if labeled else None,
            agreement=metrics.agreement(reference, test),
            kl=metrics.mean_kl(reference, test),
            **common,
        )

    def _fidelity(self, r: LayerResult) -> dict:
        """Weight error metrics of one cached layer result, computed once per result."""
        with self._lock:
            found = self._fidelity_cache.get(r)
        if found is None:
            found = metrics.weight_fidelity(r.weight, r.weight_hat)
            with self._lock:
                self._fidelity_cache[r] = found
        return found

    def layer_table(self, plan: Plan, calibration: torch.Tensor | EvalData | None = None) -> pd.DataFrame:
        """One row per layer; columns documented in LAYER_COLUMNS (calibration: for methods)."""
        rows = []
        for name, r in self.compress_layers(plan, calibration=calibration).items():
            config = plan.config_for(name)
            fidelity = self._fidelity(r)
            rows.append({
                "name": name, "type": r.layer.kind, "role": r.layer.role, "shape": "x".join(map(str, r.layer.shape)),
                "params": r.layer.n_weights, "bits": r.quant.bits, "scheme": config.quant.scheme,
                "granularity": config.quant.granularity, "range_method": config.quant.range_method,
                "sparsity": config.effective_prune.sparsity if not plan.global_prune else r.prune.sparsity,
                "prune_method": config.prune.method, "keep_float": config.keep_float,
                "overridden": name in dict(plan.overrides), "bn_folded": plan.fold_bn and r.layer.bn is not None,
                "achieved_sparsity": fidelity["achieved_sparsity"], "format": r.size.format,
                "mse": fidelity["mse"], "sqnr_db": fidelity["sqnr_db"], "cosine": fidelity["cosine"],
                "max_abs_error": fidelity["max_abs_error"],
                "size_bytes": r.size.total_bytes, "float_size_bytes": (r.size.n_weights * 32 + r.size.bias_bits) // 8,
                "bits_per_weight": r.size.bits_per_weight,
                "value_bytes": r.size.value_bits / 8, "qparam_bytes": r.size.qparam_bits / 8,
                "index_bytes": r.size.index_bits / 8, "bias_bytes": r.size.bias_bits / 8,
                "number_format": config.quant.format, "method": config.method.name,
                "method_note": r.extras.note if r.extras is not None else "",
            })
        return pd.DataFrame(rows, columns=LAYER_COLUMNS)


LAYER_COLUMNS = [
    "name", "type", "role", "shape", "params",  # the layer
    "bits", "scheme", "granularity", "range_method", "sparsity", "prune_method", "keep_float",  # its config
    "overridden", "bn_folded", "achieved_sparsity", "format",
    "mse", "sqnr_db", "cosine", "max_abs_error",  # fidelity of the weight (vs folded float)
    "size_bytes", "float_size_bytes", "bits_per_weight",  # storage (size.py)
    "value_bytes", "qparam_bytes", "index_bytes", "bias_bytes",  # size by part
    "number_format", "method", "method_note",  # int / fp8 / mx...; the PTQ method and what it did
]


class _Stages:
    """Turns the (done, total) counts of consecutive stages into one overall Progress;
    each stage counts for its weight (compressing layers is quick next to a forward pass)."""

    def __init__(self, progress: Progress | None, weights: list[float]) -> None:
        self.progress, self.weights = progress, weights

    def reporter(self, index: int, what: str, unit: str) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        before, total_weight = sum(self.weights[:index]), sum(self.weights)

        def report(done: int, total: int) -> None:
            fraction = (before + self.weights[index] * done / max(total, 1)) / total_weight
            self.progress(fraction, f"{what}: {done:,} of {total:,} {unit}")
        return report


def uniform_plan(bits: int | None = 8, scheme: str = "symmetric", granularity: str = "channel",
                 sparsity: float = 0.0, prune_method: str = "unstructured", **quant: object) -> Plan:
    """A Plan with one setting for every layer (a convenience for sweeps and scripts)."""
    return Plan(default=LayerConfig(
        quant=QuantSpec(bits=bits, scheme=scheme, granularity=granularity, **quant),
        prune=PruneSpec(sparsity=sparsity, method=prune_method)))


def _inputs(calibration: torch.Tensor | EvalData | None) -> torch.Tensor | None:
    return calibration.calibration_inputs if isinstance(calibration, EvalData) else calibration

