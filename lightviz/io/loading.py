"""Load a user's model file as a ModelBundle: weights are data, never code.

Reading the file (limits, format, deserialization that runs no code) is `lightviz.io.safeload`'s
job; formats that run code load only with trust_code=True. A state_dict goes into a named
architecture (a sample model or any torchvision classifier) whose class count is read off the
weights; the architecture is first built on the meta device, so a file that does not fit is
reported (missing, unexpected and mis-shaped tensors) before any memory is spent on the model.

Every failure is a ValueError (`UntrustedCodeError` when only running the file's code could
load it) with one readable sentence; nothing is cached here, so a failed load leaves whatever
the caller loaded before untouched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from lightviz.core.layers import COMPRESSIBLE, CONVS, find_layers
from lightviz.io import zoo
from lightviz.io.imagenet import weights_preprocess
from lightviz.io.safeload import (  # noqa: F401 - re-exported: the loading API in one import
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_ENV,
    MEMORY_COPIES,
    TRUST_HINT,
    Source,
    UntrustedCodeError,
    _File,
    available_memory_bytes,
    check_memory,
    first_line,
    human_bytes,
    load_object,
    max_upload_bytes,
    read_source,
    short_list,
)

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MODEL_SUFFIXES",
    "TRUST_HINT",
    "UntrustedCodeError",
    "load_pretrained",
    "load_user_model",
    "pretrained_weights_path",
]

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".pt2", ".bin", ".ckpt")  # how the CLI tells a file from a name


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
                         f"found keys {short_list(list(map(str, obj)))}")
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
        raise ValueError(f"{name} has NaN or Inf weights in {len(bad)} tensor(s): {short_list(bad)}; "
                         "such a model cannot be compressed or evaluated")


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """'' when `state` fits `expected` key for key and shape for shape; else a short report."""
    missing = [key for key in expected if key not in state and not key.endswith(".num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    misshaped = [f"{key} (file {_shape(state[key].shape)} vs model {_shape(expected[key].shape)})"
                 for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    parts = [f"{label} ({len(items)}): {short_list(items)}"
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
        return _build_on_cpu(arch, num_classes, kwargs)


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
    check_memory(n_bytes * (MEMORY_COPIES - 1), f"{arch} ({human_bytes(n_bytes)} of float32 weights)")
    on_meta = any(t.is_meta for t in shell.parameters())
    try:
        # assign=True adopts the file's tensors as the parameters: no second copy in memory.
        shell.load_state_dict(state, strict=True, assign=on_meta)
        if on_meta and any(t.is_meta for t in [*shell.parameters(), *shell.buffers()]):
            shell = _build_on_cpu(arch, num_classes, build_kwargs)  # non-persistent buffers stayed on meta
            shell.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{name} does not fit {arch}: {first_line(error)}") from None
    return shell.float().eval(), num_classes


def _build_on_cpu(arch: str, num_classes: int, build_kwargs: Mapping[str, object]) -> nn.Module:
    """A real build, seeded so the (soon overwritten) init never disturbs the caller's RNG."""
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
        raise ValueError(f"{name} rejects inputs of shape {tuple(input_shape)}: {first_line(error)}") from None
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
        trust_code: allow TorchScript and .pt2 archives (they run code from the file) and pickled
            whole modules (read weights-only, torch.nn / torchvision / lightviz classes only;
            see safeload). Off by default; only for files the user trusts.
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
    kind, obj = load_object(file, trust_code)
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
        preprocess=(weights_preprocess(arch, shape[-1]) if arch not in zoo.SAMPLE_MODELS and len(shape) == 3
                    and shape[1] == shape[2] else None),  # torchvision backbones expect ImageNet's recipe
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
    from urllib.parse import urlparse

    import torchvision

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
    recipe = weights_preprocess(arch)
    mean = ", ".join(f"{v:g}" for v in transforms.mean)
    std = ", ".join(f"{v:g}" for v in transforms.std)
    return replace(
        bundle,
        name=f"{arch} (pretrained)",
        kind="torchvision",
        class_names=categories if len(categories) == bundle.num_classes else bundle.class_names,
        description=f"torchvision {arch} with pretrained weights {weights} from the local cache "
                    f"({size}x{size} RGB input, {bundle.num_classes} classes)",
        note=f"pretrained ImageNet weights: accuracy is real on ImageNet images, e.g. a validation subset in "
             f"class folders named by WordNet id (n01440764) or category (tench), which are resized to "
             f"{recipe.resize} px (shorter side), center-cropped to {size}x{size} and normalized with mean {mean}, "
             f"std {std}, as the weights expect",
        preprocess=recipe,  # an image folder gets exactly the weights' transform
    )
