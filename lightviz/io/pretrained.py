"""Pretrained torchvision weights: used from the torch cache, downloaded only on request.

torchvision's architectures load with random weights (`zoo.load_model`). Their pretrained
ImageNet weights are offered where they already are in the torch cache
(`torch.hub.get_dir()/checkpoints`), and downloaded only when the user asks: the file's
name, size and source are shown first, progress while it comes, and its SHA-256 must start
with the hash in its name (torch.hub's convention, `resnet18-f37072fd.pth`) before it is
moved into the cache. A corrupt or partial download is deleted, never cached; without a
network one line says so. Weights load with `torch.load(weights_only=True)`.

A model with pretrained weights is named '<arch>@pretrained' ('resnet18@pretrained').

>>> pretrained_name("resnet18"), arch_of("resnet18@pretrained"), is_pretrained_name("resnet18")
('resnet18@pretrained', 'resnet18', False)
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from lightviz.io import zoo

SUFFIX = "@pretrained"
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")
CHUNK = 1 << 20
TIMEOUT_S = 30


class DownloadError(ValueError):
    """A download that failed or was refused; the message is one sentence for the user."""


@dataclass(frozen=True)
class WeightsInfo:
    """One pretrained weights file: where it comes from and what it should be."""

    arch: str
    url: str
    file_name: str
    size_bytes: int | None  # as torchvision states it; None when unknown
    sha256_prefix: str
    label: str  # e.g. "IMAGENET1K_V1"
    top1: float | None = None  # ImageNet top-1 accuracy torchvision reports, in percent

    @property
    def host(self) -> str:
        return urlparse(self.url).netloc or self.url


def pretrained_name(arch: str) -> str:
    return f"{arch}{SUFFIX}"


def is_pretrained_name(name: str) -> bool:
    return isinstance(name, str) and name.endswith(SUFFIX)


def arch_of(name: str) -> str:
    return name[: -len(SUFFIX)] if is_pretrained_name(name) else name


@functools.lru_cache(maxsize=None)
def info(arch: str) -> WeightsInfo | None:
    """torchvision's default weights of `arch`, or None when it has none."""
    if arch not in zoo.list_torchvision_models():
        return None
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None
    file_name = Path(urlparse(weights.url).path).name
    match = HASH_IN_NAME.search(file_name)
    if match is None:
        return None  # no checksum to verify a download against: not offered
    size_mb = weights.meta.get("_file_size")
    top1 = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    return WeightsInfo(arch=arch, url=weights.url, file_name=file_name,
                       size_bytes=None if size_mb is None else int(size_mb * 2**20),
                       sha256_prefix=match.group(1), label=weights.name, top1=top1)


def cache_dir() -> Path:
    """Where torch.hub keeps downloaded weights (TORCH_HOME or ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(arch: str, weights: WeightsInfo | None = None) -> Path | None:
    """The cached weights file of `arch`, when it is in the torch cache."""
    weights = weights or info(arch)
    if weights is None:
        return None
    path = cache_dir() / weights.file_name
    return path if path.is_file() else None


def cached_archs() -> list[str]:
    """torchvision architectures whose pretrained weights are in the torch cache now."""
    folder = cache_dir()
    if not folder.is_dir():
        return []
    present = {path.name for path in folder.iterdir()}
    return [arch for arch in zoo.list_torchvision_models()
            if (weights := info(arch)) is not None and weights.file_name in present]


def download(weights: WeightsInfo, progress: Callable[[int, int | None], None] | None = None,
             dest_dir: Path | None = None, timeout_s: float = TIMEOUT_S) -> Path:
    """Download `weights` into `dest_dir` (default: the torch cache) after checking it.

    Args:
        progress: called with (bytes received, total bytes or None) as data arrives.

    Raises:
        DownloadError: no network, an HTTP error, a truncated file, or a checksum that does
            not match (the partial or corrupt file is removed: nothing is cached).
    """
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir()
    target = dest_dir / weights.file_name
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=dest_dir, prefix=f".{weights.file_name}.", suffix=".part")
    except OSError as error:
        raise DownloadError(f"cannot write to {dest_dir} ({error.strerror or error})") from None
    digest, received = hashlib.sha256(), 0
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(weights.url, timeout=timeout_s) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else weights.size_bytes
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
            length = response.headers.get("Content-Length")
        if length and length.isdigit() and received != int(length):
            raise DownloadError(f"the download of {weights.file_name} stopped at {received:,} of {int(length):,} "
                                "bytes; nothing was saved, try again")
        if not digest.hexdigest().startswith(weights.sha256_prefix):
            raise DownloadError(f"{weights.file_name} failed its checksum (SHA-256 {digest.hexdigest()[:12]}…, "
                                f"expected {weights.sha256_prefix}…): the download is corrupt and was not saved")
        os.replace(temporary, target)
        return target
    except DownloadError:
        raise
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{weights.host} answered {error.code} {error.reason} for {weights.file_name}; "
                            "nothing was saved") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"could not reach {weights.host} to download {weights.file_name} ({reason}): "
                            "offline? The model keeps its random weights") from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def load_pretrained(name: str) -> zoo.ModelBundle:
    """'<arch>@pretrained' as a ModelBundle with the cached pretrained weights (never downloads).

    Raises:
        ValueError: not such a name, or the weights are not in the torch cache.
    """
    arch = arch_of(name)
    weights = info(arch) if is_pretrained_name(name) else None
    if weights is None:
        raise ValueError(f"{name!r} is not a torchvision architecture with pretrained weights")
    path = cached_file(arch, weights)
    if path is None:
        raise ValueError(f"the pretrained weights of {arch} ({weights.file_name}) are not in the torch cache "
                         f"({cache_dir()}); download them first")
    base = zoo.load_model(arch)
    model = zoo.build_architecture(arch)
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = set(model.state_dict())
    state = {key: value for key, value in state.items() if key in expected or not key.startswith(("AuxLogits.",
                                                                                                     "aux1.", "aux2."))}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{weights.file_name} does not fit {arch}: {str(error).splitlines()[0]}") from None
    accuracy = f", ImageNet top-1 {weights.top1:.1f}% (torchvision)" if weights.top1 else ""
    return zoo.ModelBundle(
        name=name, model=model.float().eval(), input_shape=base.input_shape, num_classes=base.num_classes,
        class_names=base.class_names, dataset=None, kind="torchvision",
        description=f"torchvision {arch} with pretrained weights {weights.label}{accuracy}",
        note=("pretrained ImageNet weights, but no ImageNet images here: on generated inputs only fidelity to "
              "the float model (KL, output SQNR) means something; upload labelled images for accuracy"))
