"""Rewrite a float ONNX graph into QDQ form: integer weights with DequantizeLinear, and
QuantizeLinear/DequantizeLinear pairs on the inputs the plan quantizes.

The float graph comes from torch.onnx (onnx_export.py) with each compressible layer's weight
as an initializer named `<layer>.weight`. For a quantized layer that initializer is replaced by

    <layer>.weight_quantized (intN codes) -> DequantizeLinear(scale, zero_point) -> <layer>.weight

so every consumer (Conv, Gemm, MatMul, ConvTranspose, Gather) is unchanged:

| granularity | DequantizeLinear form                                                          |
|-------------|--------------------------------------------------------------------------------|
| tensor      | scalar scale and zero-point                                                    |
| channel     | per-axis: one scale per output channel, `axis` = the layer's channel axis      |
| group       | blocked (opset 21): codes as (C_out, K), `axis=1`, `block_size` = group, then  |
|             | Reshape (and Transpose for ConvTranspose) back to the weight's shape           |

A quantized layer input becomes `x -> [Clip] -> QuantizeLinear -> DequantizeLinear -> layer`,
the Clip (in float) only when the code range is narrower than the container's (e.g. 4-bit
codes 0..15 in uint8, or symmetric -127..127 in int8), so that codes stay in their range
exactly as lightviz's clamp keeps them. This is onnxruntime's QDQ format: its graph optimizer
fuses DQ -> Conv -> Q groups into QLinearConv and DQ -> MatMul into integer kernels where it can.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from lightviz.io.codes import CONTAINERS, LayerCodes

ONNX_TYPES = {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4, "int8": TensorProto.INT8,
              "uint8": TensorProto.UINT8, "int16": TensorProto.INT16, "uint16": TensorProto.UINT16}
NUMPY_TYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16}
WEIGHT_CONSUMERS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather")
PASS_THROUGH = ("Transpose", "Reshape", "Identity", "Cast")  # ops between a weight and its consumer


@dataclass(frozen=True)
class InputQuant:
    """Fixed per-tensor quantization of one layer's input: codes qmin..qmax in `container`."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    container: str

    @property
    def clipped(self) -> bool:
        """Whether a Clip keeps codes narrower than the container's own range."""
        low, high, _ = CONTAINERS[self.container]
        return (self.qmin, self.qmax) != (low, high)


@dataclass(frozen=True)
class RewrittenLayer:
    """What the rewrite did to one layer (for reports): weight storage and input quantization."""

    name: str
    op: str  # the ONNX op that consumes the weight
    weight: str  # "float32" or the container, e.g. "int8"
    form: str  # "float", "per-tensor", "per-axis (axis 0)", "blocked (axis 1, block 32)"
    codes: str  # "-127..127", "" for float
    input: str  # "float" or e.g. "uint8 0..255" (", clipped" when narrower than the container)


def rewrite_qdq(model: onnx.ModelProto, weights: dict[str, LayerCodes], inputs: dict[str, InputQuant],
                containers: dict[str, str], layers: list[str] | None = None) -> list[RewrittenLayer]:
    """Rewrite `model` in place: DQ weights for `weights` (quantized layers), QDQ inputs for `inputs`.

    Args:
        model: a float graph whose initializers include `<layer>.weight` for every layer named.
        weights: layers to store as integers (LayerCodes with codes); others stay float.
        inputs: layers whose input is quantized, with fixed qparams.
        containers: the integer container of each quantized weight ("int4", "int8", ...).
        layers: every compressible layer, in order (those that stay float are reported too).

    Returns:
        One RewrittenLayer per layer of `layers` (default: those named in `weights` or `inputs`).

    Raises:
        ValueError: a layer's weight is not an initializer of the graph, or its input cannot be found.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    report = {}
    names = list(dict.fromkeys([*(layers or []), *weights, *inputs]))
    consumers = {name: _weight_consumers(graph, f"{name}.weight") for name in names}
    for name in names:
        if f"{name}.weight" not in initializers or not consumers[name]:
            raise ValueError(f"layer {name!r}: its weight is not a constant input of any node in the exported graph "
                             "(the exporter transformed it), so it cannot be stored as integers; "
                             "keep this layer float or export with --format lightviz")
    new_nodes: list[onnx.NodeProto] = []  # prepended: weight dequantization has no graph inputs
    before: dict[int, list[onnx.NodeProto]] = {}  # node position -> input Q/DQ nodes to run first
    replaced = {f"{name}.weight" for name, item in weights.items() if item.codes is not None}
    for index in reversed(range(len(graph.initializer))):  # by index: remove() would compare megabytes
        if graph.initializer[index].name in replaced:
            del graph.initializer[index]
    for name, item in weights.items():
        if item.codes is None:
            continue
        form, nodes, inits = _weight_dq(item, containers[name])
        new_nodes.extend(nodes)
        graph.initializer.extend(inits)
        report[name] = (form, containers[name], f"{item.qmin}..{item.qmax}")
    input_text = {}
    for name, quant in inputs.items():
        for position, index in _data_inputs(graph, consumers[name], name):
            node = graph.node[position]
            nodes, inits, output = _input_qdq(name, node.input[index], quant, suffix=f"{len(input_text.get(name, []))}")
            node.input[index] = output
            before.setdefault(position, []).extend(nodes)
            graph.initializer.extend(inits)
            input_text.setdefault(name, []).append(
                f"{quant.container} {quant.qmin}..{quant.qmax}" + (", clipped" if quant.clipped else ""))
    ordered = list(new_nodes)
    for position, node in enumerate(graph.node):
        ordered.extend(before.get(position, []))
        ordered.append(node)
    op_types = {name: graph.node[consumers[name][0][0]].op_type for name in names}
    del graph.node[:]
    graph.node.extend(ordered)
    rows = []
    for name in names:
        form, weight, codes = report.get(name, ("float", "float32", ""))
        op = op_types[name]
        rows.append(RewrittenLayer(name, op, weight, form, codes, "; ".join(input_text.get(name, [])) or "float"))
    return rows


# --- weights -----------------------------------------------------------------------------------


def _weight_dq(item: LayerCodes, container: str) -> tuple[str, list[onnx.NodeProto], list[TensorProto]]:
    """DequantizeLinear (and for groups Reshape/Transpose) producing `<layer>.weight`."""
    name, quant, layer = item.name, item.quant, item.layer
    out = f"{name}.weight"
    codes, scale, zero_point = item.codes, item.qparams.scale.float(), item.qparams.zero_point
    prefix = f"{name}.weight"
    attrs: dict = {}
    if quant.granularity == "tensor" or codes.dim() == 0:
        form = "per-tensor"
        stored, scale, zero_point = codes, scale.reshape(()), zero_point.reshape(())
    elif quant.granularity == "channel":
        form = f"per-axis (axis {layer.axis})"
        stored, attrs = codes, {"axis": layer.axis}
    else:
        moved = codes.movedim(layer.axis, 0)
        rows = moved.reshape(moved.shape[0], -1)  # (C_out, K)
        c, k = rows.shape
        group = min(quant.group_size, k)
        full = k // group
        scale, zero_point = (_group_matrix(t, c, full, k % group > 0) for t in (scale, zero_point))
        stored, attrs = rows, {"axis": 1, "block_size": group}
        form = f"blocked (axis 1 of the weight as {c}x{k}, block {group})"
    inits = [_int_tensor(f"{prefix}_quantized", stored, container),
             numpy_helper.from_array(scale.numpy().astype(np.float32), f"{prefix}_scale"),
             _int_tensor(f"{prefix}_zero_point", zero_point, container)]
    dq_out = out if quant.granularity != "group" else f"{prefix}_blocks"
    nodes = [helper.make_node("DequantizeLinear", [f"{prefix}_quantized", f"{prefix}_scale", f"{prefix}_zero_point"],
                              [dq_out], name=f"{prefix}/DequantizeLinear", **attrs)]
    if quant.granularity == "group":
        moved_shape = list(codes.movedim(layer.axis, 0).shape)
        inits.append(numpy_helper.from_array(np.array(moved_shape, dtype=np.int64), f"{prefix}_shape"))
        reshaped = out if layer.axis == 0 else f"{prefix}_moved"
        nodes.append(helper.make_node("Reshape", [dq_out, f"{prefix}_shape"], [reshaped], name=f"{prefix}/Reshape"))
        if layer.axis != 0:
            perm = list(range(1, layer.axis + 1)) + [0] + list(range(layer.axis + 1, codes.dim()))
            nodes.append(helper.make_node("Transpose", [reshaped], [out], name=f"{prefix}/Transpose", perm=perm))
    return form, nodes, inits


def _group_matrix(values: torch.Tensor, rows: int, full: int, tail: bool) -> torch.Tensor:
    """Per-block values in core.quant's order (all full groups row by row, then each row's short
    tail) as the (C_out, n_groups) matrix a blocked DequantizeLinear reads."""
    parts = [values[: rows * full].reshape(rows, full)]
    if tail:
        parts.append(values[rows * full:].reshape(rows, 1))
    return torch.cat(parts, dim=1)


def _int_tensor(name: str, values: torch.Tensor, container: str) -> TensorProto:
    array = values.to(torch.int64).numpy()
    low, high, bits = CONTAINERS[container]
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"{name}: codes {array.min()}..{array.max()} do not fit {container}")
    if bits == 4:  # two codes per byte, the first in the low nibble (ONNX's INT4/UINT4 layout)
        flat = (array.reshape(-1) & 0xF).astype(np.uint8)
        if flat.size % 2:
            flat = np.append(flat, np.uint8(0))
        packed = flat[0::2] | (flat[1::2] << 4)
        return helper.make_tensor(name, ONNX_TYPES[container], array.shape, packed.tobytes(), raw=True)
    return numpy_helper.from_array(array.astype(NUMPY_TYPES[container]), name)


# --- inputs ------------------------------------------------------------------------------------


def _input_qdq(name: str, source: str, quant: InputQuant, suffix: str) -> tuple[list, list, str]:
    """[Clip ->] QuantizeLinear -> DequantizeLinear on `source`; returns (nodes, inits, output)."""
    prefix = f"{name}.input" + (f"_{suffix}" if suffix != "0" else "")
    scale = np.float32(quant.scale)
    inits = [numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{prefix}_scale"),
             _int_tensor(f"{prefix}_zero_point", torch.tensor(quant.zero_point), quant.container)]
    nodes, x = [], source
    if quant.clipped:  # float bounds whose codes are exactly qmin and qmax
        low = np.float32(scale * np.float32(quant.qmin - quant.zero_point))
        high = np.float32(scale * np.float32(quant.qmax - quant.zero_point))
        inits += [numpy_helper.from_array(np.array(low, dtype=np.float32), f"{prefix}_min"),
                  numpy_helper.from_array(np.array(high, dtype=np.float32), f"{prefix}_max")]
        nodes.append(helper.make_node("Clip", [x, f"{prefix}_min", f"{prefix}_max"], [f"{prefix}_clipped"],
                                      name=f"{prefix}/Clip"))
        x = f"{prefix}_clipped"
    nodes.append(helper.make_node("QuantizeLinear", [x, f"{prefix}_scale", f"{prefix}_zero_point"],
                                  [f"{prefix}_quantized"], name=f"{prefix}/QuantizeLinear"))
    nodes.append(helper.make_node("DequantizeLinear", [f"{prefix}_quantized", f"{prefix}_scale",
                                                       f"{prefix}_zero_point"], [f"{prefix}_dequantized"],
                                  name=f"{prefix}/DequantizeLinear"))
    return nodes, inits, f"{prefix}_dequantized"


def _weight_consumers(graph: onnx.GraphProto, weight: str) -> list[tuple[int, int]]:
    """(node position, input index) of the compute nodes that read `weight`, through Transpose/Reshape."""
    found, frontier = [], [weight]
    while frontier:
        value = frontier.pop()
        for position, node in enumerate(graph.node):
            for index, name in enumerate(node.input):
                if name != value:
                    continue
                if node.op_type in PASS_THROUGH and index == 0:
                    frontier.extend(node.output)
                elif node.op_type in WEIGHT_CONSUMERS:
                    found.append((position, index))
    return found


def _data_inputs(graph: onnx.GraphProto, consumers: list[tuple[int, int]], name: str) -> list[tuple[int, int]]:
    """(node position, input index) of the activation each consumer multiplies with the weight."""
    out = []
    for position, index in consumers:
        node = graph.node[position]
        if node.op_type == "Gather":  # an embedding's input is indices: nothing to quantize
            continue
        if node.op_type in ("Conv", "ConvTranspose") and index == 1:
            out.append((position, 0))
        elif node.op_type in ("Gemm", "MatMul") and index in (0, 1):
            out.append((position, 1 - index))
        else:
            raise ValueError(f"layer {name!r}: its weight feeds {node.op_type} input {index}; "
                             "lightviz cannot tell which input to quantize there")
    return out

