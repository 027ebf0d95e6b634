"""Unsigned fields of any width from 1 to 32 bits, packed end to end into bytes and back.

Fields are written least significant bit first, the first field at bit 0 of byte 0 (the
order of numpy's `packbits(bitorder="little")`); only the very end is padded to a byte. So
n codes of b bits take exactly ceil(n * b / 8) bytes, as the size accounting counts them.

>>> blob = pack_fields([(np.array([1, 2, 3]), 2), (np.array([5]), 3)])
>>> len(blob), [a.tolist() for a in unpack_fields(blob, [(3, 2), (1, 3)])]
(2, [[1, 2, 3], [5]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_WIDTH = 32


def field_bits(fields: Sequence[tuple[int, int]]) -> int:
    """Total bits of (count, width) fields."""
    return sum(count * width for count, width in fields)


def pack_fields(fields: Sequence[tuple[np.ndarray, int]]) -> bytes:
    """Pack (values, width) fields end to end; values must be integers in [0, 2^width).

    Raises:
        ValueError: a width outside 1..32, or a value that does not fit its width.
    """
    out = bytearray()
    pending = np.zeros(0, dtype=np.uint8)  # fewer than 8 bits not yet written
    for values, width in fields:
        values = np.asarray(values).reshape(-1)
        _check(values, width)
        if not len(pending) and width in (8, 16, 32):  # byte-aligned: the values' own bytes
            out += values.astype(f"<u{width // 8}").tobytes()
            continue
        bits = np.concatenate([pending, _to_bits(values, width)])
        whole = len(bits) // 8 * 8
        out += np.packbits(bits[:whole], bitorder="little").tobytes()
        pending = bits[whole:]
    if len(pending):
        out += np.packbits(pending, bitorder="little").tobytes()
    return bytes(out)


def unpack_fields(blob: bytes | np.ndarray, fields: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """The (count, width) fields packed in `blob`, as int64 arrays.

    Raises:
        ValueError: the blob is not exactly ceil(total bits / 8) bytes long.
    """
    data = np.frombuffer(blob, dtype=np.uint8) if isinstance(blob, (bytes, bytearray, memoryview)) else blob
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    total = field_bits(fields)
    if len(data) != -(-total // 8):
        raise ValueError(f"expected {-(-total // 8)} bytes for {total} bits; found {len(data)}")
    out, offset = [], 0
    for count, width in fields:
        if not 1 <= width <= MAX_WIDTH:
            raise ValueError(f"field width must be from 1 to {MAX_WIDTH} bits; got {width}")
        if offset % 8 == 0 and width in (8, 16, 32):
            start = offset // 8
            raw = data[start:start + count * width // 8].tobytes()
            out.append(np.frombuffer(raw, dtype=f"<u{width // 8}").astype(np.int64))
        else:
            first = offset // 8
            last = -(-(offset + count * width) // 8)
            bits = np.unpackbits(data[first:last], bitorder="little")
            bits = bits[offset - first * 8: offset - first * 8 + count * width].reshape(count, width)
            out.append(_from_bits(bits, width))
        offset += count * width
    return out


def _check(values: np.ndarray, width: int) -> None:
    if not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"field width must be from 1 to {MAX_WIDTH} bits; got {width}")
    if values.size and (values.min() < 0 or int(values.max()) >= 1 << width):
        raise ValueError(f"values {int(values.min())}..{int(values.max())} do not fit {width} bits")


def _to_bits(values: np.ndarray, width: int) -> np.ndarray:
    """(n * width,) uint8 bits, least significant first within each value."""
    nbytes = _bytes_for(width)
    raw = values.astype(f"<u{nbytes}").view(np.uint8).reshape(-1, nbytes)
    return np.unpackbits(raw, axis=1, bitorder="little")[:, :width].reshape(-1)


def _from_bits(bits: np.ndarray, width: int) -> np.ndarray:
    """(count, width) bits -> (count,) int64 values."""
    nbytes = _bytes_for(width)
    padded = np.zeros((bits.shape[0], nbytes * 8), dtype=np.uint8)
    padded[:, :width] = bits
    packed = np.ascontiguousarray(np.packbits(padded, axis=1, bitorder="little"))
    return packed.view(f"<u{nbytes}").reshape(-1).astype(np.int64)


def _bytes_for(width: int) -> int:
    return 1 if width <= 8 else 2 if width <= 16 else 4
