"""ImageNet-style evaluation folders: class folders named by WordNet id or category map to the
pretrained weights' class indices, images get the weights' own preprocessing, accuracy is real."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from lightviz.core.engine import Engine, uniform_plan
from lightviz.io import zoo
from lightviz.io.imagenet import folder_labels, weights_preprocess, wnid_index, wnids
from lightviz.io.userdata import load_user_data

CATEGORIES = tuple(torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"])
# folder name -> ImageNet class index it must map to
FOLDERS = {"n01440764": 0, "goldfish": 1, "Great_White_Shark": 2, "n03126707": 517, "toilet tissue": 999}
REDS = {index: 30 + 45 * k for k, index in enumerate(FOLDERS.values())}  # each class its own red level


class RedOracle(nn.Module):
    """Predicts the class whose red level the image's mean red is nearest to: logits
    -(r - t_k)^2 = 2 t_k r - r^2 - t_k^2, a Linear on [r, r^2] (a compressible layer)."""

    def __init__(self, targets: dict[int, float]) -> None:
        super().__init__()
        self.head = nn.Linear(2, 1000)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.fill_(-1e4)
            for index, t in targets.items():
                self.head.weight[index] = torch.tensor([2 * t, -1.0])
                self.head.bias[index] = -t * t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x[:, 0].mean(dim=(1, 2)).unsqueeze(1)  # (N, 1)
        return self.head(torch.cat([r, r * r], dim=1))  # (N, 1000)


def _image(red: int, i: int) -> Image.Image:
    """A non-square image: a flat red level with a small green and blue gradient."""
    pixels = np.zeros((180, 260, 3), np.uint8)
    pixels[..., 0] = red
    pixels[..., 1] = np.linspace(0, 200, 260, dtype=np.uint8)[None, :]
    pixels[..., 2] = 10 * i
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def bundle():
    recipe = weights_preprocess("resnet18")
    mean, std = recipe.mean[0], recipe.std[0]
    targets = {index: (red / 255 - mean) / std for index, red in REDS.items()}  # normalized red levels
    return zoo.ModelBundle(name="oracle", model=RedOracle(targets).eval(), input_shape=(3, 224, 224),
                           num_classes=1000, class_names=CATEGORIES, dataset=None, kind="user",
                           description="red-level oracle", preprocess=recipe)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """20 images: 4 in each of 5 class folders named by WordNet id or by category name."""
    root = tmp_path_factory.mktemp("imagenet") / "val"
    for name, index in FOLDERS.items():
        (root / name).mkdir(parents=True)
        for i in range(4):
            _image(REDS[index], i).save(root / name / f"ILSVRC2012_val_{index:05d}{i}.JPEG", format="PNG")
    return root


@pytest.fixture(scope="module")
def data(bundle, folder):
    return load_user_data(folder, None, bundle)


def test_wordnet_ids_are_imagenet_class_order():
    assert len(wnids()) == 1000 and list(wnids()) == sorted(wnids())
    assert [wnid_index()[w] for w in ("n01440764", "n01443537", "n02012849", "n03126707", "n15075141")] == \
           [0, 1, 134, 517, 999]  # tench, goldfish, crane (bird), crane (machine), toilet tissue
    assert CATEGORIES[134] == "crane bird" and CATEGORIES[517] == "crane"


def test_imagenet_folder_maps_to_weights_classes_and_accuracy_is_real(bundle, data):
    expected = sorted(FOLDERS.items())  # ImageFolder order: folders sorted by name, then files
    assert data.y.tolist() == [index for _, index in expected for _ in range(4)]
    assert data.class_names is None and data.x.shape == (20, 3, 224, 224)
    assert "matched to the model's class names by WordNet id and class name" in data.description
    assert "center-cropped to 224x224" in data.description and "ResNet18_Weights.IMAGENET1K_V1" in data.description
    result = Engine(bundle.model).evaluate(uniform_plan(bits=8), data)
    assert result.float_accuracy == 1.0 and result.n_samples == 20  # sorted labels 0..4 would score 0.2


def test_imagenet_preprocessing_is_the_weights_transform(data, folder):
    reference = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    first = sorted(folder.iterdir())[0]
    image = Image.open(sorted(first.iterdir())[0]).convert("RGB")
    assert torch.equal(data.x[0], reference(image))  # resize 256 (shorter side), crop 224, ImageNet mean/std


def test_imagenet_zip_of_a_val_folder_maps_the_same(bundle, folder, data, tmp_path):
    archive = tmp_path / "val.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*.JPEG")):
            out.write(path, f"val/{path.relative_to(folder)}")
    from_zip = load_user_data(archive, None, bundle, max_samples=10)  # a seeded subset, decoded alone
    assert len(from_zip) == 10 and set(from_zip.y.tolist()) <= set(FOLDERS.values())
    keep = torch.randperm(20, generator=torch.Generator().manual_seed(0))[:10].sort().values
    assert torch.equal(from_zip.y, data.y[keep]) and torch.equal(from_zip.x, data.x[keep])


def test_imagenet_folder_with_an_unknown_wordnet_id_is_refused(bundle, tmp_path):
    for name in ("n01440764", "n99999999"):
        (tmp_path / name).mkdir()
        _image(100, 0).save(tmp_path / name / "a.png")
    with pytest.raises(ValueError, match=r"1 of 2 class folders name none of the model's 1000 ImageNet classes: "
                                         r"'n99999999'"):
        load_user_data(tmp_path, None, bundle)


def test_folder_labels_by_name_ignore_case_and_underscores_and_fall_back_to_sorted():
    names = ("cat", "dog", "Great White Shark")
    assert folder_labels(["great_white_shark", "DOG"], names) == ({"great_white_shark": 2, "DOG": 1}, "class name")
    assert folder_labels(["cat", "zebra"], names) == (None, "")  # not the model's classes: sorted order
    with pytest.raises(ValueError, match="more than one of the model's classes"):
        folder_labels(["a"], ("a", "A"))
