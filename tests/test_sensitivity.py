"""Sensitivity: reproducible, equal to Engine.evaluate and the CLI of the same single-layer plan,
and the torch.fx tail runner equal to a full forward (residuals, in-place ops, fallback)."""

import json
import math

import pytest
import torch
from torch import nn

from lightviz import cli
from lightviz.analysis.sensitivity import (
    SENSITIVITY_COLUMNS,
    pivot,
    sensitivity,
    settings,
    single_layer_plan,
)
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.prefix import PrefixCache
from lightviz.core.specs import Plan
from lightviz.io import zoo
from lightviz.io.datasets import digits_split, generated_inputs

NUMBERS = ["accuracy", "accuracy_drop", "accuracy_se", "agreement", "kl", "layer_size_bytes", "size_bytes"]


def fresh(name):
    model = zoo.build_sample(name)
    model.load_state_dict(zoo.load_model(name).model.state_dict())
    return model.eval()


@pytest.fixture(scope="module")
def test_data():
    return digits_split()[1]


@pytest.fixture(scope="module")
def cnn_rows(test_data):
    engine = Engine(fresh("digits-cnn"))
    return engine, sensitivity(engine, test_data, bits=[2, 4], sparsities=[0.5])


def test_sensitivity_is_reproducible_and_reuse_changes_nothing(cnn_rows, test_data):
    _, first = cnn_rows
    again = sensitivity(Engine(fresh("digits-cnn")), test_data, bits=[2, 4], sparsities=[0.5])
    full = sensitivity(Engine(fresh("digits-cnn")), test_data, bits=[2, 4], sparsities=[0.5], reuse=False)
    assert first.attrs["reuse"] and not full.attrs["reuse"]
    assert first.equals(again) and first[NUMBERS].equals(full[NUMBERS])
    assert list(first.columns) == SENSITIVITY_COLUMNS and len(first) == 4 * 3


def test_sensitivity_rows_equal_engine_evaluate_of_the_single_layer_plan(cnn_rows, test_data):
    engine, df = cnn_rows
    configs = {label: config for label, _, config in settings(Plan(), [2, 4], [0.5])}
    other = Engine(fresh("digits-cnn"))  # an engine of its own: no cached logits shared
    for row in df.itertuples():
        evaluation = other.evaluate(single_layer_plan(Plan(), row.layer, configs[row.setting]), test_data)
        assert (row.accuracy, row.agreement, row.kl, row.size_bytes) == (
            evaluation.accuracy, evaluation.agreement, evaluation.kl, evaluation.size_bytes), row
        assert row.accuracy_drop == evaluation.float_accuracy - evaluation.accuracy
        assert row.accuracy_se == math.sqrt(row.accuracy * (1 - row.accuracy) / 450)


def test_sensitivity_row_equals_cli_evaluate(cnn_rows, tmp_path, capsys):
    _, df = cnn_rows
    row = df[(df["layer"] == "features.1.0") & (df["setting"] == "2 bits")].iloc[0]
    (_, _, config), = settings(Plan(), [2])
    path = tmp_path / "plan.json"
    path.write_text(single_layer_plan(Plan(), "features.1.0", config).to_json())
    assert cli.main(["evaluate", "--model", "digits-cnn", "--plan", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["accuracy"], report["kl"], report["size_bytes"]) == (row.accuracy, row.kl, row.size_bytes)
    assert report["wa"] == "W2-32A32"  # one layer at 2 bits, the others float32
    assert row.accuracy_drop > 0.05  # 2-bit features.1.0 matters


def test_pivot_is_layers_by_settings(cnn_rows):
    _, df = cnn_rows
    table = pivot(df)
    assert list(table.index) == ["features.0.0", "features.1.0", "features.3.0", "classifier"]
    assert list(table.columns) == ["2 bits", "4 bits", "50% sparse"]


def test_resnet_tails_with_residuals_equal_full_forwards(test_data):
    small = EvalData(test_data.x[:300], test_data.y[:300], "digits-test", "first 300")  # two batches
    reused = sensitivity(Engine(fresh("digits-resnet")), small, bits=[2, 3])
    full = sensitivity(Engine(fresh("digits-resnet")), small, bits=[2, 3], reuse=False)
    assert reused.attrs["reuse"] and reused[NUMBERS].equals(full[NUMBERS])


class Residual(nn.Module):
    """In-place ops on values a later layer's tail also reads: x += ..., ReLU(inplace) on an alias."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.a(x)
        skip = h.view(h.shape)  # an alias of h
        y = self.b(h)
        skip += y  # writes into h, which the tail from `b` reads again
        return self.c(self.relu(skip))


def test_prefix_cache_survives_in_place_ops_and_repeats():
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(600, 6)
    cache = PrefixCache(model, x, ["a", "b", "c"])
    with torch.no_grad():
        expected = torch.cat([model(x[i:i + 256]) for i in range(0, 600, 256)])
    assert torch.equal(cache.float_logits, expected)
    new_weight = torch.randn(6, 6)
    for _ in range(3):  # a run must not corrupt the cached values for the next one
        got = cache.run_from("b", {"weight": new_weight})
        assert torch.equal(got, cache.run_full("b", {"weight": new_weight}))
        assert torch.equal(cache.run_from("c", {}), expected)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            x = x * 2
        return self.fc(x)


def test_untraceable_model_falls_back_to_full_forwards():
    df = sensitivity(Engine(Untraceable().eval()), generated_inputs((4,), n=16), bits=[2, 8])
    assert not df.attrs["reuse"] and "torch.fx" in df.attrs["note"]
    assert df["accuracy"].isna().all() and (df["kl"] >= 0).all()


def test_sensitivity_rejects_bad_settings_and_reports_progress(test_data):
    engine = Engine(fresh("digits-mlp"))
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 16"):
        sensitivity(engine, test_data, bits=[0])
    with pytest.raises(ValueError, match="at least one setting"):
        sensitivity(engine, test_data, bits=[])
    with pytest.raises(ValueError, match="layers must be among"):
        sensitivity(engine, test_data, bits=[4], layers=["nope"])
    calls = []
    df = sensitivity(engine, test_data, bits=[4], layers=["fc2"], max_samples=50,
                     progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 1)] and df["n_samples"].tolist() == [50]
