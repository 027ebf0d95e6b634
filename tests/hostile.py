"""Hostile inputs built at test time: zip archives with lying or broken members, npz files
with lying headers, deeply nested plan JSON, and a child-process runner that measures the
child's peak memory.

Archives are written byte by byte (local headers, central directory, end record), so every
field a reader might trust can be set to a lie.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import types
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEFECTS = ("bad-crc", "corrupt-deflate", "encrypted", "method-99")


@dataclass
class Member:
    """One zip member; every field a reader could trust can be overridden."""

    name: str
    data: bytes = b""  # the uncompressed content
    method: int = 8  # 0 stored, 8 deflate, anything else as given
    flags: int = 0
    crc: int | None = None  # default: the real CRC-32 of data
    declared_size: int | None = None  # default: len(data)
    compressed: bytes | None = None  # default: data, deflated when method is 8


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def zip_bytes(members: list[Member]) -> bytes:
    """A zip archive holding `members` exactly as described."""
    out, directory = io.BytesIO(), []
    for m in members:
        payload = m.compressed if m.compressed is not None else (deflate(m.data) if m.method == 8 else m.data)
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        size = len(m.data) if m.declared_size is None else m.declared_size
        name = m.name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, m.flags, m.method, 0, 0x21, crc, len(payload), size,
                              len(name), 0) + name)
        out.write(payload)
        directory.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, m.flags, m.method, 0, 0x21, crc,
                                     len(payload), size, len(name), 0, 0, 0, 0, 0, offset) + name)
    start = out.tell()
    out.write(b"".join(directory))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), out.tell() - start, start, 0))
    return out.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_npz_members() -> list[Member]:
    """x (4, 1, 8, 8) and y (4,) of an .npz digits-cnn accepts, as zip members."""
    x = np.linspace(0, 1, 4 * 64, dtype=np.float32).reshape(4, 1, 8, 8)
    return [Member("x.npy", npy_bytes(x)), Member("y.npy", npy_bytes(np.arange(4)))]


def image_zip_members() -> list[Member]:
    return [Member(f"{c}/{i}.png", png_bytes((40 * c, 20 * i, 90))) for c in range(3) for i in range(2)]


def broken(members: list[Member], defect: str) -> list[Member]:
    """`members` with the first one broken as `defect` says (see DEFECTS)."""
    first = members[0]
    if defect == "bad-crc":
        first.crc = zlib.crc32(first.data) ^ 0xFFFF
    elif defect == "corrupt-deflate":
        good = deflate(first.data)
        first.compressed = good[:3] + bytes(b ^ 0xA5 for b in good[3:40]) + good[40:]
    elif defect == "encrypted":
        first.flags |= 0x1
    elif defect == "method-99":  # WinZip AES
        first.method, first.compressed = 99, deflate(first.data)
    else:
        raise ValueError(defect)
    return members


def broken_archive(kind: str, defect: str) -> tuple[str, bytes]:
    """(file name, bytes) of a broken .npz or image .zip."""
    if kind == "npz":
        return f"{defect}.npz", zip_bytes(broken(digits_npz_members(), defect))
    return f"{defect}.zip", zip_bytes(broken(image_zip_members(), defect))


def huge_shape_npz() -> bytes:
    """An .npz whose x.npy header claims (10^12, 1, 8, 8) float32 (256 TB) over 64 real bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.float32))
    header["shape"] = (10**12, 1, 8, 8)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return zip_bytes([Member("x.npy", buffer.getvalue() + bytes(64), method=0)])


def understated_zip(real_bytes: int = 2**30, declared: int = 1000) -> bytes:
    """A zip of class-folder images whose first member's directory entry says `declared` bytes
    (and a CRC that will not match) while its deflate stream holds `real_bytes` of zeros:
    about 1 MB on disk per GiB. Built from one fully flushed 16 MiB block repeated, in a blink."""
    chunk = 2**24
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(bytes(chunk)) + packer.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, self-contained
    stream = block * (real_bytes // chunk) + packer.flush()
    return zip_bytes([Member("a/1.png", method=8, crc=zlib.crc32(bytes(declared)) ^ 1, declared_size=declared,
                             compressed=stream),
                      Member("b/2.png", png_bytes())])


def nested_json(depth: int = 100_000) -> str:
    """A plan whose `overrides` nests `depth` lists deep."""
    return '{"overrides": ' + "[" * depth + "]" * depth + "}"


def run_child(argv: list[str], timeout: float = 300, env: dict | None = None) -> tuple[int, str, str, int]:
    """(exit code, stdout, stderr, peak RSS in bytes) of `python -m lightviz *argv` run as a child.

    The peak comes from wait4's rusage for that child alone (Linux reports ru_maxrss in KiB).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "lightviz", *argv], stdout=out, stderr=err, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        _, status, usage = _wait4(proc.pid, timeout)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss * 1024


_MEASURE = """
import contextlib, io, json, resource, sys, warnings
warnings.simplefilter("always")  # any warning that escapes the CLI would show on its stderr
from lightviz.cli import main
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "peak": peak}), flush=True)
watched = ("lightviz.__main__", "lightviz.ui", "lightviz.ui.sidebar", "streamlit")
print(json.dumps({"imported": sorted(name for name in watched if name in sys.modules)}))
"""


def measure_cli_runs(runs: list[list[str]], timeout: float = 300) -> tuple[list[dict], list[str]]:
    """Run CLI commands one after another in one fresh child process (one torch import).

    Returns, for each command, its exit code, stdout, stderr and the child's peak RSS so far
    (bytes; peak RSS only grows, so what a command adds is its peak minus the one before), and
    which of lightviz.__main__, lightviz.ui, lightviz.ui.sidebar and streamlit the child had
    imported at the end (the CLI imports none of them).
    """
    proc = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(runs)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return lines[:-1], lines[-1]["imported"]


def module_pickle(module_name: str, path: Path) -> Path:
    """torch.save of a whole nn.Module whose class claims to live in `module_name` (importing
    that module is what a careless loader would do to check the class)."""
    import torch
    from torch import nn

    class X(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    X.__module__, X.__qualname__ = module_name, "X"
    fake = types.ModuleType(module_name)
    fake.X = X
    saved = sys.modules.get(module_name)
    sys.modules[module_name] = fake  # pickle looks the class up there by name
    try:
        torch.save(X(), path)
    finally:
        if saved is None:
            del sys.modules[module_name]
        else:
            sys.modules[module_name] = saved
    return path


def _wait4(pid: int, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return done, status, usage
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            return os.wait4(pid, 0)
        time.sleep(0.05)


def cli_one_line(capsys, argv: list[str]) -> str:
    """Run the CLI on `argv`: exit 2 with exactly one `lightviz: error:` line and no traceback."""
    from lightviz.cli import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("lightviz: error: ") and "Traceback" not in captured.err
    return captured.err
