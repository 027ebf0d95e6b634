"""Zip archives from users (.npz, zipped image folders), read as untrusted data.

Every failure is one ValueError that names the archive and says what is wrong; no byte count
the archive states is trusted:

| the archive holds                              | what happens                                      |
|------------------------------------------------|---------------------------------------------------|
| a directory of millions of entries             | refused from its end record, before parsing       |
| a member whose directory understates its size  | streamed, stopped at a hard cap on bytes read     |
| a bad CRC, a corrupt deflate stream, a cut     | "damaged", with zipfile's reason                  |
| the encrypted flag; bzip2, lzma or AES (99)    | refused, naming the method (zipfile inflates      |
|                                                | bzip2 and lzma without an output bound)           |
| an `.npy` header claiming more than its bytes  | refused before any array is allocated             |
| pickled (object) arrays                        | refused; nothing is unpickled                     |

>>> buffer = io.BytesIO()
>>> np.savez(buffer, x=np.arange(6, dtype=np.float32).reshape(2, 3))
>>> arrays, names = read_npz(buffer.getvalue(), "d.npz", keys=("x", "y"), limit=2**20)
>>> arrays["x"].shape, names
((2, 3), ['x'])
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from lightviz.io.safeload import check_memory, first_line, human_bytes

__all__ = ["MAX_MEMBERS", "ZipBudget", "open_zip", "read_member", "read_npz"]

MAX_MEMBERS = 100_000  # a zip's directory costs ~0.5 KB of memory per entry once parsed
MAX_DIRECTORY_BYTES = 16 * 2**20  # bounds the parse even when the entry count lies
READ_CHUNK = 2**20  # zipfile decompresses deflate at most this much per read
READABLE = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma", 99: "AES encryption (WinZip)"}
# What zipfile and zlib raise for a damaged or unsupported member.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError, OSError,
               ValueError, struct.error, KeyError)
_NPY_HEADER_MAX = 65_536 + 12  # magic, length and the header dict (numpy caps headers at 10,000 bytes by default)


class ZipBudget:
    """Bytes that reading members of one archive may still produce: a hard cap on bytes
    actually decompressed, shared by every member read through it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit


@contextmanager
def open_zip(source: bytes | io.BufferedIOBase, name: str, expected: str) -> Iterator[zipfile.ZipFile]:
    """`source` (bytes or a binary file) as a ZipFile, its directory size checked before parsing.

    Raises ValueError "<name> is damaged or truncated: expected <expected>" when it is no
    readable zip, and a ValueError naming the limit when its directory is too large.
    """
    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    entries, directory = _directory_size(f)
    if entries > MAX_MEMBERS or directory > MAX_DIRECTORY_BYTES:
        raise ValueError(f"{name} lists {entries:,} entries in a {human_bytes(directory)} directory; lightviz reads "
                         f"archives of at most {MAX_MEMBERS:,} files")
    try:
        f.seek(0)
        archive = zipfile.ZipFile(f)
    except _ZIP_ERRORS:
        raise ValueError(f"{name} is damaged or truncated: expected {expected}") from None
    with archive:
        yield archive


def _directory_size(f) -> tuple[int, int]:
    """(entries, central directory bytes) from the zip's end record; (0, 0) when there is none
    (zipfile then reports the file as no zip)."""
    try:
        f.seek(0, io.SEEK_END)
        size = f.tell()
        tail = min(size, 22 + 65_535 + 20 + 56)  # end record, its comment, the zip64 locator and record
        f.seek(size - tail)
        data = f.read(tail)
    except (OSError, ValueError):
        return 0, 0
    at = data.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(data):
        return 0, 0
    entries, directory = struct.unpack_from("<HI", data, at + 10)
    zip64 = data.rfind(b"PK\x06\x06", 0, at)
    if zip64 >= 0 and zip64 + 56 <= len(data):  # zip64: the real counts are 64-bit
        entries, directory = struct.unpack_from("<QQ", data, zip64 + 32)
    return entries, directory


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: ZipBudget) -> bytearray:
    """The member's bytes, streamed in chunks and stopped once `budget` is spent.

    The directory's sizes are not trusted: bytes are counted as they come out of the
    decompressor, so peak memory stays near what the member really holds, up to the budget.

    Raises:
        ValueError: encrypted, an unsupported compression, damaged (bad CRC, corrupt stream),
            or more bytes than the budget allows.
    """
    member = f"{name}: {info.filename}"
    if info.flag_bits & 0x1:
        raise ValueError(f"{member} is encrypted; lightviz reads only unencrypted archives")
    if info.compress_type not in READABLE:
        method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise ValueError(f"{member} is compressed with {method}, which lightviz does not read; "
                         "zip it again with the standard deflate compression")
    data, over = bytearray(), False
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(min(READ_CHUNK, budget.left + 1)):
                data += chunk
                if len(data) > budget.left:
                    over = True
                    break
    except _ZIP_ERRORS as error:
        raise ValueError(f"{member} is damaged ({first_line(error)}); the archive cannot be read") from None
    if over:
        raise ValueError(f"{member} unpacks to more than its archive may take ({human_bytes(budget.limit)} in all, "
                         f"the upload limit), whatever its directory says")
    budget.left -= len(data)
    return data


def read_npz(source: bytes | io.BufferedIOBase, name: str, keys: tuple[str, ...],
             limit: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """(the arrays named `keys` that an `.npz` holds, the names of all its arrays), as numpy.load
    would give them, without unpickling and with every size checked before allocating. Arrays
    not named in `keys` are never read.

    Raises:
        ValueError: not a zip, damaged, object arrays, a header that does not match its
            bytes, or more than `limit` bytes to unpack.
    """
    expected = "an .npz (numpy.savez) with arrays x and y"
    with open_zip(source, name, expected) as archive:
        infos = [info for info in archive.infolist() if info.filename.endswith(".npy")]
        wanted = [info for info in infos if info.filename[:-4] in keys]
        declared = sum(info.file_size for info in wanted)
        if declared > limit:
            raise ValueError(f"{name} unpacks to {human_bytes(declared)}, over the upload limit of "
                             f"{human_bytes(limit)}")
        check_memory(declared * 2, f"{name} ({human_bytes(declared)} unpacked)")  # the bytes, then float32 inputs
        budget = ZipBudget(limit)
        arrays = {info.filename[:-4]: _npy(read_member(archive, info, name, budget), f"{name}: {info.filename}")
                  for info in wanted}
    return arrays, [info.filename[:-4] for info in infos]


def _npy(data: bytearray, member: str) -> np.ndarray:
    """One `.npy` file's array, sharing `data`'s memory; ValueError unless its header fits its bytes."""
    head = io.BytesIO(bytes(data[:_NPY_HEADER_MAX]))
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} (only 1.0 and 2.0 hold plain arrays)")
    except (ValueError, EOFError, SyntaxError, TypeError) as error:
        raise ValueError(f"{member} is not a readable .npy array: {first_line(error)}") from None
    if dtype.hasobject:
        raise ValueError(f"{member} holds Python objects (pickled arrays), which lightviz never loads; "
                         "save plain numeric arrays")
    offset = head.tell()
    count = math.prod(shape)
    needed = count * dtype.itemsize
    if needed != len(data) - offset:
        raise ValueError(f"{member} is damaged: its header claims shape {shape} of {dtype} ({human_bytes(needed)}) "
                         f"but it holds {human_bytes(len(data) - offset)} of data")
    if count == 0:
        return np.empty(shape, dtype=dtype)
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)
