"""Load a user's evaluation data: `.npz` arrays, or images in class folders (a folder or a `.zip`).

| source                    | inputs                                          | labels                         |
|---------------------------|-------------------------------------------------|--------------------------------|
| `.npz` with `x` [and `y`] | `x` as float32, as it is (N, *input_shape)      | `y` (N,) class indices; none without `y` |
| folder / `.zip` of class folders | images resized to the model's size (or `image_size`), pixels in [0, 1], then `(p - mean) / std`, converted to the model's 1 (grey) or 3 (RGB) channels | the class folder's index |

Class folders are sorted by name and numbered from 0, as torchvision's ImageFolder does, except
when every folder names one of the model's classes: by WordNet id (`n01440764`, for a 1000-class
ImageNet model) or by class name (`tench`, `great_white_shark`; see `imagenet.py`). Then each
folder's label is that class, so top-1 accuracy on an ImageNet validation subset is real.
Without labels only fidelity to the float model (agreement, KL) is measurable, and the
data's description says so.

Images are preprocessed as the model's weights expect when the bundle says how
(`ModelBundle.preprocess`, torchvision's recipe for ImageNet architectures: resize the shorter
side, center-crop, normalize); `image_size` (resize straight to it), `mean` and `std` override
their parts of it. Without a recipe: resized to the model's input size, pixels in [0, 1].

Nothing here extracts an archive to disk or unpickles: `.npz` arrays are parsed from their
headers (object arrays refused) and zip members are read in memory after their paths are
checked, through `lightviz.io.ziparchive`: sizes are checked against the upload limit from the
zip's directory first, and then again on the bytes actually decompressed. The decoded images
are bounded too (MAX_INPUT_VALUES values, checked before any image is decoded).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from lightviz.core.evaldata import MAX_INPUT_VALUES, EvalData, subset
from lightviz.io.imagenet import ImagePreprocess, folder_labels
from lightviz.io.safeload import (
    Source,
    check_memory,
    first_line,
    human_bytes,
    max_upload_bytes,
    read_source,
    short_list,
)
from lightviz.io.ziparchive import ZipBudget, open_zip, read_member, read_npz

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIZE", "MAX_INPUT_VALUES", "check_data", "load_user_data"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
MAX_IMAGE_PIXELS = 50_000_000  # one image larger than this is refused before decoding (decompression bombs)
MAX_IMAGE_SIZE = 4096  # largest height or width images are resized to
_OWNED = ("C_CONTIGUOUS", "ALIGNED", "WRITEABLE")  # what torch.from_numpy needs; np.require copies otherwise


def load_user_data(source: Source, filename: str | None, bundle, *, image_size: int | Sequence[int] | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   max_samples: int | None = None, max_bytes: int | None = None, seed: int = 0) -> EvalData:
    """A user's dataset for `bundle`'s model, checked against it (see `check_data`).

    Args:
        source: a path (`.npz`, `.zip`, or a folder of class folders) or a file's bytes.
        filename: name to report and to read the extension from (default: the path's).
        bundle: the `ModelBundle` the data is for (its input shape and class count).
        image_size: images are resized to this (int: square; (H, W)); default the model's.
        mean, std: per-channel normalization of images in [0, 1] (one value or one per channel);
            default 0 and 1 (pixels stay in [0, 1]).
        max_samples: evaluate on a seeded random subset of at most this many samples.
        max_bytes: size limit (default `max_upload_bytes()`), checked before reading.
        seed: seed of the subset.

    Raises:
        FileNotFoundError: no such path.
        ValueError: one sentence on what is wrong (empty, labels out of range, shape the model
            rejects, NaN inputs, no class folders, too big, unreadable).

    >>> from lightviz.io.zoo import load_model
    >>> buffer = io.BytesIO()
    >>> np.savez(buffer, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 3]))
    >>> d = load_user_data(buffer.getvalue(), "d.npz", load_model("digits-mlp"))
    >>> len(d), d.labeled
    (4, True)
    """
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    images = image_size is not None or mean is not None or std is not None
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        data = _image_folder(Path(source), bundle, image_size, mean, std, max_samples, limit, seed)
    else:
        file = read_source(source, filename, limit, "dataset (.npz, or a .zip of class folders)")
        suffix = Path(file.name).suffix.lower()
        if suffix == ".npz" or suffix != ".zip" and _is_npz(file):
            if images:
                raise ValueError("image_size, mean and std apply to image folders; an .npz's x is used as it is")
            data = subset(_npz(file, bundle, limit), max_samples, seed)
        elif suffix == ".zip" or file.head(4) == b"PK\x03\x04":
            with file.open() as f:
                data = _image_zip(f, file.name, bundle, image_size, mean, std, max_samples, limit, seed)
        else:
            raise ValueError(f"{file.name} is not a dataset lightviz reads: expected an .npz with arrays x and y, "
                             "or a .zip (or folder) of class folders of images")
    check_data(bundle, data)
    return data


def check_data(bundle, data: EvalData) -> None:
    """Raise ValueError unless `bundle.model` can be evaluated on `data`.

    Checks: finite inputs, labels within the model's classes, and one sample run through the
    model giving (1, num_classes) logits (the model's own error, reported in one line, when
    it rejects the input shape).
    """
    x = data.x
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero().flatten()
        raise ValueError(f"{data.name}: {len(bad)} input(s) hold NaN or Inf values (first: sample {int(bad[0])}); "
                         "fix or drop them")
    if data.y is not None:
        _check_labels(data.y, bundle.num_classes, data.name)
    try:
        with torch.inference_mode():
            out = bundle.model(x[:1])
    except Exception as error:  # noqa: BLE001 - the model's own complaint, in one line
        raise ValueError(
            f"{data.name}: inputs of shape {tuple(x.shape[1:])} do not fit {bundle.name}, which takes inputs "
            f"of shape {tuple(bundle.input_shape)} (without the batch dimension): {first_line(error)}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, bundle.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{data.name}: the model returned {got} for one input, not (1, {bundle.num_classes}) logits")


def _check_labels(y: torch.Tensor, num_classes: int, name: str) -> None:
    bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()
    if len(bad):
        raise ValueError(
            f"{name}: labels out of range: the model has {num_classes} classes (labels 0 to {num_classes - 1}) "
            f"but {len(bad)} label(s) are outside, e.g. {int(y[bad[0]])} at sample {int(bad[0])} "
            f"(labels run from {int(y.min())} to {int(y.max())})"
        )


# --------------------------------------------------------------------------- .npz


def _is_npz(file) -> bool:
    if file.head(4) != b"PK\x03\x04":
        return False
    try:
        with file.open() as f, open_zip(f, file.name, "an .npz") as archive:
            names = archive.namelist()
    except ValueError:
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


def _npz(file, bundle, limit: int) -> EvalData:
    name = file.name
    with file.open() as f:
        arrays, keys = read_npz(f, name, ("x", "y"), limit)
    if "x" not in arrays:
        raise ValueError(f"{name} must hold an array named 'x' (inputs) and optionally 'y' (labels); "
                         f"found {short_list(keys) or 'no arrays'}")
    x, y = arrays["x"], arrays.get("y")
    if x.dtype.kind not in "biuf" or x.ndim < 1:
        raise ValueError(f"{name}: x must be a numeric array of shape (N, ...); got dtype {x.dtype}, shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: x holds 0 samples")
    inputs = torch.from_numpy(np.require(x, np.float32, _OWNED))
    shape = tuple(bundle.input_shape)
    if inputs.dim() == len(shape) and shape[0] == 1 and tuple(inputs.shape[1:]) == shape[1:]:
        inputs = inputs.unsqueeze(1)  # (N, H, W) grey images for a (1, H, W) model
    labels = None if y is None else _labels(y, len(inputs), name)
    if labels is not None:
        _check_labels(labels, bundle.num_classes, name)  # before EvalData, so the message is ours
    unlabeled = "" if labels is not None else (
        ", no labels (no 'y'): only fidelity to the float model (agreement, KL) is measurable")
    return EvalData(x=inputs, y=labels, name=name,
                    description=f"{name}: {len(inputs)} inputs of shape {tuple(inputs.shape[1:])}{unlabeled}")


def _labels(y: np.ndarray, n: int, name: str) -> torch.Tensor:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name}: y must hold one class index per sample, shape ({n},); got shape {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise ValueError(f"{name}: y must hold integer class indices; got non-integer values")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{name}: y must hold integer class indices; got dtype {y.dtype}")
    return torch.from_numpy(np.require(y, np.int64, _OWNED))


# --------------------------------------------------------------------------- image folders


def _image_zip(f, name: str, bundle, image_size, mean, std, max_samples, limit: int, seed: int) -> EvalData:
    with open_zip(f, name, "a .zip of class folders of images") as archive:
        entries, budget = [], ZipBudget(limit)
        for info in archive.infolist():
            path = info.filename
            parts = PurePosixPath(path).parts
            if path.startswith("/") or "\\" in path or ".." in parts or (parts and ":" in parts[0]):
                raise ValueError(f"{name} has a member with an unsafe path ({path!r}); refusing the archive")
            if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue
            if Path(path).suffix.lower() in IMAGE_SUFFIXES:
                entries.append((list(parts), info.file_size,
                                lambda info=info: read_member(archive, info, name, budget)))
        # A zip of a folder holds everything under that one folder: read from inside it.
        while entries and all(len(p) >= 3 for p, _, _ in entries) and len({p[0] for p, _, _ in entries}) == 1:
            entries = [(p[1:], size, read) for p, size, read in entries]
        return _images(entries, name, bundle, image_size, mean, std, max_samples, limit, seed)


def _image_folder(root: Path, bundle, image_size, mean, std, max_samples, limit: int, seed: int) -> EvalData:
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            if Path(file).suffix.lower() in IMAGE_SUFFIXES and not file.startswith("."):
                path = Path(folder) / file
                entries.append((list(path.relative_to(root).parts), path.stat().st_size, path.read_bytes))
    return _images(entries, root.name or str(root), bundle, image_size, mean, std, max_samples, limit, seed)


def _images(entries: list[tuple[list[str], int, Callable[[], bytes]]], name: str, bundle, image_size, mean, std,
            max_samples, limit: int, seed: int) -> EvalData:
    """Decode class-folder images (parts[0] is the class) into an EvalData."""
    if not entries:
        raise ValueError(f"{name} is empty: it holds no images ({', '.join(IMAGE_SUFFIXES)})")
    labeled = [(parts, size, read) for parts, size, read in entries if len(parts) >= 2]
    if not labeled:
        raise ValueError(f"{name} has no class folders ({len(entries)} image(s) outside any folder): put each "
                         "class's images in a folder named after the class, e.g. cat/1.png, dog/2.png")
    total = sum(size for _, size, _ in labeled)
    if total > limit:
        raise ValueError(f"{name} holds {human_bytes(total)} of images, over the upload limit of {human_bytes(limit)}")
    channels, size = _image_geometry(bundle, image_size)
    recipe = getattr(bundle, "preprocess", None) if channels == 3 else None
    mean_t = _normalization(mean if mean is not None or recipe is None else recipe.mean, 0.0, "mean", channels)
    std_t = _normalization(std if std is not None or recipe is None else recipe.std, 1.0, "std", channels)
    if bool((std_t <= 0).any()):
        raise ValueError(f"std must be positive; got {std}")
    if recipe is not None and image_size is None and recipe.resize is not None:  # the weights' resize and crop
        recipe = ImagePreprocess(crop=recipe.crop, resize=recipe.resize, mean=tuple(mean_t.tolist()),
                                 std=tuple(std_t.tolist()), interpolation=recipe.interpolation, source=recipe.source)
        size = recipe.crop
    else:
        recipe = None
    labeled.sort(key=lambda entry: entry[0])  # ImageFolder's order: by class folder, then path
    classes = sorted({parts[0] for parts, _, _ in labeled})
    mapping, matched_by = folder_labels(classes, tuple(bundle.class_names))
    by_name = mapping is not None
    index = mapping if by_name else {c: i for i, c in enumerate(classes)}
    n_total = len(labeled)
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples must be a positive integer or None (all); got {max_samples!r}")
        if max_samples < n_total:  # choose before decoding: only the subset is ever read
            keep = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:max_samples].sort().values
            labeled = [labeled[int(i)] for i in keep]
    values = len(labeled) * channels * size[0] * size[1]
    if values > MAX_INPUT_VALUES:
        raise ValueError(
            f"{name}: {len(labeled):,} images of {channels}x{size[0]}x{size[1]} would decode to {values:,} values "
            f"({human_bytes(values * 4)} of float32), over the limit of {MAX_INPUT_VALUES:,} values "
            f"({human_bytes(MAX_INPUT_VALUES * 4)}): use a smaller image size or load fewer samples "
            f"(at most {max(MAX_INPUT_VALUES // (channels * size[0] * size[1]), 1):,} at this size)")
    check_memory(values * 4 * 2, f"{len(labeled)} images at {size[0]}x{size[1]}")
    mode = "L" if channels == 1 else "RGB"
    if recipe is not None:  # torchvision's own transform: (3, H, W), normalized
        transform = recipe.transform()
        x = torch.stack([_decode(read(), "/".join(parts), mode, size, transform) for parts, _, read in labeled])
    else:
        x = torch.from_numpy(np.stack([_decode(read(), "/".join(parts), mode, size) for parts, _, read in labeled]))
        if channels == 1:
            x = x.unsqueeze(1)  # (N, 1, H, W)
        else:
            x = x.permute(0, 3, 1, 2).contiguous()  # (N, H, W, 3) -> (N, 3, H, W)
        x = (x - mean_t.view(1, -1, 1, 1)) / std_t.view(1, -1, 1, 1)
    y = torch.tensor([index[parts[0]] for parts, _, _ in labeled], dtype=torch.int64)
    _check_labels(y, bundle.num_classes, name)  # before EvalData, so the message is ours
    labels = (f"labels: folders matched to the model's class names by {matched_by}" if by_name
              else f"labels = folders sorted by name: {short_list([f'{i} {c}' for i, c in enumerate(classes)])}")
    sampled = f", a random subset of {len(labeled)} of {n_total} (seed {seed})" if len(labeled) < n_total else ""
    how = (f"{recipe.describe()}" + (f" ({recipe.source}'s preprocessing)" if recipe.source else "")
           if recipe is not None else
           f"resized to {size[0]}x{size[1]} {'grey' if channels == 1 else 'RGB'}, normalized with mean "
           f"{_fmt(mean_t)} and std {_fmt(std_t)}")
    return EvalData(
        x=x, y=y, name=name, class_names=None if by_name else tuple(classes),
        description=f"{name}: {len(labeled)} images in {len(classes)} class folders{sampled}, {how}; {labels}",
    )


def _image_geometry(bundle, image_size) -> tuple[int, tuple[int, int]]:
    shape = tuple(bundle.input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"images need a model taking (1 or 3 channels, height, width) inputs; "
                         f"{bundle.name} takes inputs of shape {shape}")
    if image_size is None:
        size = (shape[1], shape[2])
    elif isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    else:
        size = tuple(image_size) if isinstance(image_size, (tuple, list)) else ()
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= MAX_IMAGE_SIZE
                             for s in size):
        raise ValueError(f"image_size must be an integer or (height, width) from 1 to {MAX_IMAGE_SIZE}; "
                         f"got {image_size!r}")
    return shape[0], size


def _normalization(values, default: float, what: str, channels: int) -> torch.Tensor:
    if values is None:
        return torch.full((channels,), default)
    items = [values] if isinstance(values, (int, float)) else list(values)
    try:
        tensor = torch.tensor([float(v) for v in items], dtype=torch.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, one or one per channel ({channels}); got {values!r}") from None
    if len(tensor) not in (1, channels) or not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{what} must be 1 or {channels} finite numbers (one per channel); got {values!r}")
    return tensor.expand(channels).clone()


def _decode(data: bytes, path: str, mode: str, size: tuple[int, int], transform=None):
    """One image as float32 in [0, 1]: (H, W) for mode "L", (H, W, 3) for "RGB"; with a torchvision
    `transform`, what it makes of the RGB image ((3, H, W), normalized)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        pixels = image.width * image.height
    except Exception as error:  # noqa: BLE001 - PIL raises many types for bad bytes
        raise ValueError(f"cannot read image {path}: {first_line(error)}") from None
    if pixels > MAX_IMAGE_PIXELS:
        raise ValueError(f"image {path} has {pixels:,} pixels, over the limit of {MAX_IMAGE_PIXELS:,}")
    try:
        if transform is not None:
            return transform(image.convert(mode))
        image = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float32) / 255.0
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"cannot read image {path} (truncated or damaged?): {first_line(error)}") from None


def _fmt(values: torch.Tensor) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"
