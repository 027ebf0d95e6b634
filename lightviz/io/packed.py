"""The packed lightviz file: a compressed model as the bytes its size accounting counts.

A `.safetensors` file holding
- one uint8 tensor `layer/<name>` per compressible layer: its codes packed b bits each, scales,
  zero-points, pruning index and float bias in one bit stream (packed_layer.py), exactly
  `SizeBreakdown.total_bytes` long;
- every other state_dict tensor `state/<key>` at its own dtype (BatchNorm kept unfolded, buffers);
- in the header's metadata: the Plan JSON, each layer's layout (shape, format, field widths),
  the model name, the calibrated input ranges when the plan quantizes activations (scale,
  zero-point and clip range per layer), and a SHA-256 of the tensor bytes.

So the file's size is exactly the plan's `size_bytes` plus the safetensors header (8 bytes of
length and the JSON: about 1 KiB + the plan JSON + ~300 bytes per layer + ~80 per other tensor).
`load_packed` rebuilds every compressed weight bit-exactly and refuses a damaged file with one
line saying what is wrong.

>>> import tempfile, pathlib
>>> from torch import nn
>>> from lightviz.core.engine import Engine, uniform_plan
>>> engine = Engine(nn.Sequential(nn.Linear(64, 10)))
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
>>> info = save_packed(engine, uniform_plan(4), path)
>>> info.file_bytes == info.size_bytes + info.header_bytes, info.size_bytes == engine.size_bytes(uniform_plan(4))
(True, True)
>>> packed = load_packed(path)
>>> torch.equal(packed.layers["0"].weight, engine.compress_layer(uniform_plan(4), "0").weight_hat)
True
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lightviz.core.activations import InputQParams, quantize_inputs_
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.quant import QParams
from lightviz.core.specs import Plan, QuantSpec
from lightviz.io.codes import layer_codes
from lightviz.io.outfile import write_atomic
from lightviz.io.packed_layer import decode_layer, encode_layer

FORMAT = "lightviz-packed/1"
LAYER_PREFIX, STATE_PREFIX = "layer/", "state/"
MAX_HEADER_BYTES = 64 * 2**20


@dataclass(frozen=True)
class PackedInfo:
    """What `save_packed` wrote."""

    path: str
    file_bytes: int
    size_bytes: int  # tensor data: the plan's size accounting
    header_bytes: int  # 8-byte length + JSON header

    def to_dict(self) -> dict:
        return {"path": self.path, "file_bytes": self.file_bytes, "size_bytes": self.size_bytes,
                "header_bytes": self.header_bytes}


@dataclass(frozen=True, eq=False)
class PackedLayer:
    """One compressible layer rebuilt from the file."""

    name: str
    weight: torch.Tensor  # the compressed weight, float32 (dequantized codes)
    bias: torch.Tensor | None
    quant: QuantSpec
    format: str  # storage format: dense, bitmask, n:m, filters removed
    nbytes: int
    codes: torch.Tensor | None = None  # int32 codes (None: float)
    qparams: QParams | None = None
    mask: torch.Tensor | None = None  # True = kept; None when dense


@dataclass(frozen=True, eq=False)
class PackedModel:
    """A packed file, loaded: the plan, every layer rebuilt, the other tensors as stored."""

    plan: Plan
    model_name: str
    layers: dict[str, PackedLayer]
    state: dict[str, torch.Tensor]
    folded: dict[str, str]  # layer -> the BatchNorm folded into it
    size_bytes: int
    header_bytes: int
    file_bytes: int
    metadata: dict = field(default_factory=dict)
    activations: dict[str, InputQParams] = field(default_factory=dict)  # calibrated input qparams

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: layer.weight for name, layer in self.layers.items()}

    def apply_to(self, model: nn.Module) -> nn.Module:
        """A copy of `model` (the same architecture) carrying the packed weights; folded BatchNorms
        become Identity. Raises ValueError when the architecture does not match."""
        model = copy.deepcopy(model).eval()
        modules = dict(model.named_modules())
        for name, layer in self.layers.items():
            module = modules.get(name)
            if module is None or tuple(module.weight.shape) != tuple(layer.weight.shape):
                raise ValueError(f"the packed file's layer {name!r} {tuple(layer.weight.shape)} does not fit this model")
            weight = nn.Parameter(layer.weight.clone(), requires_grad=False)
            for other in modules.values():  # tied modules (an LM head sharing the embedding) keep sharing it
                if other is not module and getattr(other, "weight", None) is module.weight:
                    other.weight = weight
            module.weight = weight
            if layer.bias is not None:
                module.bias = nn.Parameter(layer.bias.clone(), requires_grad=False)
        for bn in self.folded.values():
            parent, _, child = bn.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
        _, unexpected = model.load_state_dict(self.state, strict=False)
        if unexpected:
            raise ValueError(f"the packed file holds tensors this model does not have: {unexpected[:5]}")
        if self.plan.activations is not None:  # inputs quantized with the stored calibrated ranges
            quantize_inputs_(model, self.activations, self.plan.activations)
        return model


def packed_bytes(engine: Engine, plan: Plan, model_name: str = "", data: EvalData | None = None) -> bytes:
    """The packed file's bytes (for a download); `data` calibrates activations when the plan
    quantizes them."""
    from safetensors.torch import save

    tensors, metadata = _contents(engine, plan, model_name, data)
    return save(tensors, metadata=metadata)


def save_packed(engine: Engine, plan: Plan, path: str | Path, model_name: str = "",
                data: EvalData | None = None) -> PackedInfo:
    """Write the packed file atomically; returns its sizes.

    Raises:
        ValueError: a layer the format cannot hold (1-bit weights that are exactly zero), or a
            plan that quantizes activations without `data` to calibrate them.
    """
    data = packed_bytes(engine, plan, model_name, data)
    size = write_atomic(path, data)
    header = 8 + struct.unpack("<Q", data[:8])[0]
    return PackedInfo(str(path), size, size - header, header)


def header_bound(engine: Engine, plan: Plan, model_name: str = "") -> int:
    """Most bytes the header of `save_packed(engine, plan)` can take (the file is size_bytes + header).

    8 bytes of length, 1 KiB of fixed JSON, the plan JSON twice over (quotes are escaped in the
    metadata), per layer 640 bytes + 3x its name + a quarter byte per output channel (the
    kept-filter list), per other tensor 128 bytes + 2x its key.

    >>> from torch import nn
    >>> from lightviz.core.engine import uniform_plan
    >>> engine = Engine(nn.Sequential(nn.Linear(4, 2)))
    >>> header = len(packed_bytes(engine, uniform_plan(8))) - engine.size_bytes(uniform_plan(8))
    >>> header, header_bound(engine, uniform_plan(8))
    (880, 2255)
    """
    bound = 8 + 1024 + 2 * len(plan.to_json()) + 2 * len(model_name)
    for layer in engine.layers:
        bound += 640 + 3 * len(layer.name) + layer.out_channels // 4
    folded = {layer.bn for layer in engine.layers if plan.fold_bn and layer.bn is not None}
    names = {f"{layer.name}.{part}" for layer in engine.layers for part in ("weight", "bias")}
    for key in engine.model.state_dict():
        if key not in names and not any(key.startswith(f"{bn}.") for bn in folded):
            bound += 128 + 2 * len(key)
    return bound


def load_packed(source: str | Path | bytes) -> PackedModel:
    """Read a packed file (a path or its bytes) and rebuild every layer.

    Raises:
        ValueError: not a lightviz packed file, truncated, or damaged (one line says which).
        OSError: the file cannot be read.
    """
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    where = "the packed data" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        return _load(bytes(data))
    except ValueError as error:
        raise ValueError(f"{where} is not a valid lightviz packed file: {error}") from None


# --- writing ----------------------------------------------------------------------------------


def _contents(engine: Engine, plan: Plan, model_name: str,
              data: EvalData | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    codes = layer_codes(engine, plan)
    tensors, layouts = {}, []
    for name, item in codes.items():
        blob, layout = encode_layer(item)
        tensors[LAYER_PREFIX + name] = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else \
            torch.zeros(0, dtype=torch.uint8)
        layouts.append(layout)
    folded = {layer.name: layer.bn for layer in engine.layers if plan.fold_bn and layer.bn is not None}
    state = engine.model.state_dict()
    covered = {key for item in codes.values() for key in (item.layer.weight_key, item.layer.bias_key)}
    covered |= {f"{alias}.weight" for item in codes.values() for alias in item.layer.tied}  # stored once
    covered |= {key for bn in folded.values() for key in state if key.startswith(f"{bn}.")}
    for key, value in state.items():
        if key not in covered:
            tensors[STATE_PREFIX + key] = value.detach().clone().contiguous()
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    expected = engine.size_bytes(plan)
    if size != expected:
        raise RuntimeError(f"packed {size} bytes of tensors, the plan's size is {expected}; "
                           "this is a bug in lightviz, please report it")
    metadata = {"format": FORMAT, "plan": plan.to_json(), "model": model_name, "layers": json.dumps(layouts),
                "folded": json.dumps(folded), "size_bytes": str(size), "sha256": _digest(tensors)}
    if plan.activations is not None:
        if data is None:
            raise ValueError("the plan quantizes activations: give evaluation data to calibrate their ranges "
                             "(save_packed(..., data=...))")
        ranges = engine.activation_qparams(plan, data)
        metadata["activations"] = json.dumps({name: [item.scale, item.zero_point, item.lo, item.hi]
                                              for name, item in ranges.items()})
    return tensors, metadata


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- reading ----------------------------------------------------------------------------------


def _load(data: bytes) -> PackedModel:
    header = _header(data)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"its header does not say format {FORMAT!r} (a plain safetensors state_dict "
                         "loads as a model file instead)")
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, RuntimeError, ValueError) as error:
        raise ValueError(f"its tensors cannot be read ({str(error).strip().splitlines()[0][:200]})") from None
    if _digest(tensors) != meta.get("sha256"):
        raise ValueError("its checksum does not match: the file was changed or damaged after it was written")
    try:
        plan = Plan.from_json(meta["plan"])
        layouts = json.loads(meta["layers"])
        folded = json.loads(meta.get("folded", "{}"))
        size_bytes = int(meta["size_bytes"])
        activations = {name: InputQParams(name, float(lo), float(hi), QParams(
            scale=torch.tensor([float(scale)], dtype=torch.float32),
            zero_point=torch.tensor([int(zero_point)], dtype=torch.int32)))
            for name, (scale, zero_point, lo, hi) in json.loads(meta.get("activations", "{}")).items()}
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
        raise ValueError(f"its metadata is damaged ({type(error).__name__}: {error})") from None
    layers = {}
    for layout in layouts:
        name = layout.get("name") if isinstance(layout, dict) else None
        blob = tensors.get(LAYER_PREFIX + str(name))
        if blob is None or blob.dtype != torch.uint8:
            raise ValueError(f"layer {name!r} has no packed bytes")
        try:
            weight, bias, parts = decode_layer(blob.numpy(), layout)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"layer {name!r} is damaged ({error})") from None
        layers[name] = PackedLayer(name, weight, bias, parts["quant"], layout["format"], blob.numel(),
                                   parts["codes"], parts["qparams"], parts["mask"])
    state = {key[len(STATE_PREFIX):]: value for key, value in tensors.items() if key.startswith(STATE_PREFIX)}
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    if stored != size_bytes:
        raise ValueError(f"it holds {stored} bytes of tensors; its header says {size_bytes}")
    header_bytes = len(data) - stored
    if plan.activations is not None and set(activations) != set(layers):
        raise ValueError("its plan quantizes activations but the calibrated ranges of some layers are missing")
    return PackedModel(plan, str(meta.get("model", "")), layers, state, dict(folded), size_bytes, header_bytes,
                       len(data), dict(meta), activations)


def _header(data: bytes) -> dict:
    if len(data) < 8:
        raise ValueError(f"it is {len(data)} bytes long, too short for a safetensors header (truncated?)")
    n = struct.unpack("<Q", data[:8])[0]
    if n > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ValueError("its header length runs past the end of the file (truncated or not safetensors)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("its header is not valid JSON (damaged or not safetensors)") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2]
    if ends and max(ends) != len(data) - 8 - n:
        raise ValueError(f"its tensors need {max(ends)} bytes after the header; the file has {len(data) - 8 - n} "
                         "(truncated or padded)")
    return header

