"""Load a user's model file safely: weights are data, never code.

| file                                        | loaded with                      | runs code from the file |
|---------------------------------------------|----------------------------------|-------------------------|
| `.safetensors`                              | safetensors                      | never                   |
| state_dict by `torch.save` (.pt, .pth, ...) | `torch.load(weights_only=True)`  | never                   |
| pickled whole module (`torch.save(model)`)  | refused; trusted: `torch.load`   | yes, so opt-in only     |
| TorchScript archive (`torch.jit.save`)      | refused; trusted: `torch.jit.load` | yes, so opt-in only   |
| `torch.export` archive (`.pt2`)             | refused; trusted: `torch.export.load` | yes, so opt-in only |

The format is recognized from the file's first bytes and its zip directory (read without
loading anything), not from its name. A state_dict goes into a named architecture (a sample
model or any torchvision classifier) whose class count is read off the weights; the
architecture is first built on the meta device, so a file that does not fit is reported
(missing, unexpected and mis-shaped tensors) before any memory is spent on the model.

Every failure is a ValueError (`UntrustedCodeError` when only running the file's code could
load it) with one readable sentence; nothing is cached here, so a failed load leaves whatever
the caller loaded before untouched.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Union

import torch
from torch import nn

from lightviz import zoo
from lightviz.layers import COMPRESSIBLE, CONVS, find_layers

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_ENV",
    "MODEL_SUFFIXES",
    "TRUST_HINT",
    "UntrustedCodeError",
    "available_memory_bytes",
    "check_memory",
    "load_pretrained",
    "load_user_model",
    "max_upload_bytes",
]

# The one place the upload limit is set; LIGHTVIZ_MAX_UPLOAD_MB overrides it (e.g. on a
# class server that should take less).
MAX_UPLOAD_BYTES = 500 * 2**20
MAX_UPLOAD_ENV = "LIGHTVIZ_MAX_UPLOAD_MB"
# A loaded model lives in memory about this many times over: the file's tensors while
# loading, the float model, and one compressed copy during evaluation.
MEMORY_COPIES = 3
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".pt2", ".bin", ".ckpt")  # how the CLI tells a file from a name
TRUST_HINT = "loading it can run arbitrary code; pass --trust-code only for files you trust"
_NAMES_SHOWN = 4  # names listed per category in a mismatch report

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
            f"{what} needs about {_human(n_bytes)} of memory but only {_human(available)} is available; "
            "use a smaller model or a machine with more memory"
        )


def _human(n_bytes: float) -> str:
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
            f"{file.name} is {_human(file.size)}, over the upload limit of {_human(limit)} "
            f"(set {MAX_UPLOAD_ENV} to change it)"
        )
    if file.size == 0:
        raise ValueError(f"{file.name} is empty (0 bytes); expected a {what}")
    check_memory(file.size * MEMORY_COPIES, f"{file.name} ({_human(file.size)})")
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _load_object(file: _File, trust_code: bool) -> tuple[str, object]:
    """(format, loaded object): a mapping of tensors, or an nn.Module from trusted files."""
    kind = _sniff(file)
    if kind == "safetensors":
        from safetensors.torch import load, load_file

        try:
            return kind, (load(file.data) if file.data is not None else load_file(str(file.path)))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{file.name} is not a valid safetensors file (truncated or damaged?): "
                             f"{_first_line(error)}") from None
    if kind in ("torch", "pickle"):
        return kind, _torch_load(file, trust_code)
    if kind == "torchscript":
        if not trust_code:
            raise UntrustedCodeError(f"{file.name} is a TorchScript archive, a compiled program: {TRUST_HINT}")
        try:
            with file.open() as f:
                return kind, torch.jit.load(f, map_location="cpu")
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"{file.name}: could not load the TorchScript archive: {_first_line(error)}") from None
    if kind == "export":
        if not trust_code:
            raise UntrustedCodeError(f"{file.name} is a torch.export archive (.pt2), a compiled program: {TRUST_HINT}")
        try:
            with file.open() as f:
                return kind, torch.export.load(f)
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"{file.name}: could not load the torch.export archive: {_first_line(error)}") from None
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
    try:  # trusted by the caller: this runs whatever the pickle says
        with file.open() as f:
            return torch.load(f, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{file.name}: could not load the pickled object: {_first_line(error)}") from None


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


# --------------------------------------------------------------------------- state dicts

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")  # training checkpoints
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")  # DataParallel/DDP, torch.compile, Lightning
_IGNORED_PREFIXES = {"inception_v3": ("AuxLogits.",), "googlenet": ("aux1.", "aux2.")}  # built without aux heads
# Old torchvision DenseNet checkpoints name "norm.1" what the module calls "norm1".
_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _state_dict_of(obj: object, name: str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint, unwrapped from training dicts and wrapper prefixes."""
    for _ in range(3):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        nested = next((obj[key] for key in _NESTED_KEYS if isinstance(obj.get(key), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping):
        raise ValueError(f"{name} holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)")
    state = {str(key): value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    if not state:
        raise ValueError(f"{name} holds no tensors; expected a state_dict (names to tensors), "
                         f"found keys {_names(list(map(str, obj)))}")
    for prefix in _WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _check_finite(state: Mapping[str, torch.Tensor], name: str) -> None:
    bad = []
    for key, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            n_nan, n_inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
            if n_nan or n_inf:
                what = ", ".join(f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "Inf")) if n)
                bad.append(f"{key} ({what})")
    if bad:
        raise ValueError(f"{name} has NaN or Inf weights in {len(bad)} tensor(s): {_names(bad)}; "
                         "such a model cannot be compressed or evaluated")


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_NAMES_SHOWN])
    return shown + (f" and {len(items) - _NAMES_SHOWN} more" if len(items) > _NAMES_SHOWN else "")


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """'' when `state` fits `expected` key for key and shape for shape; else a short report."""
    missing = [key for key in expected if key not in state and not key.endswith(".num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    misshaped = [f"{key} (file {_shape(state[key].shape)} vs model {_shape(expected[key].shape)})"
                 for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    parts = [f"{label} ({len(items)}): {_names(items)}"
             for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
             if items]
    return "; ".join(parts)


def _build_shell(arch: str, num_classes: int, **kwargs: object) -> nn.Module:
    """The architecture on the meta device (no memory, no init), or on the CPU where the
    architecture cannot be built on meta (a few compute sizes from tensor values)."""
    try:
        with torch.device("meta"):
            return zoo.build_architecture(arch, num_classes, **kwargs)
    except Exception:  # noqa: BLE001 - fall back to a real, seeded build
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return zoo.build_architecture(arch, num_classes, **kwargs)


def _head_key(model: nn.Module, num_classes: int) -> str | None:
    """The weight whose dim 0 is the class count: the last Linear's, or (SqueezeNet) the last
    conv with `num_classes` outputs."""
    modules = list(model.named_modules())
    for name, module in reversed(modules):
        if isinstance(module, nn.Linear):
            return f"{name}.weight"
    for name, module in reversed(modules):
        if isinstance(module, CONVS) and module.out_channels == num_classes:
            return f"{name}.weight"
    return None


def _fit_architecture(state: dict[str, torch.Tensor], arch: str, name: str,
                      build_kwargs: Mapping[str, object]) -> tuple[nn.Module, int]:
    """(float model, class count): `arch` with `state` loaded, class count read off the weights."""
    if arch.startswith("densenet"):
        state = {(_DENSENET_KEY.sub(r"\1\2", key)): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith(_IGNORED_PREFIXES.get(arch, ()))}
    default = zoo.default_num_classes(arch)
    shell = _build_shell(arch, default, **build_kwargs)
    head = _head_key(shell, default)
    num_classes = default
    if head in state and state[head].dim() == shell.state_dict()[head].dim() and state[head].shape[0] >= 1:
        num_classes = int(state[head].shape[0])
    if num_classes != default:
        shell = _build_shell(arch, num_classes, **build_kwargs)
    expected = shell.state_dict()
    report = _mismatch(expected, state)
    if report:
        hint = (f"none of its {len(state)} tensor names is one {arch} uses; is the architecture right?"
                if not set(state) & set(expected) else "is the architecture right?")
        raise ValueError(f"{name} does not fit {arch}: {report}; {hint}")
    n_bytes = sum(t.numel() * 4 for t in expected.values())
    check_memory(n_bytes * (MEMORY_COPIES - 1), f"{arch} ({_human(n_bytes)} of float32 weights)")
    on_meta = any(t.is_meta for t in shell.parameters())
    try:
        # assign=True adopts the file's tensors as the parameters: no second copy in memory.
        shell.load_state_dict(state, strict=True, assign=on_meta)
        if on_meta and any(t.is_meta for t in [*shell.parameters(), *shell.buffers()]):
            shell = _build_shell_on_cpu(arch, num_classes, build_kwargs)  # non-persistent buffers
            shell.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{name} does not fit {arch}: {_first_line(error)}") from None
    return shell.float().eval(), num_classes


def _build_shell_on_cpu(arch: str, num_classes: int, build_kwargs: Mapping[str, object]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return zoo.build_architecture(arch, num_classes, **build_kwargs)


# --------------------------------------------------------------------------- bundles


def _probe(model: nn.Module, input_shape: tuple[int, ...], name: str) -> int:
    """Run one zero input through the model; the number of classes it outputs."""
    try:
        with torch.inference_mode():
            out = model(torch.zeros((1, *input_shape)))
    except Exception as error:  # noqa: BLE001 - the model's own error, reported in one line
        raise ValueError(f"{name} rejects inputs of shape {tuple(input_shape)}: {_first_line(error)}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return logits of shape (batch, classes); got {got}")
    return int(out.shape[1])


def _check_input_shape(input_shape: object) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive integers (without batch); "
                         f"got {input_shape!r}")
    return shape


def _guess_input_shape(model: nn.Module, name: str) -> tuple[int, ...]:
    """(in_features,) when the first compressible layer is Linear; otherwise ask the user."""
    first = next(module for module in model.modules() if isinstance(module, COMPRESSIBLE))
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ValueError(f"{name}: the input shape of a model whose first layer is {type(first).__name__} "
                     "cannot be inferred; pass input_shape (CLI: --input-shape C,H,W)")


def load_user_model(source: Source, filename: str | None = None, arch: str | None = None, *,
                    trust_code: bool = False, input_shape: tuple[int, ...] | None = None,
                    max_bytes: int | None = None) -> zoo.ModelBundle:
    """A user's model file as a ModelBundle (kind "user"), loaded without running its code.

    Args:
        source: a path, or the file's bytes (an upload).
        filename: the name to report and to read the extension from (default: the path's).
        arch: the architecture a state_dict is for: a sample model name or a torchvision
            classification architecture (`zoo.list_architectures()`). Not needed for a
            trusted pickled module.
        trust_code: allow formats that run code from the file (pickled modules, TorchScript,
            .pt2). Off by default; only for files the user trusts.
        input_shape: shape of one input without batch; default: the architecture's, or for a
            trusted module (in_features,) of its first Linear.
        max_bytes: size limit checked before reading (default `max_upload_bytes()`).

    Raises:
        FileNotFoundError: no file at the path.
        UntrustedCodeError: the file needs its code run and trust_code is False.
        ValueError: anything else wrong with the file, with one sentence saying what.

    >>> import tempfile, safetensors.torch
    >>> path = Path(tempfile.mkdtemp()) / "mlp.safetensors"
    >>> safetensors.torch.save_file(zoo.build_architecture("digits-mlp", 3).state_dict(), path)
    >>> bundle = load_user_model(path, arch="digits-mlp")
    >>> bundle.kind, bundle.num_classes, bundle.input_shape
    ('user', 3, (1, 8, 8))
    """
    if arch is not None:
        zoo.architecture_input_shape(arch)  # validates the name before reading anything
    input_shape = _check_input_shape(input_shape)
    file = read_source(source, filename, max_bytes, "model file")
    return _bundle_from_file(file, arch, trust_code, input_shape, {})


def _bundle_from_file(file: _File, arch: str | None, trust_code: bool,
                      input_shape: tuple[int, ...] | None, build_kwargs: Mapping[str, object]) -> zoo.ModelBundle:
    kind, obj = _load_object(file, trust_code)
    if kind in ("torchscript", "export"):
        if arch is None:
            raise ValueError(f"{file.name} is a compiled program whose layers are not modules lightviz can "
                             "compress; name the architecture its weights fit (arch, CLI: --arch NAME)")
        obj = obj.state_dict() if kind == "torchscript" else dict(obj.state_dict)
    if isinstance(obj, nn.Module) and arch is None:
        return _bundle_from_module(obj, file.name, input_shape)
    if isinstance(obj, nn.Module):  # a trusted module with an architecture named: use its weights
        obj = obj.state_dict()
    state = _state_dict_of(obj, file.name)
    _check_finite(state, file.name)
    if arch is None:
        raise ValueError(f"{file.name} holds weights only (a state_dict): name its architecture with arch "
                         "(CLI: --arch NAME), a sample model or a torchvision classifier such as resnet18")
    model, num_classes = _fit_architecture(state, arch, file.name, build_kwargs)
    shape = input_shape or zoo.architecture_input_shape(arch)
    if input_shape is not None:  # the architecture's own shape fits by construction
        num_classes = _probe(model, shape, f"{arch} from {file.name}")
    n_params = sum(p.numel() for p in model.parameters())
    digits = arch in zoo.SAMPLE_MODELS and num_classes == len(zoo.DIGITS_CLASSES)
    return zoo.ModelBundle(
        name=f"{file.name} ({arch})",
        model=model,
        input_shape=shape,
        num_classes=num_classes,
        class_names=zoo.architecture_class_names(arch, num_classes),
        dataset="digits" if digits else None,
        kind="user",
        description=f"{arch} with weights from {file.name}: {n_params:,} parameters, {num_classes} classes, "
                    f"input {_shape(shape)}",
        note=("your weights; without your own data, accuracy is measured on the digits held-out test split"
              if digits else
              "your weights; without your own data only fidelity to the float model (agreement, KL) on "
              "generated inputs is measurable"),
    )


def _bundle_from_module(model: nn.Module, name: str, input_shape: tuple[int, ...] | None) -> zoo.ModelBundle:
    """A trusted, unpickled nn.Module used as it is."""
    model = model.float().eval()  # the object was created by this load: ours to change
    _check_finite(model.state_dict(), name)
    try:
        find_layers(model)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    shape = input_shape or _guess_input_shape(model, name)
    num_classes = _probe(model, shape, name)
    n_params = sum(p.numel() for p in model.parameters())
    return zoo.ModelBundle(
        name=name,
        model=model,
        input_shape=shape,
        num_classes=num_classes,
        class_names=tuple(f"class {i}" for i in range(num_classes)),
        dataset=None,
        kind="user",
        description=f"{type(model).__name__} from {name} (trusted pickled module): {n_params:,} parameters, "
                    f"{num_classes} classes, input {_shape(shape)}",
        note="your model; without your own data only fidelity to the float model (agreement, KL) "
             "on generated inputs is measurable",
    )


# --------------------------------------------------------------------------- pretrained


def pretrained_weights_path(arch: str) -> tuple[Path, str]:
    """(where torchvision caches `arch`'s default pretrained weights, their download URL)."""
    import torchvision
    from urllib.parse import urlparse

    if arch not in zoo.list_torchvision_models():
        raise ValueError(f"pretrained weights exist only for torchvision architectures; got {arch!r} "
                         "(see list_torchvision_models())")
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename, weights.url


def load_pretrained(arch: str, *, max_bytes: int | None = None) -> zoo.ModelBundle:
    """torchvision's default pretrained weights for `arch`, from the local torch hub cache.

    Nothing is downloaded: lightviz runs offline. When the file is not cached the message says
    how to supply it instead (`--model path/to/file.pth --arch ARCH`).
    """
    import torchvision

    path, url = pretrained_weights_path(arch)
    if not path.is_file():
        raise ValueError(
            f"pretrained weights for {arch} are not in the local torch cache ({path}) and lightviz never "
            f"downloads: fetch {url} on a machine with internet, then pass the file with "
            f"--model path/to/{path.name} --arch {arch} (or copy it to {path.parent})"
        )
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    transforms = weights.transforms()
    size = int(transforms.crop_size[0])
    build_kwargs = {"transform_input": True} if arch in ("inception_v3", "googlenet") else {}
    file = read_source(path, None, max_bytes, "model file")
    bundle = _bundle_from_file(file, arch, False, (3, size, size), build_kwargs)
    categories = tuple(weights.meta.get("categories") or ())
    mean = ", ".join(f"{v:g}" for v in transforms.mean)
    std = ", ".join(f"{v:g}" for v in transforms.std)
    return replace(
        bundle,
        name=f"{arch} (pretrained)",
        kind="torchvision",
        class_names=categories if len(categories) == bundle.num_classes else bundle.class_names,
        description=f"torchvision {arch} with pretrained weights {weights} from the local cache "
                    f"({size}x{size} RGB input, {bundle.num_classes} classes)",
        note=f"pretrained ImageNet weights; for accuracy, give images resized to {size}x{size} and "
             f"normalized with mean {mean}, std {std}",
    )
