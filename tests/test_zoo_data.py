"""Sample models and datasets: loading, accuracy on the held-out split, determinism, safety."""

from __future__ import annotations

import collections
import json
import pickle
import struct

import pytest
import torch
import torch.fx
from safetensors import safe_open
from safetensors.torch import load_file

from lightviz.core.evaldata import EvalData
from lightviz.io.datasets import digits_split, generated_inputs
from lightviz.io.zoo import (
    SAMPLE_MODELS,
    ModelBundle,
    build_sample,
    list_models,
    list_torchvision_models,
    load_model,
    sample_weights_path,
)

SAMPLES = ["digits-mlp", "digits-cnn", "digits-mobilenet", "digits-resnet"]


def test_list_models_names_the_four_samples() -> None:
    assert list_models() == SAMPLES
    assert all(SAMPLE_MODELS[name].description for name in SAMPLES)


@pytest.mark.parametrize("name", SAMPLES)
def test_load_model_sample_accuracy_on_test_split(name: str) -> None:
    bundle = load_model(name)
    _, test = digits_split()
    assert isinstance(bundle, ModelBundle)
    assert (bundle.kind, bundle.dataset, bundle.input_shape, bundle.num_classes) == (
        "sample", "digits", (1, 8, 8), 10)
    assert bundle.class_names == tuple("0123456789")
    assert not bundle.model.training
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())
    with torch.no_grad():
        logits = bundle.model(test.x)
    assert logits.shape == (len(test), 10)
    accuracy = float((logits.argmax(dim=1) == test.y).float().mean())
    assert accuracy >= 0.95
    # The card's number (stored in the file's metadata) is what the shipped weights give.
    with safe_open(str(sample_weights_path(name)), framework="pt") as f:
        recorded = float(f.metadata()["float_test_accuracy"])
    assert accuracy == pytest.approx(recorded, abs=1e-6)


def test_load_model_is_cached() -> None:
    assert load_model("digits-cnn") is load_model("digits-cnn")


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_architectures_trace_with_fx(name: str) -> None:
    model = build_sample(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


@pytest.mark.parametrize("name", SAMPLES)
def test_safetensors_files_load_without_pickle(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = sample_weights_path(name)
    raw = path.read_bytes()
    # safetensors layout: u64 little-endian header length, then a JSON header (no pickle opcodes).
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    assert "__metadata__" in header
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # not a pickle, not a torch zip

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle must not be used to load sample weights")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    state = load_file(str(path))
    build_sample(name).load_state_dict(state, strict=True)


def test_load_model_unknown_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="digits-mlp") as excinfo:
        load_model("no-such-model")
    message = str(excinfo.value)
    assert "no-such-model" in message and "torchvision" in message


def test_build_sample_unknown_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="digits-cnn"):
        build_sample("resnet18")


def test_load_model_torchvision_resnet18() -> None:
    assert "resnet18" in list_torchvision_models()
    bundle = load_model("resnet18")
    assert (bundle.kind, bundle.dataset, bundle.input_shape, bundle.num_classes) == (
        "torchvision", None, (3, 224, 224), 1000)
    assert len(bundle.class_names) == 1000
    assert "random" in bundle.note
    assert not bundle.model.training
    with torch.no_grad():
        assert bundle.model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_load_model_torchvision_is_seeded_and_keeps_global_rng() -> None:
    import torchvision

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    bundle = load_model("resnet18")
    assert torch.equal(torch.rand(1), expected_next)  # loading left the caller's RNG alone
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    assert torch.equal(bundle.model.conv1.weight, reference.conv1.weight)


def test_digits_split_sizes_shapes_and_ranges() -> None:
    train, test = digits_split()
    assert (len(train), len(test)) == (1347, 450)
    for split in (train, test):
        assert split.labeled
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 8, 8)
        assert split.y.dtype == torch.int64
        assert 0.0 <= float(split.x.min()) and float(split.x.max()) <= 1.0


def test_digits_split_is_stratified() -> None:
    train, test = digits_split()
    full = torch.cat([train.y, test.y])
    for label in range(10):
        expected = float((full == label).sum()) * len(test) / len(full)
        assert abs(int((test.y == label).sum()) - expected) <= 1


def test_digits_split_is_deterministic() -> None:
    first_train, first_test = digits_split.__wrapped__(0, 0.25)  # bypass the cache
    train, test = digits_split()
    assert torch.equal(first_test.x, test.x) and torch.equal(first_test.y, test.y)
    assert torch.equal(first_train.x, train.x) and torch.equal(first_train.y, train.y)
    other_train, _ = digits_split(seed=1)
    assert not torch.equal(other_train.y, train.y)


def test_digits_split_is_a_partition_of_the_dataset() -> None:
    from sklearn.datasets import load_digits

    train, test = digits_split()

    def rows(x: torch.Tensor, y: torch.Tensor) -> collections.Counter:
        return collections.Counter(
            (bytes(image.numpy().tobytes()), int(label)) for image, label in zip(x, y)
        )

    digits = load_digits()
    full_x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    full_y = torch.tensor(digits.target, dtype=torch.int64)
    # Train and test together are the dataset exactly once: each image in one split only.
    assert rows(train.x, train.y) + rows(test.x, test.y) == rows(full_x, full_y)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1])
def test_digits_split_rejects_bad_test_size(bad: float) -> None:
    with pytest.raises(ValueError, match="test_size"):
        digits_split(test_size=bad)


def test_generated_inputs_is_deterministic_and_unlabeled() -> None:
    a = generated_inputs((3, 4, 4), n=5, seed=7)
    b = generated_inputs((3, 4, 4), n=5, seed=7)
    c = generated_inputs((3, 4, 4), n=5, seed=8)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert a.x.shape == (5, 3, 4, 4) and a.x.dtype == torch.float32
    assert not a.labeled and a.y is None and len(a) == 5
    assert "generated" in a.description


@pytest.mark.parametrize("kwargs, word", [
    ({"input_shape": (), "n": 4}, "input_shape"),
    ({"input_shape": (3, 0), "n": 4}, "input_shape"),
    ({"input_shape": (3, 4), "n": 0}, "n must"),
])
def test_generated_inputs_rejects_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        generated_inputs(**kwargs)


def test_eval_data_validation() -> None:
    with pytest.raises(ValueError, match="empty"):
        EvalData(x=torch.zeros(0, 1, 8, 8), y=None, name="empty", description="")
    with pytest.raises(ValueError, match="y must have shape"):
        EvalData(x=torch.zeros(4, 2), y=torch.zeros(3, dtype=torch.int64), name="d", description="")
    with pytest.raises(ValueError, match="int64"):
        EvalData(x=torch.zeros(4, 2), y=torch.zeros(4), name="d", description="")
    data = EvalData(x=torch.zeros(4, 2), y=torch.zeros(4, dtype=torch.int64), name="d", description="")
    assert {data: 1}[data] == 1  # hashable by identity
