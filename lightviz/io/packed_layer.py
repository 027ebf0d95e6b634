"""One layer of the packed lightviz file: its bytes, and the layer rebuilt from them.

A layer is one bit stream of exactly `SizeBreakdown.total_bytes` bytes (size.py's formats):

| field        | count                                   | width                     |
|--------------|-----------------------------------------|---------------------------|
| values       | stored weights (all, kept, or kept rows)| b bits (float: 32)        |
| index        | bitmask: n; n:m: n per full run of m    | 1; ceil(log2 m)           |
| scales       | quantization blocks stored              | 32 or 16 (`scale_dtype`)  |
| zero-points  | blocks (asymmetric only)                | b                         |
| bias         | bias values                             | 32 (float32)              |

Codes are stored as q - qmin (symmetric 1-bit: one bit, 1 for +1); float values and biases as
their float32 bit patterns, scales as the bit patterns of their storage type (float32, float16 or
bfloat16: the engine's scales are already rounded to it, so nothing is lost). Which filters a "filters removed" layer kept is layout
(`rows`, in the header), like the shapes.

>>> from torch import nn
>>> from lightviz.core.engine import Engine, uniform_plan
>>> from lightviz.io.codes import layer_codes
>>> item = layer_codes(Engine(nn.Sequential(nn.Linear(8, 2))), uniform_plan(4, sparsity=0.5))["0"]
>>> blob, layout = encode_layer(item)
>>> len(blob) == item.result.size.total_bytes, layout["format"]
(True, 'bitmask')
>>> torch.equal(decode_layer(np.frombuffer(blob, np.uint8), layout)[0], item.weight_hat)
True
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lightviz.core.layers import LayerInfo
from lightviz.core.quant import QParams, block_count, code_range, dequantize
from lightviz.core.specs import QuantSpec
from lightviz.io.bitpack import pack_fields, unpack_fields
from lightviz.io.codes import LayerCodes, row_blocks, rows_kept

FLOAT_BITS = 32


def encode_layer(item: LayerCodes) -> tuple[bytes, dict]:
    """(the layer's bytes, its layout for the header)."""
    layer, quant, size = item.layer, item.quant, item.result.size
    width = quant.bits or FLOAT_BITS
    stored = _stored_values(item)  # (C_out, K) order after moving the channel axis first
    layout = {"name": layer.name, "shape": list(layer.shape), "axis": layer.axis, "format": size.format,
              "quant": _quant_dict(quant), "bias": item.bias is not None}
    mask = _moved(item.mask, layer) if item.mask is not None else None
    fields: list[tuple[np.ndarray, int]] = []
    if size.format == "dense":
        values = stored.reshape(-1)
    elif size.format == "filters removed":
        kept = rows_kept(item.mask, layer)
        layout["rows"] = _hex_bits(kept)
        values = stored[kept].reshape(-1)
    else:
        values = stored[mask]
    fields.append((_value_field(values, item), width))
    if size.format == "bitmask":
        fields.append((mask.reshape(-1).numpy().astype(np.int64), 1))
    elif size.format == "n:m":
        prune = item.result.prune
        layout["m"], layout["n"] = prune.m, prune.n
        fields.append((_nm_index(mask, prune.m, prune.n), _index_width(prune.m)))
    if item.quantized:
        blocks = _stored_blocks(item, layout)
        fields.append(_scale_field(item.qparams.scale[blocks], quant))
        if quant.scheme == "asymmetric":
            fields.append((item.qparams.zero_point[blocks].numpy().astype(np.int64), width))
    if item.bias is not None:
        fields.append((_float_bits(item.bias), FLOAT_BITS))
    layout["fields"] = [[int(np.asarray(values).size), int(w)] for values, w in fields]
    blob = pack_fields(fields)
    if len(blob) != size.total_bytes:
        raise RuntimeError(f"layer {layer.name!r}: packed {len(blob)} bytes, the accounting says "
                           f"{size.total_bytes}; this is a bug in lightviz, please report it")
    return blob, layout


def decode_layer(blob: np.ndarray, layout: dict) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """(weight, bias, parts) rebuilt from a layer's bytes; parts holds codes, qparams and mask.

    Raises:
        ValueError: the bytes or the layout are inconsistent (a damaged file).
    """
    shape, axis, fmt = tuple(layout["shape"]), int(layout["axis"]), layout["format"]
    quant = QuantSpec(**layout["quant"])
    fields = [(int(count), int(w)) for count, w in layout["fields"]]
    parts = unpack_fields(blob, fields)
    rows = shape[axis] if shape else 1
    k = math.prod(shape) // max(rows, 1)
    values, rest = parts[0], parts[1:]
    mask = kept_rows = None
    if fmt == "dense":
        full = _need(values, rows * k, "values")
    elif fmt == "filters removed":
        kept_rows = _bits_from_hex(layout.get("rows", ""), rows)
        stored = _need(values, int(kept_rows.sum()) * k, "values").reshape(-1, k)
        full = np.zeros((rows, k), dtype=np.int64)
        full[kept_rows.numpy()] = stored
        full = full.reshape(-1)
        mask = np.repeat(kept_rows.numpy(), k)
    elif fmt == "bitmask":
        mask = rest.pop(0).astype(bool)
        mask = _need(mask, rows * k, "bitmask")
        full = np.zeros(rows * k, dtype=np.int64)
        full[mask] = _need(values, int(mask.sum()), "values")
    elif fmt == "n:m":
        mask = _nm_mask(rest.pop(0), rows, k, int(layout["m"]), int(layout["n"]))
        full = np.zeros(rows * k, dtype=np.int64)
        full[mask] = _need(values, int(mask.sum()), "values")
    else:
        raise ValueError(f"unknown storage format {fmt!r}")
    moved_shape = (rows, *[s for d, s in enumerate(shape) if d != axis])
    mask_t = None if mask is None else _unmove(torch.from_numpy(np.asarray(mask, dtype=bool)), moved_shape, axis)
    if quant.bits is None:
        weight = _unmove(torch.from_numpy(full.astype(np.uint32).view(np.float32).copy()), moved_shape, axis)
        codes = qparams = None
        if mask_t is not None:
            weight = weight * mask_t
    else:
        codes, qparams = _rebuild_codes(full, rest, quant, shape, axis, fmt, kept_rows, mask, moved_shape)
        weight = dequantize(codes, qparams, quant, axis)
    bias = None
    if layout.get("bias"):
        bias = torch.from_numpy(rest.pop().astype(np.uint32).view(np.float32).copy())
    return weight, bias, {"codes": codes, "qparams": qparams, "mask": mask_t, "quant": quant}


# --- encoding helpers -------------------------------------------------------------------------


def _moved(t: torch.Tensor, layer: LayerInfo) -> torch.Tensor:
    moved = t.movedim(layer.axis, 0)
    return moved.reshape(moved.shape[0], -1)


def _stored_values(item: LayerCodes) -> torch.Tensor:
    """(C_out, K) values as unsigned fields: codes - qmin, 1-bit signs, or float32 bits."""
    if not item.quantized:
        return _moved(item.weight_hat.detach().float().contiguous(), item.layer)
    return _moved(item.codes, item.layer)


def _value_field(values: torch.Tensor, item: LayerCodes) -> np.ndarray:
    if not item.quantized:
        return _float_bits(values)
    codes = values.numpy().astype(np.int64)
    if item.binary:
        if codes.size and not np.all(np.abs(codes) == 1):
            raise ValueError(f"layer {item.name!r}: 1-bit symmetric (binary) codes are -1 or +1, but some of its "
                             "weights are exactly 0 (pruned, or zero already) and are stored densely, which one bit "
                             "per weight cannot hold; use 2 bits, asymmetric 1-bit, or no pruning for this layer")
        return (codes > 0).astype(np.int64)
    return codes - item.qmin


def _float_bits(values: torch.Tensor) -> np.ndarray:
    return values.detach().float().contiguous().numpy().reshape(-1).view(np.uint32).astype(np.int64)


HALF_TYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _scale_field(scale: torch.Tensor, quant: QuantSpec) -> tuple[np.ndarray, int]:
    """Scales as the bit patterns of their storage type, and its width."""
    half = HALF_TYPES.get(quant.scale_dtype)
    if half is None:
        return _float_bits(scale), FLOAT_BITS
    stored = scale.detach().to(half)
    if not torch.equal(stored.float(), scale.float()):
        raise RuntimeError(f"scales are not {quant.scale_dtype} values; this is a bug in lightviz, please report it")
    return stored.view(torch.int16).numpy().reshape(-1).astype(np.int64) & 0xFFFF, 16


def _scales_from(bits: np.ndarray, quant: QuantSpec) -> torch.Tensor:
    """Float32 scales from their stored bit patterns (`_scale_field`'s inverse)."""
    half = HALF_TYPES.get(quant.scale_dtype)
    if half is None:
        return torch.from_numpy(bits.astype(np.uint32).view(np.float32).copy())
    return torch.from_numpy(bits.astype(np.uint16).view(np.int16).copy()).view(half).float()


def _index_width(m: int) -> int:
    return max(math.ceil(math.log2(m)), 1)


def _nm_index(mask: torch.Tensor, m: int, n: int) -> np.ndarray:
    """Positions (0..m-1) of the n kept weights of every full run of m, row by row."""
    rows, k = mask.shape
    runs = mask[:, : k // m * m].reshape(rows, -1, m)
    if runs.numel() and not bool((runs.sum(dim=2) == n).all()):
        raise RuntimeError("an n:m mask does not keep exactly n of every m; this is a bug in lightviz")
    position = torch.arange(m).expand_as(runs)
    return position[runs].numpy().astype(np.int64)


def _stored_blocks(item: LayerCodes, layout: dict) -> torch.Tensor:
    """Indices of the qparam blocks the file stores (all but those of removed filters)."""
    n_blocks = len(item.qparams)
    if item.result.size.format != "filters removed" or item.quant.granularity == "tensor":
        return torch.arange(n_blocks)
    kept = rows_kept(item.mask, item.layer)
    return row_blocks(kept, item.quant, item.layer.shape, item.layer.axis)


def _quant_dict(quant: QuantSpec) -> dict:
    out = {"bits": quant.bits, "scheme": quant.scheme, "granularity": quant.granularity,
           "group_size": quant.group_size, "range_method": quant.range_method, "percentile": quant.percentile}
    if quant.scale_dtype != "float32":  # absent at the default: files written before it existed read the same
        out["scale_dtype"] = quant.scale_dtype
    return out


def _hex_bits(kept: torch.Tensor) -> str:
    return np.packbits(kept.numpy().astype(np.uint8), bitorder="little").tobytes().hex()


# --- decoding helpers -------------------------------------------------------------------------


def _need(values: np.ndarray, count: int, what: str) -> np.ndarray:
    if len(values) != count:
        raise ValueError(f"{what}: expected {count}, found {len(values)}")
    return values


def _bits_from_hex(text: str, rows: int) -> torch.Tensor:
    try:
        raw = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    except ValueError:
        raise ValueError("the kept-filter list is not hexadecimal") from None
    bits = np.unpackbits(raw, bitorder="little")
    if len(raw) != -(-rows // 8) or bits[rows:].any():
        raise ValueError(f"the kept-filter list does not describe {rows} filters")
    return torch.from_numpy(bits[:rows].astype(bool))


def _nm_mask(index: np.ndarray, rows: int, k: int, m: int, n: int) -> np.ndarray:
    if not (1 <= n <= m and m >= 2):
        raise ValueError(f"n:m must have 1 <= n <= m; got {n}:{m}")
    runs = k // m
    index = _need(index, rows * runs * n, "n:m index")
    if index.size and (index.max() >= m or index.min() < 0):
        raise ValueError(f"n:m index holds positions outside 0..{m - 1}")
    mask = np.ones((rows, k), dtype=bool)
    run_mask = np.zeros((rows * runs, m), dtype=bool)
    run_mask[np.repeat(np.arange(rows * runs), n), index] = True
    if run_mask.sum() != index.size:
        raise ValueError("n:m index repeats a position within a run")
    mask[:, : runs * m] = run_mask.reshape(rows, runs * m)
    return mask.reshape(-1)


def _rebuild_codes(full: np.ndarray, rest: list, quant: QuantSpec, shape: tuple[int, ...], axis: int, fmt: str,
                   kept_rows: torch.Tensor | None, mask: np.ndarray | None,
                   moved_shape: tuple[int, ...]) -> tuple[torch.Tensor, QParams]:
    """Integer codes (weight's shape) and the full per-block qparams."""
    qmin, qmax = code_range(quant)
    n_blocks = block_count(shape, quant, axis)
    scale = torch.ones(n_blocks)
    zero_point = torch.zeros(n_blocks, dtype=torch.int32)
    blocks = torch.arange(n_blocks)
    if fmt == "filters removed" and quant.granularity != "tensor":
        blocks = row_blocks(kept_rows, quant, shape, axis)
    scales = rest.pop(0) if rest else np.zeros(0, dtype=np.int64)
    scale[blocks] = _scales_from(_need(scales, len(blocks), "scales"), quant)
    if not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
        raise ValueError("scales must be positive finite numbers")
    if quant.scheme == "asymmetric":
        zps = _need(rest.pop(0), len(blocks), "zero-points")
        zero_point[blocks] = torch.from_numpy(zps).to(torch.int32)
    binary = quant.bits == 1 and quant.scheme == "symmetric"
    codes = np.where(full > 0, 1, -1) if binary else full + qmin
    if mask is not None:  # positions not stored hold zero: the zero-point's code (0 for 1-bit)
        point = zero_point.numpy().astype(np.int64)
        codes = np.where(mask, codes, _zero_codes(point, quant, shape, axis))
    if codes.size and (codes.min() < qmin or codes.max() > qmax):
        raise ValueError(f"codes outside {qmin}..{qmax}")
    codes_t = _unmove(torch.from_numpy(codes.astype(np.int32)), moved_shape, axis)
    return codes_t, QParams(scale=scale, zero_point=zero_point)


def _zero_codes(zero_point: np.ndarray, quant: QuantSpec, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """The zero-point of every weight's block, flattened in (C_out, K) order."""
    if quant.scheme == "symmetric":
        return np.zeros(math.prod(shape), dtype=np.int64)
    ones = QParams(scale=torch.ones(len(zero_point)), zero_point=torch.from_numpy(zero_point).to(torch.int32))
    per_weight = -dequantize(torch.zeros(shape, dtype=torch.int32), ones, quant, axis)  # (0 - z) * 1
    return per_weight.movedim(axis, 0).reshape(-1).numpy().astype(np.int64)


def _unmove(flat: torch.Tensor, moved_shape: tuple[int, ...], axis: int) -> torch.Tensor:
    return flat.reshape(moved_shape).movedim(0, axis).contiguous()
