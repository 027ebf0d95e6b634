"""Export a Plan as an ONNX model in QDQ form, runnable by onnxruntime (or any ONNX runtime).

How (each step chosen for a clean, correct graph):

1. The *carrier*: `Engine.compress` of the plan without activation hooks: BatchNorm folded as
   the plan says, every weight already its compressed float value (pruned zeros exact).
2. `torch.onnx.export(dynamo=True, optimize=False)`: the torch.export-based exporter keeps
   every parameter as an initializer named by its module path (`features.0.0.weight`).
   Its optimizer is left off because it folds BatchNorm into the weights, which a plan with
   `fold_bn=False` must not see; only constant folding runs (shape arithmetic of flatten).
3. `onnx_graph.rewrite_qdq`: each quantized weight becomes integer codes + DequantizeLinear,
   each quantized layer input a [Clip ->] QuantizeLinear -> DequantizeLinear pair.
4. `onnx.checker.check_model(full_check=True)`, and the plan JSON in the model's metadata.

Containers: codes of 4 bits or fewer are stored as INT4/UINT4 (opset 21, executed by
onnxruntime's CPU DequantizeLinear), up to 8 bits as INT8/UINT8, up to 16 as INT16/UINT16;
symmetric 1-bit weights as codes {-1, +1} times the block's mean |w| (XNOR-Net). Activations
use 8-bit containers (16 above 8 bits), with a Clip when their codes are narrower.

The torch.onnx and onnx modules are imported here only: `import lightviz` stays light.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from lightviz.core.activations import float_plan, wa_label
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.quant import code_range
from lightviz.core.specs import Plan
from lightviz.io.codes import LayerCodes, container_for, layer_codes
from lightviz.io.onnx_graph import InputQuant, RewrittenLayer, rewrite_qdq
from lightviz.io.outfile import write_atomic

DEFAULT_OPSET = 21
OPSETS = (18, 19, 20, 21, 22, 23)
BLOCKED_OPSET = 21  # blocked DequantizeLinear, INT4/UINT4, INT16/UINT16 appear in opset 21
INPUT_NAME, OUTPUT_NAME = "input", "logits"
TEMPLATES_PER_ENGINE = 2
# float model -> {(fold_bn, opset, input shape): serialized float graph}; plans differ only in weights,
# and every Engine of one (never modified) model shares it
_templates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_templates_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class OnnxExport:
    """An exported ONNX model and what each layer became.

    Attributes:
        model: the ONNX ModelProto (checked with onnx.checker).
        layers: per compressible layer: consuming op, weight container, DQ form, input quantization.
        plan: the plan it implements (also in the model's metadata, key "lightviz.plan").
        opset: the ONNX opset.
        seconds: time the export took.
    """

    model: onnx.ModelProto
    layers: tuple[RewrittenLayer, ...]
    plan: Plan
    opset: int
    seconds: float

    def to_bytes(self) -> bytes:
        return self.model.SerializeToString()

    def save(self, path: str | Path) -> int:
        """Write the model to `path` atomically (never half-written); returns its size in bytes."""
        return write_atomic(path, self.to_bytes())

    def summary(self) -> list[dict]:
        """One JSON-able dict per layer."""
        return [{"name": row.name, "op": row.op, "weight": row.weight, "form": row.form, "codes": row.codes,
                 "input": row.input} for row in self.layers]


def export_onnx(engine: Engine, plan: Plan, data: EvalData | None = None, input_shape: tuple[int, ...] | None = None,
                opset: int = DEFAULT_OPSET, model_name: str = "", carrier: nn.Module | None = None,
                codes: dict[str, LayerCodes] | None = None) -> OnnxExport:
    """The plan's model as ONNX QDQ.

    Args:
        engine: the float model's engine.
        plan: what to export; when it quantizes activations, `data` calibrates them.
        data: evaluation data (its calibration inputs set activation ranges; its input shape
            the graph's); or give `input_shape` for a weight-only plan.
        opset: ONNX opset, 18 to 23; blocked (group) and INT4/INT16 storage need 21 or later.
        model_name: recorded in the metadata.
        carrier, codes: a different float model and its layers' codes (physical pruning);
            default: the engine's own under the plan.

    Raises:
        ValueError: an opset the plan cannot be expressed in, a model torch.onnx cannot export,
            or a layer whose weight the exporter transformed.

    >>> from lightviz.core.engine import uniform_plan
    >>> e = export_onnx(Engine(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))), uniform_plan(8), input_shape=(4,))
    >>> e.layers[0].weight, e.layers[0].form
    ('int8', 'per-axis (axis 0)')
    """
    start = time.perf_counter()
    if opset not in OPSETS:
        raise ValueError(f"opset must be one of {', '.join(map(str, OPSETS))}; got {opset!r}")
    shape = tuple(data.input_shape) if data is not None else tuple(input_shape or ())
    if not shape:
        raise ValueError("give the evaluation data or the input shape (without the batch dimension)")
    codes = codes if codes is not None else layer_codes(engine, plan)
    weights = {name: item for name, item in codes.items() if item.quantized}
    containers = {name: container_for(item.qmin, item.qmax, min_bits=4 if opset >= BLOCKED_OPSET else 8)
                  for name, item in weights.items()}
    check_opset(plan, weights, containers, opset)
    inputs = input_quants(engine, plan, data, opset) if plan.activations is not None else {}
    if carrier is None:
        model = _template(engine, plan.fold_bn, opset, shape)
        _set_weights(model, codes)
    else:
        model = _torch_to_onnx(carrier, shape, opset)
    rows = rewrite_qdq(model, weights, inputs, containers, list(codes))
    _metadata(model, plan, engine, model_name)
    onnx.checker.check_model(model, full_check=True)
    return OnnxExport(model, tuple(rows), plan, opset, time.perf_counter() - start)


def check_opset(plan: Plan, weights: dict[str, LayerCodes], containers: dict[str, str], opset: int) -> None:
    """Refuse, with the alternatives, what `opset` cannot express."""
    if opset >= BLOCKED_OPSET:
        return
    grouped = [name for name, item in weights.items() if item.quant.granularity == "group"]
    if grouped:
        raise ValueError(f"granularity 'group' needs blocked DequantizeLinear (ONNX opset {BLOCKED_OPSET} or later), "
                         f"and opset {opset} has none (layers {', '.join(grouped[:4])}); use --opset {BLOCKED_OPSET}, "
                         "granularity 'channel' or 'tensor', or --format lightviz")
    wide = [name for name, container in containers.items() if container.endswith("16")]
    if wide or (plan.activations is not None and plan.activations.bits > 8):
        raise ValueError(f"codes wider than 8 bits need INT16/UINT16 DequantizeLinear (ONNX opset {BLOCKED_OPSET} "
                         f"or later); use --opset {BLOCKED_OPSET} or at most 8 bits")


def input_quants(engine: Engine, plan: Plan, data: EvalData | None, opset: int = DEFAULT_OPSET) -> dict[str, InputQuant]:
    """Each layer input's fixed qparams, calibrated as the engine calibrates them."""
    if data is None:
        raise ValueError("the plan quantizes activations: give evaluation data to calibrate their ranges")
    spec = plan.activations
    qmin, qmax = code_range(spec.quant)
    container = container_for(qmin, qmax, min_bits=8)
    return {name: InputQuant(item.scale, item.zero_point, qmin, qmax, container)
            for name, item in engine.activation_qparams(plan, data).items()}


def _template(engine: Engine, fold_bn: bool, opset: int, shape: tuple[int, ...]) -> onnx.ModelProto:
    """A fresh copy of the engine's float graph (BatchNorm folded or not), exported once.

    Every plan with the same `fold_bn` shares one graph: compressing changes weight values only
    (folding also the biases, the same for every plan), so later exports skip torch.onnx.
    """
    key = (fold_bn, opset, shape)
    with _templates_lock:
        found = _templates.get(engine.model, {}).get(key)
    if found is None:
        found = _torch_to_onnx(engine.compress(float_plan(fold_bn)), shape, opset).SerializeToString()
        with _templates_lock:
            kept = _templates.setdefault(engine.model, {})
            kept[key] = found
            while len(kept) > TEMPLATES_PER_ENGINE:
                kept.pop(next(iter(kept)))
    model = onnx.ModelProto()
    model.ParseFromString(found)
    return model


def _set_weights(model: onnx.ModelProto, codes: dict[str, LayerCodes]) -> None:
    """Put each float layer's compressed weight (pruned zeros included) into the graph."""
    initializers = {init.name: init for init in model.graph.initializer}
    for name, item in codes.items():
        init = initializers.get(f"{name}.weight")
        if init is None:
            raise ValueError(f"layer {name!r}: its weight is not an initializer of the exported graph "
                             "(the exporter transformed it); export with --format lightviz instead")
        if item.quantized:
            continue  # rewrite_qdq replaces it with integer codes
        if tuple(init.dims) != tuple(item.weight_hat.shape):
            raise ValueError(f"layer {name!r}: exported weight shape {tuple(init.dims)} is not the layer's "
                             f"{tuple(item.weight_hat.shape)}")
        init.CopyFrom(numpy_helper.from_array(item.weight_hat.detach().float().numpy(), init.name))


def _torch_to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int) -> onnx.ModelProto:
    """torch.onnx's dynamo exporter, batch dimension dynamic, then constant folding only."""
    import onnx_ir.passes.common as common_passes
    from onnxscript import ir, rewriter
    from onnxscript.optimizer import fold_constants_ir
    from onnxscript.rewriter.rules import common as rules

    example = torch.zeros(2, *input_shape)  # batch 2: a batch of 1 would be specialized away
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(model, (example,), dynamo=True, optimize=False, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
                                        dynamic_shapes=({0: batch},), report=False)
        except Exception:  # noqa: BLE001 - a fixed batch is the fallback for dynamic-shape failures
            try:
                program = torch.onnx.export(model, (example[:1],), dynamo=True, optimize=False,
                                            opset_version=opset, input_names=[INPUT_NAME],
                                            output_names=[OUTPUT_NAME], verbose=False, report=False)
            except Exception as error:  # noqa: BLE001 - any exporter failure is one message
                text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # the exporter colors its messages
                raise ValueError(f"torch.onnx cannot export this model ({type(error).__name__}: "
                                 f"{text.splitlines()[0][:300] if text else ''}); "
                                 "export it with --format lightviz instead") from None
    graph = program.model
    # Shape arithmetic only: BatchNorm fusion and the other rewrites that change numbers stay off.
    tidy = [rules.materialize_reshape_shape_rule, rules.squeeze_reshape_1d_rule, rules.reshape_reshape_rule,
            rules.no_op_expand_rule, rules.no_op_cast_rule, rules.cast_cast_rule, rules.dropout_inference_rule]
    for _ in range(2):
        fold_constants_ir(graph, should_fold=_keep_weights)
        graph = rewriter.rewrite(graph, pattern_rewrite_rules=tidy)
    common_passes.RemoveUnusedNodesPass()(graph)
    model = ir.serde.serialize_model(graph)
    for node in model.graph.node:  # the exporter's notes: stack traces with local paths, rewrite names
        del node.metadata_props[:]
    return model


def _keep_weights(node) -> bool | None:
    """Never fold a node that reads a parameter (a Transpose of a linear weight, say): the QDQ
    rewrite finds each weight by its name; None lets the folder decide for everything else."""
    for value in node.inputs:
        if value is not None and value.is_initializer() and value.name.endswith((".weight", ".bias")):
            return False
    return None


def _metadata(model: onnx.ModelProto, plan: Plan, engine: Engine, model_name: str) -> None:
    names = [layer.name for layer in engine.layers]
    model.producer_name = "lightviz"
    model.doc_string = (f"{model_name or 'model'} compressed by lightviz, plan {wa_label(plan, names)}: QDQ form "
                        "(integer weights + DequantizeLinear, QuantizeLinear/DequantizeLinear on quantized inputs)")
    for key, value in (("lightviz.plan", plan.to_json()), ("lightviz.model", model_name),
                       ("lightviz.wa", wa_label(plan, names))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
