"""Read a user's file safely: size and memory limits first, then a format told from the
content, then deserialization that runs no code from the file.

| content                                     | read with                        | runs code from the file |
|---------------------------------------------|----------------------------------|-------------------------|
| `.safetensors`                              | safetensors                      | never                   |
| state_dict by `torch.save` (.pt, .pth, ...) | `torch.load(weights_only=True)`  | never                   |
| pickled module (`torch.save(model)`)        | refused; trusted: see below      | never                   |
| TorchScript archive (`torch.jit.save`)      | refused; trusted: `torch.jit.load` | yes, so opt-in only   |
| `torch.export` archive (`.pt2`)             | refused; trusted: `torch.export.load` | yes, so opt-in only |

The format comes from the file's first bytes and its zip directory (read without loading
anything), not from its name. Failures are ValueErrors with one sentence;
`UntrustedCodeError` when only running the file's code could load it.

`torch.load` always runs with `weights_only=True`. A trusted pickled module loads through
that same restricted unpickler, with exactly the classes it names allowed, once each is
checked to be an nn.Module from torch.nn, torchvision or lightviz (names found by reading the
pickle's opcodes, never by running them); any other class or function is refused, trusted
or not. A name from the file is never imported: it is looked up in modules already imported
(after lightviz imports the fixed packages of MODULE_SOURCES itself), and `__main__` modules
are never searched; so a file naming `lightviz.__main__.X` or `lightviz.ui.sidebar.X` cannot
make the loader run lightviz's CLI or import Streamlit code.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import pickletools
import re
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from lightviz.core.messages import first_line

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_ENV",
    "MEMORY_COPIES",
    "TRUST_HINT",
    "Source",
    "UntrustedCodeError",
    "available_memory_bytes",
    "check_memory",
    "first_line",
    "human_bytes",
    "load_object",
    "max_upload_bytes",
    "read_source",
    "short_list",
]

# The one place the upload limit is set; LIGHTVIZ_MAX_UPLOAD_MB overrides it (e.g. on a
# class server that should take less).
MAX_UPLOAD_BYTES = 500 * 2**20
MAX_UPLOAD_ENV = "LIGHTVIZ_MAX_UPLOAD_MB"
# A loaded model lives in memory about this many times over: the file's tensors while
# loading, the float model, and one compressed copy during evaluation.
MEMORY_COPIES = 3
TRUST_HINT = "loading it can run arbitrary code; pass --trust-code only for files you trust"
_NAMES_SHOWN = 4  # names listed per category in a report
MODULE_PACKAGES = ("torch.nn", "torchvision", "lightviz")  # a trusted pickled module may use their nn.Modules
# Imported by lightviz itself (fixed names, never from a file) before a pickled module's classes
# are looked up: every nn.Module class these define is then in an imported module.
MODULE_SOURCES = ("torch.nn", "torchvision.models", "torchvision.ops", "lightviz.io.zoo")
SAFE_HELPERS = ("functools.partial",)  # e.g. torchvision's norm_layer=partial(nn.LayerNorm, eps=1e-6)

Source = Union[str, os.PathLike, bytes, bytearray, memoryview]


class UntrustedCodeError(ValueError):
    """The file can only be loaded by running code stored in it, and trust_code is off."""


# --------------------------------------------------------------------------- limits


def max_upload_bytes() -> int:
    """The configured upload limit in bytes: MAX_UPLOAD_BYTES unless LIGHTVIZ_MAX_UPLOAD_MB is set."""
    text = os.environ.get(MAX_UPLOAD_ENV, "").strip()
    if not text:
        return MAX_UPLOAD_BYTES
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not megabytes > 0:
        raise ValueError(f"{MAX_UPLOAD_ENV} must be a positive number of megabytes; got {text!r}")
    return int(megabytes * 2**20)


def available_memory_bytes() -> int | None:
    """Memory the system can still give this process (MemAvailable), or None when unknown.

    Falls back to physical memory where /proc/meminfo is missing (not Linux).
    """
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(n_bytes: int, what: str) -> None:
    """Raise ValueError when `what` needs more than the available memory (where that is known)."""
    available = available_memory_bytes()
    if available is not None and n_bytes > available:
        raise ValueError(
            f"{what} needs about {human_bytes(n_bytes)} of memory but only {human_bytes(available)} is available; "
            "use a smaller model or a machine with more memory"
        )


def human_bytes(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} GiB"


# --------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class _File:
    """A model file, by path or as bytes, with its size known before anything is read."""

    name: str
    path: Path | None
    data: bytes | None
    size: int

    def open(self) -> io.BufferedIOBase:
        return io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")

    def head(self, n: int) -> bytes:
        if self.data is not None:
            return self.data[:n]
        with open(self.path, "rb") as f:
            return f.read(n)


def read_source(source: Source, filename: str | None, max_bytes: int | None, what: str) -> _File:
    """Check size and existence of a path or bytes; reads nothing of a path yet.

    Raises:
        FileNotFoundError: no file at the path.
        ValueError: a folder, an empty file, over `max_bytes`, or more than memory allows.
    """
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    if hasattr(source, "getvalue"):  # an in-memory upload (io.BytesIO, Streamlit's UploadedFile)
        filename = filename or getattr(source, "name", None)
        source = source.getvalue()
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        file = _File(name=filename or "upload", path=None, data=data, size=len(data))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"no such file: {path}")
        if path.is_dir():
            raise ValueError(f"{path} is a folder; expected a {what}")
        file = _File(name=filename or path.name, path=path, data=None, size=path.stat().st_size)
    else:
        raise ValueError(f"source must be a path or bytes; got {type(source).__name__}")
    if file.size > limit:
        raise ValueError(
            f"{file.name} is {human_bytes(file.size)}, over the upload limit of {human_bytes(limit)} "
            f"(set {MAX_UPLOAD_ENV} to change it)"
        )
    if file.size == 0:
        raise ValueError(f"{file.name} is empty (0 bytes); expected a {what}")
    check_memory(file.size * MEMORY_COPIES, f"{file.name} ({human_bytes(file.size)})")
    return file


def _sniff(file: _File) -> str:
    """The file's format from its content: 'safetensors', 'torch' (torch.save zip), 'pickle'
    (legacy torch.save), 'torchscript', 'export', 'damaged-zip', 'other-zip' or 'unknown'.

    Only the first bytes and the zip directory are read; nothing is unpickled.
    """
    head = file.head(16)
    if head[:4] == b"PK\x03\x04":
        try:
            with file.open() as f, zipfile.ZipFile(f) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return "damaged-zip"
        parts = [name.split("/") for name in names]
        # torch.jit.save: <root>/constants.pkl and <root>/code/__torch__/... hold the program.
        if any(p[-1] == "constants.pkl" and len(p) <= 2 or len(p) >= 3 and p[1] == "code" for p in parts):
            return "torchscript"
        if any(p[-1] == "archive_format" for p in parts):  # torch.export.save
            return "export"
        if any(p[-1] == "data.pkl" and len(p) <= 2 for p in parts):  # torch.save
            return "torch"
        return "other-zip"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 little-endian header size, JSON
        header_size = int.from_bytes(head[:8], "little")
        if 2 <= header_size <= file.size - 8:
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol 2+ opcode: the legacy torch.save format
        return "pickle"
    return "unknown"


def _expected(file: _File) -> str:
    suffix = Path(file.name).suffix.lower()
    if suffix == ".safetensors":
        return "a .safetensors file"
    if suffix == ".pt2":
        return "a torch.export .pt2 archive"
    return "a state_dict saved by torch.save (.pt, .pth) or a .safetensors file"


def load_object(file: _File, trust_code: bool) -> tuple[str, object]:
    """(format, loaded object) of a model file; the object is what the file holds: a mapping
    of tensors, or (trusted files only) an nn.Module, ScriptModule or ExportedProgram.

    format is "safetensors", "torch" or "pickle" (torch.save zip or legacy), "torchscript"
    or "export".
    """
    # torch warns about pickle protocols and deprecated TorchScript on stderr; our one-line
    # errors say what matters, and the CLI promises one line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _load_object_quietly(file, trust_code)


def _load_object_quietly(file: _File, trust_code: bool) -> tuple[str, object]:
    kind = _sniff(file)
    if kind == "safetensors":
        from safetensors.torch import load, load_file

        try:
            return kind, (load(file.data) if file.data is not None else load_file(str(file.path)))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{file.name} is not a valid safetensors file (truncated or damaged?): "
                             f"{first_line(error)}") from None
    if kind in ("torch", "pickle"):
        return kind, _torch_load(file, trust_code)
    if kind == "torchscript":
        if not trust_code:
            raise UntrustedCodeError(f"{file.name} is a TorchScript archive, a compiled program: {TRUST_HINT}")
        try:
            with file.open() as f:
                return kind, torch.jit.load(f, map_location="cpu")
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"{file.name}: could not load the TorchScript archive: {first_line(error)}") from None
    if kind == "export":
        if not trust_code:
            raise UntrustedCodeError(f"{file.name} is a torch.export archive (.pt2), a compiled program: {TRUST_HINT}")
        try:
            with file.open() as f:
                return kind, torch.export.load(f)
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"{file.name}: could not load the torch.export archive: {first_line(error)}") from None
    if kind == "damaged-zip":
        raise ValueError(f"{file.name} is damaged or truncated (not a complete zip archive); expected {_expected(file)}")
    if kind == "other-zip":
        raise ValueError(f"{file.name} is a zip archive but not a PyTorch checkpoint; expected {_expected(file)}")
    raise ValueError(f"{file.name} is not a model file lightviz can read (unrecognized content); "
                     f"expected {_expected(file)}")


def _torch_load(file: _File, trust_code: bool) -> object:
    """torch.load with weights_only=True; with trust_code, retried unrestricted when refused."""
    try:
        with file.open() as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        code = found.group(1) if found else _pickled_global(file)
        if code is None:
            raise ValueError(f"{file.name} is damaged or truncated: expected {_expected(file)}") from None
        if not trust_code:
            raise UntrustedCodeError(
                f"{file.name} holds a pickled Python object ({code}), not only tensors: {TRUST_HINT}"
            ) from None
    except Exception:  # noqa: BLE001 - any reader error means the bytes are not a checkpoint
        raise ValueError(f"{file.name} is damaged or truncated: expected {_expected(file)}") from None
    allowed = _module_classes(file)
    try:  # trusted by the caller, and still only the checked classes are constructed
        with torch.serialization.safe_globals(allowed), file.open() as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{file.name}: could not load the pickled module: {first_line(error)}") from None


def _module_classes(file: _File) -> list[object]:
    """The classes and helpers a pickled module names, each checked: an nn.Module subclass
    from MODULE_PACKAGES, or one of SAFE_HELPERS. ValueError naming the others.

    Names are looked up in modules already imported, never imported (see `_checked_global`).
    """
    try:
        with file.open() as f:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except Exception:  # noqa: BLE001 - the legacy (pre-zip) format has no readable listing
        raise ValueError(f"{file.name} is a pickled object in torch's legacy format; save model.state_dict() "
                         "instead and pick its architecture") from None
    allowed, refused = [], []
    for name in names:
        found = _checked_global(name)
        (allowed if found is not None else refused).append(found if found is not None else name)
    if refused:
        raise ValueError(
            f"{file.name} pickles names lightviz will not construct ({short_list(refused)}): a pickled module "
            f"loads only when its classes come from {', '.join(MODULE_PACKAGES)}. Save model.state_dict() and "
            "pick its architecture, or export TorchScript or torch.export (.pt2)")
    return allowed


def _checked_global(name: str) -> object | None:
    """The class or helper `name` (module.attr, from the file) refers to, or None when it is not
    an allowed one. The module is looked up in sys.modules, never imported: importing a name
    from a file runs that module's top-level code (lightviz.__main__ would run the CLI)."""
    module_name, _, attr = name.rpartition(".")
    if name not in SAFE_HELPERS and not any(module_name == package or module_name.startswith(package + ".")
                                            for package in MODULE_PACKAGES):
        return None
    if "__main__" in module_name.split("."):
        return None
    for source in MODULE_SOURCES:  # fixed names: these define every class a module may use
        importlib.import_module(source)
    module = sys.modules.get(module_name)
    found = getattr(module, attr, None) if module is not None else None
    if name in SAFE_HELPERS or (isinstance(found, type) and issubclass(found, torch.nn.Module)):
        return found
    return None


def _pickled_global(file: _File) -> str | None:
    """The first non-torch Python name a bare or legacy pickle refers to, found by reading its
    opcodes (pickletools.genops parses, it never executes); None when there is none.

    torch's weights-only reader stops at opcodes it does not know (protocol 4's STACK_GLOBAL)
    before naming what the pickle wanted; this names it for the message.
    """
    if file.head(4) == b"PK\x03\x04":
        return None
    data = file.data if file.data is not None else file.path.read_bytes()
    stream, strings = io.BytesIO(data), []
    try:
        while stream.tell() < len(data):  # legacy torch.save is several pickles in a row
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    name = str(arg).replace(" ", ".")
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    name = ".".join(strings[-2:])
                else:
                    if isinstance(arg, str):
                        strings.append(arg)
                    continue
                if not name.startswith(("torch.", "collections.")):
                    return name
    except Exception:  # noqa: BLE001 - raw storage bytes after the pickles, or damage: stop reading
        pass
    return None


def short_list(items: list[str]) -> str:
    """The first few items, comma-separated, and how many more there are."""
    shown = ", ".join(items[:_NAMES_SHOWN])
    return shown + (f" and {len(items) - _NAMES_SHOWN} more" if len(items) > _NAMES_SHOWN else "")
