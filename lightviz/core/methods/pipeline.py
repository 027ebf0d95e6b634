"""Run a Plan's PTQ methods for the Engine, layer by layer, reusing its per-layer cache.

Each layer's method is first cut down to the steps that apply to it (a rotation needs a Linear
or 1x1 conv, GPTQ an input it can unfold; what is dropped is said in the layer's note). Then:

1. **Equalization** (data-free, model-wide): the sets whose first layer asks for it are scaled
   once (equalize.py); every layer of a set gets its scaled float weights as reference.
2. **Data-free layers** (nearest, hadamard): transformed and rounded from their weights alone.
3. **Float pass** over the calibration inputs, on the float model with equalization applied:
   SmoothQuant/AWQ read each layer's float inputs; AdaRound keeps the float outputs at sampled
   positions; bias correction keeps each output channel's float mean.
4. **Sequential pass** (gptq, adaround, bias_correction): the *compressed* model runs on the
   calibration inputs; at each such layer a forward pre-hook reads the input the quantized
   upstream layers produce, rounds (and corrects) the layer, and puts the result in place, so
   the layers after it see it (GPTQ, AdaRound and AIMET's bias correction all work this way).

Cache keys (what a layer's result depends on):

| method                      | key                                                              |
|-----------------------------|------------------------------------------------------------------|
| nearest, untouched          | the engine's plain key: (layer, folded, quant, prune)             |
| data-free (hadamard, equalized) | + the method spec, the equalized sets of the plan             |
| smoothquant, awq            | + a fingerprint of the calibration inputs                        |
| gptq, adaround, bias_corr.  | + every upstream layer's config (in execution order)              |

Calibration inputs run as one batch (the first `calib_samples` of the data's calibration set);
activations stay float while methods calibrate, as AIMET's AdaRound does.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import replace
from typing import Callable

import torch
from torch import fx, nn

from lightviz.core.methods import compute
from lightviz.core.methods.apply import LayerExtras, LayerState, build_model, transform_input
from lightviz.core.methods.equalize import Equalized, equalization_graph, equalize
from lightviz.core.methods.patches import MAX_HESSIAN_COLUMNS, outputs_at, patch_columns, patch_support
from lightviz.core.methods.spec import MethodSpec
from lightviz.core.methods.transforms import rotation_applies
from lightviz.core.result import LayerResult
from lightviz.core.size import weight_size
from lightviz.core.specs import Plan

STATE_ENTRIES = 8


class _StopPass(Exception):
    """Raised by a hook once the last layer a pass needs has been handled."""


def run_methods(engine, plan: Plan, calibration: torch.Tensor | None, counts: dict[str, int],
                progress: Callable[[int, int], None] | None = None) -> dict[str, LayerResult]:
    """Every layer's result under `plan` (module order), methods applied; see the module doc.

    Raises:
        ValueError: a data-driven method without calibration inputs, or inputs the model refuses.
    """
    return _Run(engine, plan, calibration, counts, progress).results()


def applicable(method: MethodSpec, module: nn.Module, binary: bool) -> tuple[MethodSpec, list[str]]:
    """The steps of `method` that apply to `module`, and one reason per step dropped.

    >>> applicable(MethodSpec("hadamard+gptq"), nn.Conv2d(2, 2, 3), False)[0].name
    'gptq'
    """
    kept, why = [], []
    for step in method.steps:
        reason = None
        if step in ("gptq", "adaround", "smoothquant", "awq"):
            reason = patch_support(module)
            if reason is None and step == "gptq" and patch_columns(module) > MAX_HESSIAN_COLUMNS:
                reason = f"{patch_columns(module)} inputs per output are too many for a K×K Hessian"
            if reason is None and step == "adaround" and binary:
                reason = "1-bit binarization has no up/down rounding to learn"
        elif step == "hadamard":
            reason = rotation_applies(module)
        elif step == "bias_correction" and isinstance(module, nn.Embedding):
            reason = "an Embedding has no bias"
        if reason:
            why.append(f"{step} does not apply: {reason}")
        else:
            kept.append(step)
    return replace(method, name="+".join(kept) or "nearest"), why


class _Run:
    """One call of run_methods: the plan's methods, keys, and passes."""

    def __init__(self, engine, plan: Plan, calibration: torch.Tensor | None, counts: dict[str, int],
                 progress: Callable[[int, int], None] | None) -> None:
        self.engine, self.plan, self.counts, self.progress = engine, plan, counts, progress
        self.modules = dict(engine.model.named_modules())
        self.names = [layer.name for layer in engine.layers]
        self.methods, self.skipped = {}, {}
        for layer in engine.layers:
            config = plan.config_for(layer.name)
            binary = config.effective_quant.bits == 1 and config.effective_quant.scheme == "symmetric" \
                and config.effective_quant.format == "int"
            self.methods[layer.name], self.skipped[layer.name] = applicable(
                config.effective_method, self.modules[layer.name], binary)
        data = [m for m in self.methods.values() if m.uses_data]
        self.calib, self.calib_key = None, None
        if data:
            self.calib, self.calib_key = _calibration(engine, calibration, max(m.calib_samples for m in data),
                                                      next(m.name for m in data))
        self.eq, self.eq_key = self._equalization()
        sequential = any(m.sequential for m in self.methods.values())
        self.order = _execution_order(engine, self.calib) if sequential else list(self.names)
        self.done, self.prepared, self.info = 0, {}, {}

    # --- keys ------------------------------------------------------------------------------

    def key(self, name: str) -> tuple:
        layer, method = self.engine.by_name[name], self.methods[name]
        base = self.engine.base_key(layer, self.plan, self.counts.get(name))
        if method.name == "nearest" and name not in self.eq.weights and not self.skipped[name]:
            return base
        key = base + (method, tuple(self.skipped[name]), self.eq_key)
        if method.uses_data:
            key += (self.calib_key,)
        if method.sequential:
            upstream = self.order[:self.order.index(name)]
            key += (tuple((u, self.plan.config_for(u), self.counts.get(u)) for u in upstream),)
        return key

    # --- the run -----------------------------------------------------------------------------

    def results(self) -> dict[str, LayerResult]:
        results, pending = {}, []
        for name in self.names:
            hit = self.engine.cache_get(self.key(name))
            if hit is not None:
                results[name] = hit
                self._report()
            else:
                pending.append(name)
        for name in pending:
            if not self.methods[name].uses_data:
                self._store(results, name, self._finish(name, self._prepare(name)))
        data = [name for name in self.order if name in pending and self.methods[name].uses_data]
        if any(self._needs_float(name) for name in data):
            self._float_pass(data, results)
        sequential = [name for name in data if self.methods[name].sequential]
        if sequential:
            self._sequential_pass(sequential, results)
        for name in pending:  # a layer the calibration inputs never reached: nearest, and say so
            if name not in results:
                note = "did not run on the calibration inputs: rounded to nearest"
                self._store(results, name, self._finish(name, self._prepare(name, static_only=True), note=note))
        return {name: results[name] for name in self.names}

    def _store(self, results: dict, name: str, result: LayerResult) -> None:
        results[name] = result
        self.engine.cache_put(self.key(name), result)
        self._report()

    def _report(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, len(self.names))

    def _needs_float(self, name: str) -> bool:
        method = self.methods[name]
        return method.transform in ("smoothquant", "awq") or method.rounding == "adaround" or method.bias_correction

    # --- per layer ---------------------------------------------------------------------------

    def _reference(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if name in self.eq.weights:
            return self.eq.weights[name]
        return self.engine.reference_weight(name, self.plan.fold_bn)

    def _prepare(self, name: str, static_only: bool = False) -> compute.Prepared:
        weight, bias = self._reference(name)
        method = self.methods[name]
        if static_only:
            method = replace(method, name="nearest")
        return compute.prepare_static(self.modules[name], weight, bias, method, name)

    def _finish(self, name: str, prepared: compute.Prepared, x: torch.Tensor | None = None,
                note: str = "") -> LayerResult:
        layer, config = self.engine.by_name[name], self.plan.config_for(name)
        quant, method, module = config.effective_quant, self.methods[name], self.modules[name]
        if note:
            method = replace(method, name="nearest")
        mask, prune = compute.prune_layer(prepared.weight, config.effective_prune, layer.axis, self.counts.get(name))
        pruned = prepared.weight if mask is None else prepared.weight * mask
        qparams, weight_hat = compute.round_nearest(pruned, quant, layer.axis)
        notes = [prepared.note] if prepared.note else []
        bias = prepared.bias
        if qparams is not None and method.rounding == "gptq":
            weight_hat = compute.round_gptq(module, pruned, mask, quant, qparams, x, method)
            notes.append(f"GPTQ on {len(self.calib)} calibration inputs")
        elif qparams is not None and method.rounding == "adaround":
            info = self.info[name]
            weight_hat = compute.round_adaround(module, pruned, mask, quant, qparams, x, info["positions"],
                                                info["target"], bias, self._activation(name), method, name)
            notes.append(f"AdaRound, {method.iterations:,} steps on {len(info['positions']):,} outputs")
        if method.bias_correction:
            bias = compute.corrected_bias(module, x, weight_hat, bias, self.info[name]["mean"])
            notes.append(f"bias corrected on {len(self.calib)} calibration inputs")
        clamps = tuple((module_name, upper) for module_name, upper in self.eq.clamps.items()
                       if self.eq.owner.get(module_name) == name)
        if name in self.eq.notes:
            notes.insert(0, self.eq.notes[name])
        size = weight_size(layer.shape, quant, mask, prune, layer.axis, 0 if bias is None else bias.numel())
        extra_bits = prepared.transform_bits + 32 * sum(upper.numel() for _, upper in clamps)
        if extra_bits:
            size = replace(size, qparam_bits=size.qparam_bits + extra_bits)
        extras = LayerExtras(
            method=method.name, note="; ".join(notes + self.skipped[name] + ([note] if note else [])),
            bias=bias, reference_bias=prepared.bias, input_scale=prepared.input_scale,
            input_rotation=prepared.input_rotation, clamps=clamps, transform_bits=extra_bits,
            calib_samples=len(self.calib) if method.uses_data and self.calib is not None else 0)
        return LayerResult(layer, quant, prune, prepared.weight, weight_hat, mask, qparams, size, extras)

    def _activation(self, name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The activation right after the layer (AIMET's act_func): ReLU, ReLU6 or its clamp."""
        found = _following_activation(self.engine, self.plan.fold_bn).get(name)
        if found is None:
            return None
        kind, module_name = found
        if kind == "relu":
            return torch.relu
        upper = self.eq.clamps.get(module_name)
        bound = torch.full((1,), 6.0) if upper is None else upper
        return lambda t: torch.minimum(torch.relu(t), bound.to(t.dtype))

    # --- passes --------------------------------------------------------------------------------

    def _float_states(self) -> dict[str, LayerState]:
        return {name: LayerState(*self._reference(name)) for name in self.names}

    def _removed(self) -> tuple[str, ...]:
        return tuple(layer.bn for layer in self.engine.layers if self.plan.fold_bn and layer.bn is not None)

    def _float_pass(self, names: list[str], results: dict) -> None:
        """Run the (equalized) float model once: transforms from float inputs, float targets."""
        model = build_model(self.engine.model, self._float_states(), self.eq.clamps, self._removed())
        modules, handles = dict(model.named_modules()), []
        wanted = [name for name in names if self._needs_float(name)]
        last = wanted[-1]

        def before(name: str):
            def hook(module: nn.Module, args: tuple) -> None:
                x, method = args[0].detach(), self.methods[name]
                weight, bias = self._reference(name)
                if method.transform in ("smoothquant", "awq"):
                    quant = self.plan.config_for(name).effective_quant
                    self.prepared[name] = compute.prepare_from_inputs(module, weight, bias, method, x, quant, name)
                    if not method.sequential:
                        self._store(results, name, self._finish(name, self.prepared[name]))
                if method.rounding == "adaround":
                    self.info.setdefault(name, {})["positions"] = compute.adaround_positions(
                        module, x, name, method.seed)
            return hook

        def after(name: str):
            def hook(module: nn.Module, args: tuple, y: torch.Tensor) -> None:
                info = self.info.setdefault(name, {})
                if "positions" in info:
                    info["target"] = outputs_at(y.detach(), module, info["positions"]).float()
                if self.methods[name].bias_correction:
                    info["mean"] = compute.output_mean(module, y.detach())
                if name == last:
                    raise _StopPass
            return hook

        for name in wanted:
            handles.append(modules[name].register_forward_pre_hook(before(name)))
            handles.append(modules[name].register_forward_hook(after(name)))
        _run_until_stopped(model, self.calib)

    def _sequential_pass(self, names: list[str], results: dict) -> None:
        """Run the compressed model once; each pending layer is rounded on the input it receives."""
        states = self._float_states()
        for name, r in results.items():
            extras = r.extras
            bias = extras.bias if extras is not None else self.engine.reference_weight(name, self.plan.fold_bn)[1]
            states[name] = LayerState(r.weight_hat, bias, extras and extras.input_scale,
                                      extras and extras.input_rotation)
        model = build_model(self.engine.model, states, self.eq.clamps, self._removed())
        modules = dict(model.named_modules())
        last = names[-1]

        def hook_for(name: str):
            def hook(module: nn.Module, args: tuple) -> tuple:
                prepared = self.prepared.get(name) or self._prepare(name)
                x = transform_input(module, args[0].detach(), prepared.input_scale, prepared.input_rotation)
                result = self._finish(name, prepared, x)
                self._store(results, name, result)
                module.weight = nn.Parameter(result.weight_hat.clone(), requires_grad=False)
                bias = result.extras.bias
                module.bias = None if bias is None else nn.Parameter(bias.clone(), requires_grad=False)
                if name == last:
                    raise _StopPass
                return (x, *args[1:])
            return hook

        for name in names:
            modules[name].register_forward_pre_hook(hook_for(name))
        _run_until_stopped(model, self.calib)

    # --- equalization ------------------------------------------------------------------------

    def _equalization(self) -> tuple[Equalized, tuple]:
        enabled = frozenset(name for name, m in self.methods.items() if m.transform == "equalize")
        if not enabled:
            return Equalized({}, {}, [], {}), ()
        graph = _state(self.engine, "graphs", self.plan.fold_bn, lambda: equalization_graph(
            self.engine.model, self.names, {layer.name: layer.bn for layer in self.engine.layers if layer.bn},
            self.plan.fold_bn))
        starts = {group[0] for group in graph.sets}

        def run() -> Equalized:
            members = {name for group in graph.sets if group[0] in enabled for name in group}
            weights = {name: self.engine.reference_weight(name, self.plan.fold_bn) for name in members}
            return equalize(weights, graph, set(enabled))

        eq = _state(self.engine, "equalized", (self.plan.fold_bn, enabled), run)
        for name in enabled - starts - set(eq.weights):  # asked for, nothing done here: say why
            if name in graph.reasons:
                why = graph.reasons[name]
            else:
                owner = next((group[0] for group in graph.sets if name in group), None)
                why = f"equalization starts at {owner}, whose set this layer is in" if owner else \
                    "no conv → conv or conv → depthwise → conv set starts here"
            self.skipped[name] = self.skipped[name] + [f"equalize does not apply: {why}"]
        key = tuple(sorted(group[0] for group in eq.applied))
        return eq, key


# --- helpers ---------------------------------------------------------------------------------


def _run_until_stopped(model: nn.Module, x: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            model(x)
    except _StopPass:
        pass


def _state(engine, kind: str, key, compute_value: Callable):
    """A value in the engine's bounded method caches (LRU of STATE_ENTRIES per kind)."""
    with engine._lock:
        store = engine.method_state.setdefault(kind, OrderedDict())
        if key in store:
            store.move_to_end(key)
            return store[key]
    value = compute_value()
    with engine._lock:
        store[key] = value
        while len(store) > STATE_ENTRIES:
            store.popitem(last=False)
    return value


def _calibration(engine, calibration: torch.Tensor | None, n: int, method: str) -> tuple[torch.Tensor, tuple]:
    """The first n calibration inputs and a fingerprint of their contents (a cache key)."""
    if calibration is None:
        raise ValueError(f"method {method} reads calibration inputs: pass calibration=inputs (N, ...) or an "
                         "EvalData; Engine.evaluate passes the data's own")
    if not isinstance(calibration, torch.Tensor) or calibration.dim() < 1 or len(calibration) == 0 \
            or not calibration.is_floating_point():
        raise ValueError(f"calibration inputs must be a non-empty floating-point tensor (N, ...); got "
                         f"{type(calibration).__name__} {tuple(getattr(calibration, 'shape', ()))}")
    inputs = calibration[:n].contiguous()

    def fingerprint() -> tuple:
        digest = hashlib.blake2b(inputs.float().numpy().tobytes(), digest_size=16).hexdigest()
        return tuple(inputs.shape), digest

    # keyed by identity and count; the entry holds the tensor, so its id is not reused meanwhile
    key = _state(engine, "fingerprints", (id(calibration), n), lambda: (calibration, fingerprint()))[1]
    return inputs, key


def _execution_order(engine, calib: torch.Tensor) -> list[str]:
    """Layer names in the order a forward pass calls them (never-called layers last)."""
    def run() -> list[str]:
        model = build_model(engine.model, {}, {})
        seen: list[str] = []
        modules = dict(model.named_modules())
        for layer in engine.layers:
            modules[layer.name].register_forward_pre_hook(
                lambda module, args, name=layer.name: seen.append(name) if name not in seen else None)
        with torch.no_grad():
            model(calib[:1])
        return seen + [layer.name for layer in engine.layers if layer.name not in seen]
    return _state(engine, "order", tuple(calib.shape[1:]), run)


def _following_activation(engine, fold_bn: bool) -> dict[str, tuple[str, str | None]]:
    """{layer: ("relu" | "relu6", module name)} for layers whose output goes straight into one."""
    def run() -> dict:
        try:
            graph = fx.symbolic_trace(engine.model).graph
        except Exception:  # noqa: BLE001 - untraceable: no activation in AdaRound's loss
            return {}
        modules, found = dict(engine.model.named_modules()), {}
        for layer in engine.layers:
            node = next((n for n in graph.nodes if n.op == "call_module" and n.target == layer.name), None)
            while node is not None and len(node.users) == 1:
                node = next(iter(node.users))
                target = modules.get(node.target) if node.op == "call_module" else None
                if fold_bn and node.op == "call_module" and node.target == layer.bn:
                    continue
                if isinstance(target, nn.ReLU) or node.target in (torch.relu, nn.functional.relu):
                    found[layer.name] = ("relu", None)
                elif isinstance(target, nn.ReLU6):
                    found[layer.name] = ("relu6", node.target)
                break
        return found
    return _state(engine, "activations", fold_bn, run)
