"""Write a file all at once or not at all: a temporary file next to the target, then a rename.

A failure half-way (a full disk, an error while building the content, Ctrl-C) leaves the
target as it was, never a half-written file.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_atomic(folder / "a.bin", b"abc"), sorted(p.name for p in folder.iterdir())
(3, ['a.bin'])
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | Callable[[Path], None]) -> int:
    """Write `data` (bytes, or a function that writes a given temporary path) to `path`.

    Returns:
        The size of the file written, in bytes.

    Raises:
        OSError: the folder does not exist or cannot be written; nothing is left behind.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise OSError(f"folder {path.parent} does not exist")
    if path.is_dir():
        raise OSError(f"{path} is a folder; give a file name")
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    temp_path = Path(temp)
    try:
        with os.fdopen(handle, "wb") as stream:
            if isinstance(data, (bytes, bytearray, memoryview)):
                stream.write(data)
        if callable(data):
            data(temp_path)
        os.chmod(temp_path, 0o644)  # mkstemp makes it private; an exported file is for sharing
        size = temp_path.stat().st_size
        os.replace(temp_path, path)
        return size
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
