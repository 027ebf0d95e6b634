"""ImageNet-style evaluation folders: class folders named by WordNet id (`n01440764`) or by
category name (`tench`, `great_white_shark`), mapped onto a model's classes, and the image
preprocessing a model's weights expect.

ImageNet-1k numbers its 1000 classes by their WordNet ids in sorted order; torchvision's weight
metadata lists the category names in that same order (`weights.meta["categories"]`, index =
class). `imagenet_wnids.txt` holds the 1000 ids in that order, so a folder `n01440764/` is
class 0 ("tench") for any 1000-class ImageNet model. A folder named after a category matches
it ignoring case, underscores and hyphens ("Great_White_Shark" is "great white shark").

Preprocessing (`ImagePreprocess`) follows torchvision's `ImageClassification` transform, the
one `weights.transforms()` builds: resize the shorter side to `resize` (antialiased,
bilinear or bicubic as the weights say), center-crop to `crop`, scale to [0, 1], normalize
with `mean` and `std`. With `resize=None` images are resized straight to `crop` (no crop).

>>> wnid_index()["n01440764"], len(wnids())
(0, 1000)
>>> folder_labels(["n01443537", "tench"], ("tench", "goldfish") + ("x",) * 998)[0]
{'n01443537': 1, 'tench': 0}
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

WNID = re.compile(r"^n\d{8}$")
WNIDS_FILE = Path(__file__).with_name("imagenet_wnids.txt")
IMAGENET_CLASSES = 1000
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@functools.lru_cache(maxsize=1)
def wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted)."""
    found = tuple(line.strip() for line in WNIDS_FILE.read_text().splitlines() if line.strip())
    if len(found) != IMAGENET_CLASSES or list(found) != sorted(set(found)) or not all(map(WNID.match, found)):
        raise ValueError(f"{WNIDS_FILE} must hold 1000 distinct sorted WordNet ids (n########)")
    return found


@functools.lru_cache(maxsize=1)
def wnid_index() -> dict[str, int]:
    """WordNet id -> ImageNet-1k class index."""
    return {wnid: index for index, wnid in enumerate(wnids())}


def normalize(name: str) -> str:
    """A class name as folders are matched: lower case, '_' and '-' as spaces, single spaces.

    >>> normalize("Great_White-shark")
    'great white shark'
    """
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def folder_labels(folders: list[str], class_names: tuple[str, ...]) -> tuple[dict[str, int] | None, str]:
    """Map class folders onto a model's classes by WordNet id or by name.

    Args:
        folders: the class folders' names.
        class_names: the model's class names, index = class (torchvision's ImageNet categories,
            the digits "0".."9", a user model's "class i").

    Returns:
        ({folder: class index}, how they were matched) when every folder names one of the
        model's classes; (None, "") when the folders are not the model's classes (the caller
        then numbers them in sorted order, as torchvision's ImageFolder).

    Raises:
        ValueError: some folders are WordNet ids (an ImageNet folder) but not every folder
            names a class of this model, or a folder name matches two classes.
    """
    imagenet = len(class_names) == IMAGENET_CLASSES
    by_name: dict[str, list[int]] = {}
    for index, name in enumerate(class_names):
        by_name.setdefault(normalize(name), []).append(index)
    mapping, unknown, ambiguous, kinds = {}, [], [], set()
    for folder in folders:
        if imagenet and WNID.match(folder) and folder in wnid_index():
            mapping[folder] = wnid_index()[folder]
            kinds.add("WordNet id")
        elif len(by_name.get(normalize(folder), [])) == 1:
            mapping[folder] = by_name[normalize(folder)][0]
            kinds.add("class name")
        elif normalize(folder) in by_name:
            ambiguous.append(folder)
        else:
            unknown.append(folder)
    if ambiguous:
        raise ValueError(f"class folder(s) {_some(ambiguous)} match more than one of the model's classes "
                         f"(classes {by_name[normalize(ambiguous[0])]}); name them by WordNet id instead")
    if not unknown:
        return mapping, " and ".join(kind for kind in ("WordNet id", "class name") if kind in kinds)
    if any(WNID.match(folder) for folder in folders) and imagenet:
        raise ValueError(f"{len(unknown)} of {len(folders)} class folders name none of the model's "
                         f"{IMAGENET_CLASSES} ImageNet classes: {_some(unknown)}; name each folder by its WordNet "
                         "id (e.g. n01440764) or category name (e.g. tench)")
    return None, ""


def _some(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class ImagePreprocess:
    """How an image becomes a model input (see the module's docstring).

    Attributes:
        crop: (height, width) of the input.
        resize: shorter side before the center crop; None resizes straight to `crop`.
        mean, std: per-channel normalization of pixels in [0, 1].
        interpolation: "bilinear", "bicubic" or "nearest".
        source: where the recipe comes from, e.g. "ResNet18_Weights.IMAGENET1K_V1".

    >>> ImagePreprocess((224, 224), 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).describe()
    'resized to 256 px (shorter side), center-cropped to 224x224, normalized with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)'
    """

    crop: tuple[int, int]
    resize: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    interpolation: str = "bilinear"
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.crop) != 2 or any(not isinstance(s, int) or s < 1 for s in self.crop):
            raise ValueError(f"crop must be (height, width), positive integers; got {self.crop!r}")
        if self.resize is not None and (not isinstance(self.resize, int) or self.resize < 1):
            raise ValueError(f"resize must be a positive integer or None; got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {self.interpolation!r}")

    def describe(self) -> str:
        size = f"{self.crop[0]}x{self.crop[1]}"
        geometry = (f"resized to {size}" if self.resize is None
                    else f"resized to {self.resize} px (shorter side), center-cropped to {size}")
        return f"{geometry}, normalized with mean {_fmt(self.mean)} and std {_fmt(self.std)}"

    def transform(self):
        """torchvision's ImageClassification for this recipe (PIL image in, normalized tensor out)."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms._presets import ImageClassification

        if self.resize is None:
            raise ValueError("a recipe without resize resizes straight to crop; it has no torchvision transform")
        return ImageClassification(crop_size=self.crop[0] if self.crop[0] == self.crop[1] else list(self.crop),
                                   resize_size=self.resize, mean=self.mean, std=self.std,
                                   interpolation=InterpolationMode(self.interpolation), antialias=True)


def weights_preprocess(arch: str, input_size: int | None = None) -> ImagePreprocess | None:
    """The preprocessing of torchvision's default pretrained weights for `arch` (None when it has
    none), for inputs of `input_size` pixels: the weights' own recipe when its crop is that
    size, else the same resize-to-crop ratio at that size (a random-init model built for it).

    >>> weights_preprocess("resnet18").describe().startswith("resized to 256 px")
    True
    """
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        transform = weights.transforms()
    except (ValueError, KeyError, AttributeError, TypeError):
        return None
    crop, resize = int(transform.crop_size[0]), int(transform.resize_size[0])
    if input_size is not None and input_size != crop:
        crop, resize = input_size, round(input_size * resize / crop)
    return ImagePreprocess(crop=(crop, crop), resize=resize, mean=tuple(float(v) for v in transform.mean),
                           std=tuple(float(v) for v in transform.std), interpolation=transform.interpolation.value,
                           source=str(weights))


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"
