"""Users' models and data: one clear message for each bad file, nothing executed, nothing lost.

Every file is created by the test, in tmp_path. Files that would run code when unpickled
write a marker file; the tests prove the marker never appears unless the user trusts the file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from lightviz.cli import main
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.evaldata import EvalData
from lightviz.io import loading, safeload, zoo
from lightviz.io.datasets import digits_split
from lightviz.io.loading import UntrustedCodeError, load_pretrained, load_user_model
from lightviz.io.userdata import check_data, load_user_data

# --------------------------------------------------------------------------- helpers


class _Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class MarkerModule(nn.Module):
    """A whole module whose unpickling writes `marker` (its __setstate__ runs on load)."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.marker = str(marker)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def __setstate__(self, state):
        super().__setstate__(state)
        Path(state["marker"]).write_text("code from the file ran")


def mlp_state(num_classes: int = 10) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return zoo.build_architecture("digits-mlp", num_classes).state_dict()


def save_safetensors(path: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def save_npz(path: Path, x, y=None) -> Path:
    arrays = {"x": np.asarray(x)} if y is None else {"x": np.asarray(x), "y": np.asarray(y)}
    np.savez(path, **arrays)
    return path


def png_bytes(color: tuple[int, int, int], size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def image_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return torchvision.models.resnet18(num_classes=10).state_dict()


@pytest.fixture()
def digits_cnn() -> zoo.ModelBundle:
    return zoo.load_model("digits-cnn")


# --------------------------------------------------------------------------- bad model files


@pytest.mark.parametrize("suffix, expected", [
    (".pt", "damaged or truncated"),
    (".pth", "damaged or truncated"),
    (".safetensors", "not a valid safetensors file"),
])
def test_load_user_model_truncated_file(tmp_path, suffix, expected):
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".safetensors":
        save_safetensors(whole, mlp_state())
    else:
        torch.save(mlp_state(), whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=expected) as excinfo:
        load_user_model(cut, arch="digits-mlp")
    assert "cut" in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_load_user_model_legacy_pickle_truncated(tmp_path):
    whole = tmp_path / "legacy.pth"
    torch.save(mlp_state(), whole, _use_new_zipfile_serialization=False)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(ValueError, match="damaged or truncated.*torch.save"):
        load_user_model(cut, arch="digits-mlp")


@pytest.mark.parametrize("suffix, expected", [
    (".pt", r"torch.save \(.pt, .pth\)"),
    (".safetensors", "expected a .safetensors file"),
    (".pt2", "expected a torch.export .pt2 archive"),
])
def test_load_user_model_random_bytes_names_expected_format(tmp_path, suffix, expected):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=expected) as excinfo:
        load_user_model(path, arch="digits-mlp")
    assert "not a model file" in str(excinfo.value)


def _payload_files(tmp_path: Path, marker: Path) -> list[Path]:
    """The same code-running payload as a torch.save zip (.pt), a legacy torch.save (.pth),
    a bare pickle (.pth), and hidden inside an otherwise valid state_dict."""
    zip_pt = tmp_path / "payload.pt"
    torch.save({"fc1.weight": _Payload(marker)}, zip_pt)
    legacy = tmp_path / "payload_legacy.pth"
    torch.save(_Payload(marker), legacy, _use_new_zipfile_serialization=False)
    bare = tmp_path / "payload_bare.pth"
    bare.write_bytes(pickle.dumps(_Payload(marker)))
    hidden = tmp_path / "payload_in_state.pth"
    torch.save({**mlp_state(), "extra": _Payload(marker)}, hidden)
    return [zip_pt, legacy, bare, hidden]


def test_payload_is_live_when_unpickled_plainly(tmp_path):
    """Control: the payload really runs code, so its absence below means something."""
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()


@pytest.mark.parametrize("index", range(4), ids=["zip-pt", "legacy-pth", "bare-pickle-pth", "hidden-in-state"])
def test_load_user_model_code_pickle_refused_and_never_run(tmp_path, index):
    marker = tmp_path / "marker"
    path = _payload_files(tmp_path, marker)[index]
    with pytest.raises(UntrustedCodeError, match="arbitrary code; pass --trust-code only for files you trust") as e:
        load_user_model(path, arch="digits-mlp")
    assert "posix.system" in str(e.value) or "os.system" in str(e.value) or "nt.system" in str(e.value)
    assert not marker.exists()


def test_load_user_model_whole_module_pickle_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "whole_module.pt"
    torch.save(MarkerModule(marker), path)
    assert not marker.exists()
    for arch in (None, "digits-mlp"):
        with pytest.raises(UntrustedCodeError, match="pickled Python object.*MarkerModule.*arbitrary code"):
            load_user_model(path, arch=arch)
    # Even trusted, torch.load stays weights_only=True: a class from outside torch.nn,
    # torchvision and lightviz is refused unread, so its __setstate__ never runs.
    with pytest.raises(ValueError, match="will not construct.*MarkerModule.*state_dict"):
        load_user_model(path, trust_code=True)
    assert not marker.exists()


def test_trusted_code_pickle_is_still_never_run(tmp_path):
    marker = tmp_path / "marker"
    for path in _payload_files(tmp_path, marker):
        with pytest.raises(ValueError, match="will not construct.*system|legacy format") as e:
            load_user_model(path, arch="digits-mlp", trust_code=True)
        assert not isinstance(e.value, UntrustedCodeError)
    assert not marker.exists()


def test_trusted_whole_module_of_known_classes_loads_through_weights_only(tmp_path):
    from torchvision.models.vision_transformer import VisionTransformer

    cnn = zoo.load_model("digits-cnn").model
    torch.save(cnn, tmp_path / "cnn.pt")
    bundle = load_user_model(tmp_path / "cnn.pt", arch="digits-cnn", trust_code=True)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(bundle.model(x), cnn(x))
    # torchvision's ViT pickles functools.partial (norm_layer); a small one keeps the file small
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=5).eval()
    torch.save(vit, tmp_path / "vit.pt")
    bundle = load_user_model(tmp_path / "vit.pt", trust_code=True, input_shape=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    assert (bundle.input_shape, bundle.num_classes) == ((3, 32, 32), 5) and torch.equal(bundle.model(x), vit(x))


@pytest.mark.filterwarnings("error")  # a warning would be a second line on stderr
def test_cli_code_pickle_exit_2_one_line_nothing_run(tmp_path, capsys):
    marker = tmp_path / "marker"
    for path in _payload_files(tmp_path, marker):
        assert main(["evaluate", "--model", str(path), "--arch", "digits-mlp", "--json"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--trust-code" in err
    assert not marker.exists()


def test_load_user_model_torchscript_refused_unless_trusted(tmp_path):
    model = zoo.build_architecture("digits-mlp").eval()
    path = tmp_path / "scripted.pt"
    torch.jit.script(model).save(str(path))
    with pytest.raises(UntrustedCodeError, match="TorchScript.*arbitrary code"):
        load_user_model(path, arch="digits-mlp")
    with pytest.raises(ValueError, match="name the architecture"):
        load_user_model(path, trust_code=True)
    bundle = load_user_model(path, arch="digits-mlp", trust_code=True)
    assert torch.equal(bundle.model.fc1.weight, model.fc1.weight)


def test_load_user_model_export_pt2_refused_unless_trusted(tmp_path):
    model = zoo.build_architecture("digits-mlp").eval()
    path = tmp_path / "exported.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 8, 8),)), str(path))
    with pytest.raises(UntrustedCodeError, match=r"torch.export archive \(.pt2\).*arbitrary code"):
        load_user_model(path, arch="digits-mlp")
    bundle = load_user_model(path, arch="digits-mlp", trust_code=True)
    assert torch.equal(bundle.model.fc3.bias, model.fc3.bias)


def test_load_user_model_wrong_architecture_reports_missing_unexpected_misshaped(tmp_path):
    state = mlp_state()
    state["fc1.weight"] = torch.zeros(128, 32)
    del state["fc2.bias"]
    state["extra.weight"] = torch.zeros(3)
    path = save_safetensors(tmp_path / "mlp.safetensors", state)
    with pytest.raises(ValueError) as excinfo:
        load_user_model(path, arch="digits-mlp")
    message = str(excinfo.value)
    assert "does not fit digits-mlp" in message
    assert "missing (1): fc2.bias" in message
    assert "unexpected (1): extra.weight" in message
    assert "mis-shaped (1): fc1.weight (file 128x32 vs model 128x64)" in message


def test_load_user_model_other_architecture_lists_a_few_names(tmp_path, resnet18_state):
    path = save_safetensors(tmp_path / "r18.safetensors", resnet18_state)
    with pytest.raises(ValueError, match="does not fit digits-cnn") as excinfo:
        load_user_model(path, arch="digits-cnn")
    message = str(excinfo.value)
    assert "missing (" in message and "unexpected (122)" in message and "and 118 more" in message
    assert "is the architecture right" in message
    with pytest.raises(ValueError, match=r"does not fit resnet34: missing \(\d+\): layer1.2"):
        load_user_model(path, arch="resnet34")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_load_user_model_non_finite_weights_named(tmp_path, bad):
    state = mlp_state()
    state["fc2.weight"][3, 4] = bad
    state["fc3.bias"][0] = -bad
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="NaN or Inf weights in 2 tensor") as excinfo:
        load_user_model(path, arch="digits-mlp")
    assert "fc2.weight" in str(excinfo.value) and "fc3.bias" in str(excinfo.value)


def test_load_user_model_no_compressible_layers(tmp_path):
    path = tmp_path / "relu.pt"
    torch.save(nn.Sequential(nn.ReLU()), path)
    with pytest.raises(UntrustedCodeError):
        load_user_model(path)
    with pytest.raises(ValueError, match="no compressible layers") as excinfo:
        load_user_model(path, trust_code=True)
    with pytest.raises(ValueError) as engine_error:
        Engine(nn.Sequential(nn.ReLU()))
    assert str(engine_error.value) in str(excinfo.value)


def test_load_user_model_over_size_limit_refused_before_reading(tmp_path, monkeypatch):
    path = save_safetensors(tmp_path / "mlp.safetensors", mlp_state())

    def never(*args, **kwargs):
        raise AssertionError("the file must not be read")

    monkeypatch.setattr("safetensors.torch.load_file", never)
    with pytest.raises(ValueError, match="over the upload limit of 1.0 KiB"):
        load_user_model(path, arch="digits-mlp", max_bytes=1024)
    with pytest.raises(ValueError, match="over the upload limit"):
        load_user_model(path.read_bytes(), "upload.safetensors", arch="digits-mlp", max_bytes=1024)
    monkeypatch.setenv(loading.MAX_UPLOAD_ENV, "0.001")
    with pytest.raises(ValueError, match=f"over the upload limit.*{loading.MAX_UPLOAD_ENV}"):
        load_user_model(path, arch="digits-mlp")


def test_load_user_model_too_big_for_memory_refused_before_reading(tmp_path, monkeypatch):
    path = save_safetensors(tmp_path / "mlp.safetensors", mlp_state())
    monkeypatch.setattr(safeload, "available_memory_bytes", lambda: 1000)
    monkeypatch.setattr("safetensors.torch.load_file", lambda *a, **k: pytest.fail("read the file"))
    with pytest.raises(ValueError, match="needs about .* of memory but only 1000 B is available"):
        load_user_model(path, arch="digits-mlp")


def test_load_pretrained_offline_says_how_to_supply_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(ValueError, match="never downloads") as excinfo:
        load_pretrained("squeezenet1_1")
    assert "--model path/to/squeezenet1_1-" in str(excinfo.value) and "--arch squeezenet1_1" in str(excinfo.value)


def test_load_pretrained_from_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    path, _ = loading.pretrained_weights_path("squeezenet1_1")
    path.parent.mkdir(parents=True)
    reference = torchvision.models.squeezenet1_1()
    torch.save(reference.state_dict(), path)
    bundle = load_pretrained("squeezenet1_1")
    assert (bundle.kind, bundle.num_classes, bundle.input_shape) == ("torchvision", 1000, (3, 224, 224))
    assert bundle.class_names[0] == "tench" and "mean 0.485" in bundle.note
    assert torch.equal(bundle.model.classifier[1].weight, reference.classifier[1].weight)


# --------------------------------------------------------------------------- bad data


def test_load_user_data_empty_npz(tmp_path, digits_cnn):
    path = save_npz(tmp_path / "empty.npz", np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="empty.npz is empty"):
        load_user_data(path, None, digits_cnn)


def test_load_user_data_empty_image_zip_and_folder(tmp_path, digits_cnn):
    path = image_zip(tmp_path / "empty.zip", {"cats/readme.txt": b"no images here"})
    with pytest.raises(ValueError, match="empty.zip is empty: it holds no images"):
        load_user_data(path, None, digits_cnn)
    (tmp_path / "folder" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="folder is empty: it holds no images"):
        load_user_data(tmp_path / "folder", None, digits_cnn)


def test_load_user_data_zip_without_class_folders(tmp_path, digits_cnn):
    path = image_zip(tmp_path / "flat.zip", {"a.png": png_bytes((0, 0, 0)), "b.png": png_bytes((9, 9, 9))})
    with pytest.raises(ValueError, match=r"no class folders \(2 image\(s\) outside any folder\)"):
        load_user_data(path, None, digits_cnn)


def test_load_user_data_labels_out_of_range(tmp_path, digits_cnn):
    path = save_npz(tmp_path / "d.npz", np.zeros((5, 1, 8, 8), np.float32), [0, 1, 12, 3, -1])
    with pytest.raises(ValueError, match=r"labels out of range: the model has 10 classes \(labels 0 to 9\)"
                                         r" but 2 label\(s\) are outside, e.g. 12 at sample 2"):
        load_user_data(path, None, digits_cnn)


def test_load_user_data_image_folders_outnumber_classes(tmp_path):
    bundle = load_user_model(save_safetensors(tmp_path / "m.safetensors", mlp_state(2)), arch="digits-mlp")
    files = {f"{c}/1.png": png_bytes((i * 60, 0, 0)) for i, c in enumerate(["ant", "bee", "cat"])}
    with pytest.raises(ValueError, match="labels out of range: the model has 2 classes"):
        load_user_data(image_zip(tmp_path / "three.zip", files), None, bundle)


def test_load_user_data_shape_rejected_names_expected_shape(tmp_path, digits_cnn):
    path = save_npz(tmp_path / "rgb.npz", np.zeros((4, 3, 8, 8), np.float32), [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"inputs of shape \(3, 8, 8\) do not fit digits-cnn, which takes "
                                         r"inputs of shape \(1, 8, 8\)"):
        load_user_data(path, None, digits_cnn)


def test_load_user_data_nan_inputs(tmp_path, digits_cnn):
    x = np.zeros((4, 1, 8, 8), np.float32)
    x[2, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 input\(s\) hold NaN or Inf values \(first: sample 2\)"):
        load_user_data(save_npz(tmp_path / "nan.npz", x), None, digits_cnn)


def test_load_user_data_over_size_limit(tmp_path, digits_cnn):
    path = save_npz(tmp_path / "d.npz", np.zeros((64, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="over the upload limit"):
        load_user_data(path, None, digits_cnn, max_bytes=2048)
    files = {f"c/{i}.png": png_bytes((i, i, i), size=64) for i in range(8)}
    with pytest.raises(ValueError, match="over the upload limit"):
        load_user_data(image_zip(tmp_path / "big.zip", files), None, digits_cnn, max_bytes=400)


def test_load_user_data_zip_with_unsafe_path_refused(tmp_path, digits_cnn):
    path = image_zip(tmp_path / "evil.zip", {"ok/1.png": png_bytes((1, 2, 3)), "../escape/2.png": png_bytes((4, 5, 6))})
    with pytest.raises(ValueError, match="unsafe path"):
        load_user_data(path, None, digits_cnn)
    assert not (tmp_path.parent / "escape").exists()


def test_load_user_data_pickled_npz_refused(tmp_path, digits_cnn):
    marker = tmp_path / "marker"
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(ValueError, match="Python objects"):
        load_user_data(path, None, digits_cnn)
    assert not marker.exists()


def test_load_user_data_damaged_files(tmp_path, digits_cnn):
    good = save_npz(tmp_path / "good.npz", np.zeros((4, 1, 8, 8), np.float32))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="damaged or truncated"):
        load_user_data(cut, None, digits_cnn)
    broken = image_zip(tmp_path / "broken.zip", {"c/1.png": png_bytes((1, 1, 1))[:30]})
    with pytest.raises(ValueError, match="cannot read image c/1.png"):
        load_user_data(broken, None, digits_cnn)


# --------------------------------------------------------------------------- nothing lost


def test_failed_loads_leave_the_loaded_model_working(tmp_path):
    bundle = load_user_model(save_safetensors(tmp_path / "mlp.safetensors", mlp_state()), arch="digits-mlp")
    engine = Engine(bundle.model)
    data = digits_split()[1]
    before = engine.evaluate(uniform_plan(bits=4), data)
    weights = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for attempt in (lambda: load_user_model(bad, arch="digits-mlp"),
                    lambda: load_user_model(save_safetensors(tmp_path / "cnn.safetensors",
                                                             zoo.build_architecture("digits-cnn").state_dict()),
                                            arch="digits-mlp"),
                    lambda: load_user_data(save_npz(tmp_path / "e.npz", np.zeros((0, 64))), None, bundle)):
        with pytest.raises(ValueError):
            attempt()
    after = engine.evaluate(uniform_plan(bits=4), data)
    assert after == before
    assert all(torch.equal(weights[k], v) for k, v in bundle.model.state_dict().items())


def test_cli_failed_load_then_same_model_still_evaluates(tmp_path, capsys):
    model = save_safetensors(tmp_path / "cnn.safetensors", zoo.load_model("digits-cnn").model.state_dict())
    good = ["evaluate", "--model", str(model), "--arch", "digits-cnn", "--bits", "4", "--json"]
    assert main(good) == 0
    first = json.loads(capsys.readouterr().out)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(model.read_bytes()[:1000])
    assert main(["evaluate", "--model", str(bad), "--arch", "digits-cnn", "--json"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(good) == 0
    assert json.loads(capsys.readouterr().out) == first


# --------------------------------------------------------------------------- good paths


@pytest.fixture(scope="module")
def resnet18_files(tmp_path_factory, resnet18_state) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("resnet18")
    pth = folder / "resnet18.pth"  # as a training script saves it: nested, with DataParallel's prefix
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in resnet18_state.items()}}, pth)
    return {"torch.save": pth, "safetensors": save_safetensors(folder / "resnet18.safetensors", resnet18_state)}


@pytest.fixture(scope="module")
def resnet18_engine(resnet18_files) -> tuple[zoo.ModelBundle, Engine]:
    bundle = load_user_model(resnet18_files["safetensors"], arch="resnet18")
    return bundle, Engine(bundle.model)


@pytest.mark.parametrize("fmt", ["torch.save", "safetensors"])
def test_load_user_model_resnet18_state_dict_loaded_and_compressed(resnet18_files, resnet18_state, fmt):
    bundle = load_user_model(resnet18_files[fmt], arch="resnet18")
    assert (bundle.kind, bundle.num_classes, bundle.input_shape) == ("user", 10, (3, 224, 224))  # 10 read off fc
    assert bundle.class_names == tuple(f"class {i}" for i in range(10)) and bundle.dataset is None
    assert all(torch.equal(bundle.model.state_dict()[k], v) for k, v in resnet18_state.items())
    results = Engine(bundle.model).compress_layers(uniform_plan(bits=4, granularity="tensor"))
    assert len(results) == 21 and all(r.quant.bits == 4 for r in results.values())
    assert all(torch.equal(bundle.model.state_dict()[k], v) for k, v in resnet18_state.items())  # untouched


def test_load_user_data_npz_evaluated_on_resnet18(tmp_path, resnet18_engine):
    bundle, engine = resnet18_engine
    rng = np.random.default_rng(0)
    npz = save_npz(tmp_path / "d.npz", rng.standard_normal((8, 3, 32, 32)).astype(np.float32), np.arange(8) % 10)
    data = load_user_data(npz, None, bundle)  # resnet18 takes any input size >= 32
    result = engine.evaluate(uniform_plan(bits=8), data)
    assert result.n_samples == 8 and result.accuracy is not None
    assert result.compression_ratio > 3.5 and result.agreement >= 0.75


def test_load_user_data_image_zip_evaluated_on_resnet18(tmp_path, resnet18_engine):
    bundle, engine = resnet18_engine
    files = {f"pets/{cls}/{i}.png": png_bytes((200 * (cls == "dog"), 40 * i, 90), size=40)
             for cls in ("dog", "cat") for i in range(3)}
    files["__MACOSX/pets/._x.png"] = b"junk"
    data = load_user_data(image_zip(tmp_path / "pets.zip", files), None, bundle, image_size=32,
                          mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert data.x.shape == (6, 3, 32, 32) and data.y.tolist() == [0, 0, 0, 1, 1, 1]  # cat=0, dog=1 (sorted)
    assert data.class_names == ("cat", "dog")
    red = (200 / 255 - 0.485) / 0.229
    assert data.x[3, 0, 16, 16].item() == pytest.approx(red, abs=1e-5)
    result = engine.evaluate(uniform_plan(bits=8), data)
    assert result.n_samples == 6 and result.accuracy is not None


def test_load_user_data_image_folder_grey_model_and_class_names(tmp_path, digits_cnn):
    for cls, value in (("3", 255), ("7", 0)):
        (tmp_path / "digits" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (value, value, value)).save(tmp_path / "digits" / cls / f"{i}.png")
    data = load_user_data(tmp_path / "digits", None, digits_cnn)
    assert data.x.shape == (4, 1, 8, 8)  # RGB converted to the model's one channel, resized to 8x8
    assert data.y.tolist() == [3, 3, 7, 7]  # folders named after the model's classes keep their labels
    assert data.x[:2].eq(1.0).all() and data.x[2:].eq(0.0).all()
    assert "class names" in data.description


def test_load_user_data_unlabeled_npz_is_fidelity_only(tmp_path, digits_cnn):
    x = digits_split()[1].x[:20, 0].numpy()  # (N, 8, 8): the channel axis is added
    data = load_user_data(save_npz(tmp_path / "x.npz", x), None, digits_cnn)
    assert data.y is None and data.x.shape == (20, 1, 8, 8) and "only fidelity" in data.description
    result = Engine(digits_cnn.model).evaluate(uniform_plan(bits=8), data)
    assert result.accuracy is None and result.agreement > 0.9


def test_load_user_data_max_samples_subset(tmp_path, digits_cnn):
    test = digits_split()[1]
    data = load_user_data(save_npz(tmp_path / "d.npz", test.x.numpy(), test.y.numpy()), None, digits_cnn,
                          max_samples=50)
    assert len(data) == 50 and "subset of 50 of 450" in data.description


def test_load_user_model_from_bytes_upload(tmp_path):
    path = save_safetensors(tmp_path / "m.safetensors", mlp_state(4))
    bundle = load_user_model(path.read_bytes(), "uploaded.safetensors", arch="digits-mlp")
    assert bundle.name == "uploaded.safetensors (digits-mlp)" and bundle.num_classes == 4
    assert bundle.dataset is None  # 4 classes: not the digits task


def test_check_data_accepts_generated_inputs(digits_cnn):
    from lightviz.io.datasets import generated_inputs

    check_data(digits_cnn, generated_inputs((1, 8, 8), n=3))
    with pytest.raises(ValueError, match="do not fit"):
        check_data(digits_cnn, EvalData(x=torch.zeros(2, 5), y=None, name="flat", description=""))


# --------------------------------------------------------------------------- CLI


def test_cli_evaluate_user_safetensors_with_npz(tmp_path, capsys):
    model = save_safetensors(tmp_path / "cnn.safetensors", zoo.load_model("digits-cnn").model.state_dict())
    test = digits_split()[1]
    data = save_npz(tmp_path / "d.npz", test.x.numpy(), test.y.numpy())
    assert main(["evaluate", "--model", str(model), "--arch", "digits-cnn", "--data", str(data),
                 "--max-samples", "200", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_samples"] == 200 and report["num_classes"] == 10 and report["float_accuracy"] >= 0.95
    assert report["model"] == "cnn.safetensors (digits-cnn)"


def test_cli_sweep_user_model_on_image_folder(tmp_path, capsys):
    model = save_safetensors(tmp_path / "mlp.safetensors", zoo.load_model("digits-mlp").model.state_dict())
    files = {f"{c}/{i}.png": png_bytes((30 * i, 30 * i, 30 * i)) for c in ("0", "1") for i in range(3)}
    out = tmp_path / "r.csv"
    assert main(["sweep", "--model", str(model), "--arch", "digits-mlp", "--data",
                 str(image_zip(tmp_path / "imgs.zip", files)), "--bits", "4,8", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize("argv, expected", [
    (["--model", "{bad}", "--arch", "digits-cnn"], "not a model file"),
    (["--model", "{missing}", "--arch", "digits-cnn"], "no such file"),
    (["--model", "digits-cnn", "--arch", "digits-cnn"], "--arch goes with a model file"),
    (["--model", "{good}", "--arch", "no-such-arch"], "unknown architecture"),
    (["--model", "{good}", "--arch", "digits-cnn", "--max-samples", "0"], "--max-samples must be a positive"),
    (["--model", "{good}", "--arch", "digits-cnn", "--mean", "0.5"], "apply to an image folder"),
])
def test_cli_bad_model_input_exit_2_one_line(tmp_path, capsys, argv, expected):
    good = save_safetensors(tmp_path / "good.safetensors", zoo.load_model("digits-cnn").model.state_dict())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    names = {"good": good, "bad": bad, "missing": tmp_path / "missing.pt"}
    argv = [arg.format(**names) for arg in argv]
    assert main(["evaluate", *argv, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and expected in captured.err
    assert captured.err.startswith("lightviz: error: ") and "Traceback" not in captured.err
