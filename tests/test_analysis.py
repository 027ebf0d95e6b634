"""What the dashboard's charts show: histograms and grids, flips, edits, sizes, plot builders."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lightviz.analysis import editing
from lightviz.analysis import explore as analysis
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.specs import LayerConfig, Plan, PruneSpec, QuantSpec
from lightviz.plots import explore as plots
from lightviz.plots import tradeoffs as tradeoff_plots


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    model[1].running_var.uniform_(0.5, 2.0)
    return Engine(model.eval())


def _on_grid(values: np.ndarray, levels: np.ndarray) -> bool:
    return bool(np.isin(values.astype(np.float32), levels.astype(np.float32)).all())


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("range_method", ["minmax", "percentile", "mse", "entropy"])
def test_weight_histogram_tensor_grid_holds_every_dequantized_value(engine, scheme, range_method):
    plan = uniform_plan(bits=3, scheme=scheme, granularity="tensor", range_method=range_method, percentile=99.0)
    result = engine.compress_layer(plan, "0")
    hist = analysis.weight_histogram(result)
    assert hist.scope == "whole layer"
    assert len(hist.levels) == (7 if scheme == "symmetric" else 8)
    assert _on_grid(result.weight_hat.numpy().ravel(), hist.levels)
    assert hist.span == (hist.levels[0], hist.levels[-1])
    assert hist.float_counts.sum() == result.weight.numel()
    assert hist.compressed_counts.sum() == result.weight.numel()
    assert hist.pruned == 0


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_weight_histogram_channel_grid_is_that_channels(engine, scheme):
    result = engine.compress_layer(uniform_plan(bits=2, scheme=scheme, granularity="channel"), "0")
    whole = analysis.weight_histogram(result)
    assert whole.levels is None and "per channel" in whole.note
    for channel in range(8):
        hist = analysis.weight_histogram(result, channel=channel)
        assert hist.scope == f"channel {channel}"
        assert hist.n_weights == 27
        assert _on_grid(result.weight_hat[channel].numpy().ravel(), hist.levels)
        assert math.isclose(hist.step, float(result.qparams.scale[channel]), rel_tol=1e-6)


def test_weight_histogram_group_grid_includes_the_short_tail(engine):
    # Linear 128 inputs, groups of 48: two full groups and a tail of 32 per channel
    result = engine.compress_layer(uniform_plan(bits=2, granularity="group", group_size=48), "4")
    assert analysis.block_grid(result) == (10, 3, 48)
    for channel in (0, 9):
        for group, (start, stop) in enumerate([(0, 48), (48, 96), (96, 128)]):
            hist = analysis.weight_histogram(result, channel=channel, group=group)
            assert hist.n_weights == stop - start
            assert _on_grid(result.weight_hat[channel, start:stop].numpy(), hist.levels)
    assert analysis.weight_histogram(result, channel=0).levels is None


def test_weight_histogram_pruned_weights_are_counted_apart(engine):
    plan = uniform_plan(bits=4, granularity="tensor", sparsity=0.5)
    result = engine.compress_layer(plan, "4")
    hist = analysis.weight_histogram(result)
    assert hist.pruned == round(0.5 * result.weight.numel())
    zero_bin = np.searchsorted(hist.edges, 0.0) - 1
    assert math.isclose(hist.centers[zero_bin], 0.0, abs_tol=1e-12)  # exact zeros sit mid-bin
    assert hist.edges[0] < result.weight.min() and hist.edges[-1] > result.weight.max()
    assert hist.compressed_counts.sum() == result.weight.numel() - hist.pruned
    assert hist.float_counts.sum() == result.weight.numel()


def test_weight_histogram_many_levels_are_not_drawn_and_float_has_none(engine):
    hist = analysis.weight_histogram(engine.compress_layer(uniform_plan(bits=8, granularity="tensor"), "4"))
    assert hist.levels is None and hist.span is not None and "too many" in hist.note
    floating = analysis.weight_histogram(engine.compress_layer(uniform_plan(bits=None), "4"))
    assert floating.levels is None and floating.span is None and "float" in floating.note


def test_weight_histogram_binary_has_two_levels(engine):
    result = engine.compress_layer(uniform_plan(bits=1, granularity="tensor"), "4")
    hist = analysis.weight_histogram(result)
    alpha = float(result.qparams.scale[0])
    np.testing.assert_allclose(hist.levels, [-alpha, alpha], rtol=1e-6)  # sign(0) = +1: no level at 0
    assert hist.span is None and "binarized" in hist.note


def test_weight_histogram_counts_saturated_weights(engine):
    plan = uniform_plan(bits=4, granularity="tensor", range_method="percentile", percentile=90.0)
    result = engine.compress_layer(plan, "4")
    hist = analysis.weight_histogram(result)
    w = result.weight.numpy().ravel()
    lo, hi = hist.span
    assert hist.saturated == int(((w < lo - hist.step / 2) | (w > hi + hist.step / 2)).sum()) > 0


def test_weight_histogram_rejects_a_channel_out_of_range(engine):
    result = engine.compress_layer(uniform_plan(bits=4), "0")
    with pytest.raises(ValueError, match="channel must be from 0 to 7"):
        analysis.weight_histogram(result, channel=8)


def test_flipped_samples_labels_each_change():
    ref = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])
    test = torch.tensor([[0, 3.0, 0], [0, 3.0, 0], [3.0, 0, 0], [0, 0, 3.0]])
    flips = analysis.flipped_samples(ref, test, torch.tensor([0, 1, 0, 1]))
    assert flips.to_dict("list") == {"index": [0, 3, 2], "true": [0, 1, 0], "float_pred": [0, 0, 2],
                                     "compressed_pred": [1, 2, 0], "change": ["broke", "changed", "fixed"]}
    unlabeled = analysis.flipped_samples(ref, test)
    assert unlabeled["change"].tolist() == ["changed"] * 3
    assert analysis.flipped_samples(ref, ref).empty


def test_size_parts_add_up_to_each_layer(engine):
    table = engine.layer_table(uniform_plan(bits=4, scheme="asymmetric", sparsity=0.6))
    parts = analysis.size_parts(table)
    assert list(parts["part"].unique()) == list(analysis.SIZE_PARTS.values())
    for name, size in zip(table["name"], table["size_bytes"]):
        assert math.ceil(parts.loc[parts["layer"] == name, "bytes"].sum()) == size


def test_role_counts_and_parameter_count(engine):
    assert analysis.role_counts(engine) == {"conv": 1, "linear": 1}
    assert analysis.parameter_count(engine.model) == 8 * 27 + 8 + 16 + 1280 + 10


def test_sqnr_vs_bits_grows_with_bits(engine):
    curves = analysis.sqnr_vs_bits(engine, Plan(default=LayerConfig(prune=PruneSpec(sparsity=0.5))), [8, 2, 4])
    assert curves["bits"].tolist() == [2, 2, 4, 4, 8, 8]
    for _, rows in curves.groupby("layer"):
        assert rows["sqnr_db"].is_monotonic_increasing
    # no pruning in the curves: 8-bit per-channel SQNR of a dense layer is high
    assert curves.query("bits == 8")["sqnr_db"].min() > 35


def test_apply_layer_edits_overrides_only_that_layer():
    plan = Plan()
    edited = editing.apply_layer_edits(plan, ["a", "b"], {"1": {"bits": "4", "sparsity": 0.5}})
    assert dict(edited.overrides) == {"b": LayerConfig(quant=QuantSpec(bits=4), prune=PruneSpec(sparsity=0.5))}
    assert edited.config_for("a") == plan.default
    back = editing.apply_layer_edits(edited, ["a", "b"], {1: {"bits": 8, "sparsity": 0.0}})
    assert back.overrides == ()
    floating = editing.apply_layer_edits(plan, ["a"], {0: {"bits": "float", "keep_float": True}})
    assert floating.config_for("a").keep_float and floating.config_for("a").quant.bits is None


@pytest.mark.parametrize("edit, message", [({"bits": 0}, "layer a: bits must be"),
                                           ({"sparsity": 1.5}, "layer a: sparsity must be"),
                                           ({"layer": "x"}, "read-only")])
def test_apply_layer_edits_rejects_bad_values_naming_the_layer(edit, message):
    with pytest.raises(ValueError, match=message):
        editing.apply_layer_edits(Plan(), ["a"], {0: edit})
    with pytest.raises(ValueError, match="outside the table"):
        editing.apply_layer_edits(Plan(), ["a"], {3: {"bits": 4}})


def test_layer_editor_frame_shows_configured_values(engine):
    plan = uniform_plan(bits=4).with_override("4", LayerConfig(keep_float=True))
    frame = editing.layer_editor_frame(engine, plan, engine.layer_table(plan))
    assert frame.columns.tolist() == editing.EDITOR_COLUMNS
    assert frame["bits"].tolist() == ["4", "8"] and frame["keep_float"].tolist() == [False, True]
    assert frame["override"].tolist() == [False, True] and frame["params"].tolist() == [216, 1280]


def test_histogram_figure_draws_levels_span_and_pruned(engine):
    result = engine.compress_layer(uniform_plan(bits=2, granularity="tensor", sparsity=0.3), "4")
    hist = analysis.weight_histogram(result)
    spec = json.loads(plots.weight_histogram_figure(hist, "4", "int2").to_json())
    names = [trace["name"] for trace in spec["data"]]
    assert names[2].startswith("pruned to 0") and names[3] == "quantization levels (3)"
    assert spec["layout"]["xaxis"]["title"]["text"] == "weight value"
    assert spec["layout"]["shapes"][0]["type"] == "rect"


def test_layer_figures_mark_exact_layers_and_stack_parts(engine):
    plan = uniform_plan(bits=4).with_override("4", LayerConfig(keep_float=True))
    table = engine.layer_table(plan)
    sqnr = plots.layer_sqnr_figure(table, "0").to_dict()
    assert [a["text"] for a in sqnr["layout"]["annotations"]][1] == "exact"
    assert sqnr["layout"]["yaxis"]["title"]["text"] == "SQNR (dB)"
    assert "text" not in sqnr["data"][0]  # bar text would stop Streamlit's click selection
    size = plots.layer_size_figure(table).to_dict()
    assert [trace["name"] for trace in size["data"]][:4] == list(analysis.SIZE_PARTS.values())


def test_tradeoff_figure_has_every_point():
    sweep = pd.DataFrame({"label": ["a", "b", "c"], "scheme": ["symmetric"] * 3, "granularity": ["channel"] * 3,
                          "size_bytes": [100, 200, 300], "accuracy": [0.5, 0.9, 0.8]})
    fig = tradeoff_plots.tradeoff_figure(sweep, "accuracy", sweep.iloc[:2], (1000, 0.95), (200, 0.9, "b"), None)
    points = fig.to_dict()["data"][0]
    assert list(points["x"]) == [100, 200, 300] and list(points["y"]) == [50.0, 90.0, 80.0]
    assert fig.layout.xaxis.type == "log"


def test_mosaic_tiles_images_with_gaps():
    tiled = plots.mosaic(np.arange(8, dtype=float).reshape(2, 2, 2), cols=2)
    assert tiled.shape == (3, 5)
    assert tiled[0, :2].tolist() == [0.0, 1.0] and np.isnan(tiled[0, 2]) and tiled[1, 3:].tolist() == [6.0, 7.0]


def test_interactive_cost_error_refuses_entropy_on_tiny_groups(engine):
    assert analysis.interactive_cost_error(engine, uniform_plan(bits=4, range_method="entropy")) is None
    tiny = uniform_plan(bits=4, granularity="group", group_size=1, range_method="entropy")
    assert "1,496 blocks" in analysis.interactive_cost_error(engine, tiny)
    assert analysis.interactive_cost_error(engine, uniform_plan(bits=4, granularity="group", group_size=1)) is None
