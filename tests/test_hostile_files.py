"""Hostile files, built here at test time (tests/hostile.py): broken archives, lying .npy
headers, a zip whose directory understates a member, images resized past the input bound,
more generated inputs than memory holds, trusted pickles naming modules that must not be
imported, weights near float32's limit. Each bad input gives one ValueError in the library and
exit 2 with one stderr line in the CLI; where the case is about memory, the child's peak RSS is
measured: one child process runs the CLI cases in turn after a good archive (the baseline)
and reports its peak RSS after each (getrusage), so each case's growth is its own.
"""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import pytest
import torch
from hostile import (
    DEFECTS,
    Member,
    broken_archive,
    cli_one_line,
    digits_npz_members,
    huge_shape_npz,
    image_zip_members,
    measure_cli_runs,
    module_pickle,
    png_bytes,
    understated_zip,
    zip_bytes,
)
from safetensors.torch import save_file

from lightviz.core.evaldata import MAX_INPUT_VALUES
from lightviz.io import zoo
from lightviz.io.datasets import generated_inputs
from lightviz.io.userdata import load_user_data
from lightviz.io.ziparchive import ZipBudget, read_member

MiB = 2**20
# What a refused request may add to the peak of a child that loads a good archive: reading
# headers and small members, not the gigabytes the file or the flags claim.
RSS_SLACK = 200 * MiB

EXPECTED = {"bad-crc": "Bad CRC-32", "corrupt-deflate": "damaged (Error -3", "encrypted": "is encrypted",
            "method-99": "compressed with AES encryption (WinZip)"}
CASES = [(kind, defect) for kind in ("npz", "zip") for defect in DEFECTS]
TRUSTED_NAMES = ("lightviz.__main__", "lightviz.ui.sidebar")
NINE_IMAGES = [Member(f"{c}/{i}.png", png_bytes((30 * c, 9 * i, 60))) for c in range(3) for i in range(3)]


@pytest.fixture(scope="module")
def digits_cnn() -> zoo.ModelBundle:
    return zoo.load_model("digits-cnn")


@pytest.fixture(scope="module")
def child(tmp_path_factory) -> tuple[dict[str, dict], list[str]]:
    """The CLI cases that need a fresh process, run one after another in one child (one torch
    import), each with the child's peak RSS so far: a good archive first (the baseline), the
    understated zip member, images resized past the bound, resnet18 on 2 generated inputs (its
    own baseline) and on 100,000,000; trusted pickles naming lightviz.__main__.X and
    lightviz.ui.sidebar.X (the child reports whether either module, or Streamlit, got
    imported); and weights near float32's limit, with every warning enabled."""
    folder = tmp_path_factory.mktemp("child")
    good, bomb, small = folder / "good.zip", folder / "bomb.zip", folder / "small.zip"
    good.write_bytes(zip_bytes(image_zip_members()))
    bomb.write_bytes(understated_zip())  # 1 MB on disk, 1 GiB of zeros behind a 1,000-byte directory entry
    small.write_bytes(zip_bytes(NINE_IMAGES))
    state = {k: v.clone().contiguous() for k, v in zoo.load_model("digits-cnn").model.state_dict().items()}
    for key in ("features.1.0.weight", "classifier.weight"):
        state[key].view(-1)[:2] = torch.tensor([3e38, -3e38])
    save_file(state, str(folder / "extreme.safetensors"))
    runs = {
        "baseline": ["evaluate", "--model", "digits-cnn", "--data", str(good), "--json"],
        "bomb": ["evaluate", "--model", "digits-cnn", "--data", str(bomb), "--json"],
        "image-size": ["evaluate", "--model", "digits-cnn", "--data", str(small), "--image-size", "4096"],
        "resnet18": ["evaluate", "--model", "resnet18", "--max-samples", "2", "--json"],
        "max-samples": ["evaluate", "--model", "resnet18", "--max-samples", "100000000", "--json"],
        **{name: ["evaluate", "--model", str(module_pickle(name, folder / f"{name}.pt")), "--trust-code",
                  "--input-shape", "4", "--json"] for name in TRUSTED_NAMES},
        "extreme": ["evaluate", "--model", str(folder / "extreme.safetensors"), "--arch", "digits-cnn", "--bits",
                    "2", "--scheme", "asymmetric", "--granularity", "tensor", "--json"],
    }
    results, imported = measure_cli_runs(list(runs.values()))
    return dict(zip(runs, results)), imported


def _refused(child, case: str, baseline: str | None = None) -> str:
    """The case's one stderr line, after checking exit 2, nothing on stdout and (against
    `baseline`) its peak RSS."""
    runs, _ = child
    run = runs[case]
    assert (run["code"], run["out"]) == (2, "") and run["err"].count("\n") == 1, run["err"]
    assert run["err"].startswith("lightviz: error: ") and "Traceback" not in run["err"]
    if baseline is None:
        return run["err"]
    base = runs[baseline]
    assert base["code"] == 0, base["err"]
    assert run["peak"] - base["peak"] < RSS_SLACK, (run["peak"] / MiB, base["peak"] / MiB)
    return run["err"]


@pytest.mark.parametrize("kind, defect", CASES)
def test_load_user_data_broken_archive_one_value_error(digits_cnn, kind, defect):
    name, data = broken_archive(kind, defect)
    with pytest.raises(ValueError) as caught:  # never zlib.error, RuntimeError, NotImplementedError, BadZipFile
        load_user_data(data, name, digits_cnn)
    assert type(caught.value) is ValueError
    assert name in str(caught.value) and EXPECTED[defect] in str(caught.value)


def test_load_user_data_npz_header_claiming_a_huge_shape_refused_before_allocating(digits_cnn):
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"claims shape \(1000000000000, 1, 8, 8\) of float32"):
            load_user_data(huge_shape_npz(), "huge.npz", digits_cnn)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB  # the header's 232 TiB were never asked for


@pytest.mark.parametrize("kind, defect", [*CASES, ("npz", "huge-shape")])
def test_cli_broken_archive_exit_2_one_line(tmp_path, capsys, kind, defect):
    name, data = ("huge.npz", huge_shape_npz()) if defect == "huge-shape" else broken_archive(kind, defect)
    path = tmp_path / name
    path.write_bytes(data)
    err = cli_one_line(capsys, ["evaluate", "--model", "digits-cnn", "--data", str(path), "--json"])
    assert name in err


def test_good_archives_still_load(digits_cnn):
    npz = load_user_data(zip_bytes(digits_npz_members()), "good.npz", digits_cnn)
    images = load_user_data(zip_bytes(image_zip_members()), "good.zip", digits_cnn)
    assert (len(npz), npz.labeled, len(images), images.labeled) == (4, True, 6, True)
    stored = zip_bytes([Member(m.name, m.data, method=0) for m in digits_npz_members()])  # np.savez: stored
    assert len(load_user_data(stored, "stored.npz", digits_cnn)) == 4


def test_read_member_stops_at_its_budget_whatever_the_directory_says():
    zeros = 64 * MiB
    archive = zipfile.ZipFile(io.BytesIO(zip_bytes([Member("a/1.png", bytes(zeros))])))  # honest directory
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="unpacks to more than its archive may take"):
            read_member(archive, archive.infolist()[0], "big.zip", ZipBudget(MiB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB  # chunks up to the budget, not the 64 MiB member


def test_cli_understated_zip_member_bounded_memory(child):
    err = _refused(child, "bomb", "baseline")  # the 1 GiB used to be inflated: ~2 GiB more
    assert "bomb.zip: a/1.png is damaged" in err


def test_image_size_bounded_before_decoding(digits_cnn):
    with pytest.raises(ValueError) as caught:  # 9 images x 1 x 4096 x 4096 = 151 M values
        load_user_data(zip_bytes(NINE_IMAGES), "small.zip", digits_cnn, image_size=4096)
    message = str(caught.value)
    assert f"over the limit of {MAX_INPUT_VALUES:,} values" in message and "at most 8 at this size" in message


def test_cli_image_size_bounded_memory(child):
    err = _refused(child, "image-size", "baseline")  # peaks only grow: bomb included
    assert f"over the limit of {MAX_INPUT_VALUES:,} values" in err


def test_generated_inputs_bounded_before_allocating():
    with pytest.raises(ValueError, match=r"ask for at most 891 inputs of this shape"):
        generated_inputs((3, 224, 224), n=100_000_000)


def test_cli_max_samples_beyond_memory_exit_2_bounded_memory(child):
    err = _refused(child, "max-samples", "resnet18")
    assert "100,000,000 generated inputs" in err and f"over the limit of {MAX_INPUT_VALUES:,} values" in err


@pytest.mark.parametrize("name", TRUSTED_NAMES)
def test_cli_trusted_pickle_never_imports_the_module_it_names(child, name):
    """Importing lightviz.__main__ ran the CLI inside the loader; lightviz.ui.sidebar is Streamlit code."""
    err = _refused(child, name)
    assert f"{name}.X" in err and "lightviz will not construct" in err
    assert child[1] == []  # neither module, nor lightviz.ui or streamlit, was imported in the child


def test_cli_extreme_weights_json_nulls_with_notes_and_no_warnings(child):
    """Exit 0, KL null with notes saying why, nothing on stderr though every warning is on."""
    run = child[0]["extreme"]
    assert run["code"] == 0 and run["err"] == "", run["err"]
    report = json.loads(run["out"])
    assert report["kl"] is None
    notes = " ".join(report["notes"])
    assert "kl is null: it came out as nan" in notes and "outputs overflow float32" in notes
    layer = next(row for row in report["layers"] if row["name"] == "features.1.0")
    assert layer["mse"] is None and "mse is null" in notes  # s * (q - z) = -4e38: float32 -inf, as torch gives
