"""The Learn page: its numbers against DESIGN.md's worked example and torch.ao, and the page itself."""

from __future__ import annotations

import math

import pytest
import torch
from torch.ao.quantization.observer import MinMaxObserver

from lightviz.analysis import clipping, learn
from lightviz.core import metrics
from lightviz.core.quant import choose_qparams, code_range, fake_quantize
from lightviz.core.specs import QuantSpec
from lightviz.plots import learn as learn_plots

PAGE = "pages/learn.py"
TOY = learn.parse_tensor(learn.DEFAULT_TOY)


def _reference(weight: torch.Tensor, bits: int, scheme: str):
    """torch.ao: MinMaxObserver then fake_quantize_per_tensor_affine -> (scale, zero_point, codes, w_hat)."""
    qmin, qmax = code_range(QuantSpec(bits=bits, scheme=scheme))
    symmetric = scheme == "symmetric"
    observer = MinMaxObserver(dtype=torch.qint8 if symmetric else torch.quint8, quant_min=qmin, quant_max=qmax,
                              qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    w_hat = torch.fake_quantize_per_tensor_affine(weight, float(scale), int(zero_point), qmin, qmax)
    codes = torch.round(w_hat / scale) + zero_point  # exact: w_hat = s * (q - z)
    return float(scale), int(zero_point), codes.to(torch.int64), w_hat


# --- the worked example and torch.ao ------------------------------------------------------


def test_toy_steps_tensor_symmetric_worked_example():
    """DESIGN.md: w in [-10, 10] at 8 bits symmetric: s = 10/127, q(-5) = -64, -5.0394, max error s/2."""
    steps = learn.toy_steps(torch.tensor([-10.0, -5.0, 10.0]), bits=8, scheme="symmetric")
    assert steps.scale == float(torch.tensor(10.0) / 127.0)
    assert steps.zero_point == 0 and (steps.qmin, steps.qmax) == (-127, 127)
    assert steps.table["q"].tolist() == [-127, -64, 127]
    assert round(float(steps.table["w_hat"][1]), 4) == -5.0394
    assert steps.table["w_over_s"][1] == -63.5  # a tie: half to even gives -64
    texts = dict(steps.latex())
    assert r"\frac{10}{127} = 0.07874" in texts["2. Scale"]
    assert r"q(-5) = \operatorname{round}(-63.5) + 0 = -64" in texts["4. Integer codes (round half to even)"]
    assert r"= -5.0394" in texts["5. Dequantize"]
    # over [-10, 10] the error reaches s/2 and never exceeds it
    dense = learn.toy_steps(torch.linspace(-10, 10, 20001), bits=8, scheme="symmetric")
    assert dense.scale == steps.scale
    assert dense.half_step * 0.999 < dense.max_error <= dense.half_step * (1 + 1e-6) and dense.within_half_step


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_toy_steps_tensor_matches_torch_ao(bits, scheme):
    if bits == 1 and scheme == "symmetric":
        pytest.skip("1-bit symmetric is binarization, tested below")
    torch.manual_seed(bits)
    for weight in (TOY, torch.randn(40) * 3 + 0.5, torch.tensor([0.0, 0.25, 1.0])):
        steps = learn.toy_steps(weight, bits, scheme)
        scale, zero_point, codes, w_hat = _reference(weight, bits, scheme)
        assert (steps.scale, steps.zero_point) == (scale, zero_point)
        assert steps.table["q"].tolist() == codes.tolist()
        assert torch.equal(torch.tensor(steps.table["w_hat"].to_numpy(), dtype=torch.float32), w_hat)
        assert steps.within_half_step  # minmax range: nothing beyond s/2 (up to float32 rounding)


def test_toy_steps_tensor_symmetric_1bit_is_binarization():
    steps = learn.toy_steps(TOY, bits=1, scheme="symmetric")
    alpha = TOY.abs().mean()
    assert steps.binary and steps.scale == float(alpha)
    assert torch.equal(torch.tensor(steps.table["w_hat"].to_numpy(), dtype=torch.float32),
                       torch.where(TOY >= 0, 1.0, -1.0) * alpha)  # TOY holds a 0: it takes +alpha
    assert "binarization" in steps.latex()[0][0]
    zeros = learn.toy_steps(torch.tensor([-1.0, 0.0, 2.0]), bits=1, scheme="symmetric")
    assert zeros.table["q"].tolist() == [-1, 1, 1]  # sign(0) = +1: two levels, as the engine
    assert sorted(set(zeros.table["w_hat"].tolist())) == [-1.0, 1.0]
    assert r"\operatorname{sign}(0) = +1" in zeros.latex()[0][1]


def test_toy_steps_tensor_asymmetric_clamps_at_3bits():
    """z is rounded (half to even), so at 3 bits the grid shifts and w = 10 is clamped to code 7."""
    steps = learn.toy_steps(TOY, bits=3, scheme="asymmetric")
    assert steps.zero_point == 4 and steps.table["clamped"].tolist()[-1]
    assert steps.table["q"].tolist()[-1] == 7


def test_grid_levels_cover_the_codes():
    steps = learn.toy_steps(TOY, bits=3, scheme="symmetric")
    expected = torch.arange(-3, 4).float() * torch.tensor(steps.scale)  # float32 s * (q - 0)
    assert learn.grid_levels(steps).tolist() == expected.tolist()


# --- inputs -------------------------------------------------------------------------------


def test_parse_tensor_accepts_lists_and_rejects_bad_text():
    assert learn.parse_tensor("[1, 2;3  4]").tolist() == [1.0, 2.0, 3.0, 4.0]
    for text, fragment in (("", "empty"), ("1, x", "'x'"), ("1, nan", "'nan'"), (", ".join(["1"] * 33), "33")):
        with pytest.raises(ValueError, match="tensor must be 1 to 32") as error:
            learn.parse_tensor(text)
        assert fragment in str(error.value)


def test_toy_spec_validates_bits_and_scheme():
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8; got 9"):
        learn.toy_spec(9, "symmetric")
    with pytest.raises(ValueError, match="scheme must be one of 'symmetric', 'asymmetric'; got 'affine'"):
        learn.toy_spec(8, "affine")


# --- common mistakes ----------------------------------------------------------------------


def test_wrong_formula_table_overflows_at_8bits():
    table = learn.wrong_formula_table(TOY, bits=8)
    row = table[table["w"] == -5.0].iloc[0]
    assert int(row["wrong_q"]) == -1280 and bool(row["overflow"])  # not -4096, and outside [-128, 127]
    assert int(row["q"]) == -64  # the toy tensor spans [-10, 10]: DESIGN.md's example
    assert table["overflow"].tolist() == [True, True, False, False, True, True, True, True]
    assert learn.signed_range(8) == (-128, 127)
    wrong = learn.wrong_range(TOY, bits=8)
    assert wrong["wrong_min"] == -10 / 256 and wrong["inside_fraction"] == 1 / 8  # only w = 0


def test_wrong_range_excludes_almost_all_weights():
    wrong = learn.wrong_range(torch.tensor([-10.0, -0.01, 0.0, 10.0]), bits=8)
    assert (wrong["wrong_min"], wrong["wrong_max"]) == (-10 / 256, 10 / 256)
    assert wrong["inside_fraction"] == 0.5


# --- clipping against rounding ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_clip_sweep_tensor_split_sums_to_total(scheme):
    torch.manual_seed(0)
    weight = torch.randn(8, 16, 3, 3) * torch.linspace(0.2, 2.0, 8).reshape(-1, 1, 1, 1)
    sweep = clipping.clip_sweep(weight, bits=4, scheme=scheme)
    assert sweep["clip_mse"].iloc[-1] == 0.0 and sweep["ratio"].iloc[-1] == 1.0
    assert ((sweep["clip_mse"] + sweep["round_mse"] - sweep["mse"]).abs() <= 1e-12 * sweep["mse"]).all()
    assert sweep["round_mse"].iloc[-1] > sweep["round_mse"].iloc[0]  # a finer step rounds less
    assert sweep["clip_mse"].iloc[0] > sweep["clip_mse"].iloc[-1]
    # the total is the MSE of fake-quantizing over that range, as the library does it
    spec = learn.toy_spec(4, scheme)
    for row in sweep.iloc[[0, 20, -1]].itertuples():
        qparams = clipping.range_qparams(row.lo, row.hi, spec)
        assert math.isclose(row.mse, metrics.mse(weight, fake_quantize(weight, spec, qparams=qparams)), rel_tol=1e-5)
    point = clipping.clip_at(weight, 4, scheme, float(sweep["ratio"][20]))
    assert all(point[key] == sweep[key][20] for key in ("ratio", "lo", "hi", "scale", "clip_mse", "round_mse"))


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_method_ranges_tensor_match_choose_qparams(scheme):
    torch.manual_seed(1)
    weight = torch.cat([torch.randn(1000), torch.tensor([12.0, -9.0])])  # two outliers
    table = clipping.method_ranges(weight, bits=4, scheme=scheme, percentile=99.9).set_index("method")
    assert table.loc["minmax", "ratio"] == 1.0 and table.loc["minmax", "clip_mse"] == 0.0
    for method in ("percentile", "mse", "entropy"):
        spec = QuantSpec(bits=4, scheme=scheme, granularity="tensor", range_method=method, percentile=99.9)
        qparams = choose_qparams(weight, spec)
        row = table.loc[method]
        assert row["scale"] == float(qparams.scale[0]) and row["zero_point"] == int(qparams.zero_point[0])
        assert math.isclose(row["clip_mse"] + row["round_mse"], row["mse"], rel_tol=1e-12)
        assert math.isclose(row["mse"], metrics.mse(weight, fake_quantize(weight, spec, qparams=qparams)), rel_tol=1e-5)
        assert row["ratio"] < 1.0
    assert table.loc["mse", "mse"] < table.loc["minmax", "mse"]  # clipping two outliers pays


def test_clip_sweep_samples_large_layers():
    weight = torch.randn(3000)
    sweep = clipping.clip_sweep(weight, bits=4, scheme="symmetric", ratios=(0.5, 1.0), sample=1000)
    assert sweep.attrs["n_evaluated"] == 1000
    assert sweep["hi"].iloc[-1] == float(weight.abs().max())  # the range still comes from every weight
    with pytest.raises(ValueError, match=r"ratios must be numbers in \(0, 1\]"):
        clipping.clip_sweep(weight, bits=4, scheme="symmetric", ratios=(0.0,))


# --- a real layer -------------------------------------------------------------------------


def test_layer_steps_channel_scales_match_choose_qparams():
    torch.manual_seed(2)
    weight = torch.randn(12, 3, 3, 3) * torch.linspace(0.1, 1.0, 12).reshape(-1, 1, 1, 1)
    steps = learn.layer_steps(weight, bits=4, scheme="asymmetric", range_method="minmax", axis=0)
    qparams = choose_qparams(weight, QuantSpec(bits=4, scheme="asymmetric", granularity="channel"))
    assert steps.channels["scale"].tolist() == qparams.scale[:8].double().tolist()
    assert steps.channels["zero_point"].tolist() == qparams.zero_point[:8].tolist()
    summary = steps.summary.set_index("granularity")
    assert summary.loc["channel", "blocks"] == 12
    assert summary.loc["channel", "mse"] < summary.loc["tensor", "mse"]
    assert int(steps.counts.sum()) == weight.numel() and steps.clipped_fraction == 0.0
    assert len(steps.levels) == 16


# --- figures ------------------------------------------------------------------------------


def test_figures_have_labeled_axes():
    toy = [learn.toy_steps(TOY, 3, scheme) for scheme in ("symmetric", "asymmetric")]
    fig = learn_plots.number_line(toy)
    assert fig.layout.xaxis2.title.text.startswith("real value")
    assert len(fig.layout.annotations) >= 2 * len(TOY)  # an arrow per value per scheme
    layer = learn.layer_steps(torch.randn(8, 20), bits=3, scheme="symmetric", range_method="percentile",
                              percentile=95.0)
    hist = learn_plots.layer_histogram(layer, "fc")
    assert hist.layout.xaxis.title.text == "weight value w" and "count" in hist.layout.yaxis.title.text
    sweep = clipping.clip_sweep(torch.randn(200), 3, "symmetric", ratios=(0.5, 1.0))
    methods = clipping.method_ranges(torch.randn(200), 3, "symmetric")
    chart = learn_plots.clip_chart(sweep, methods, sweep.iloc[-1].to_dict(), 1.0)
    assert chart.layout.yaxis.type == "log" and "clip ratio" in chart.layout.xaxis.title.text
    mistakes = learn_plots.mistakes_chart(learn.wrong_formula_table(TOY, 8), 8)
    assert mistakes.layout.yaxis.title.text == "integer code"


# --- the page -----------------------------------------------------------------------------


def _toy_tables(at):
    """The symmetric and asymmetric step tables, codes read back from their text cells."""
    return tuple(at.dataframe[i].value.assign(q=lambda t: t["q"].astype(int)) for i in (0, 1))


def test_learn_page_runs_and_follows_the_library():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app.py", default_timeout=120).run().switch_page(PAGE).run()
    assert not at.exception and not at.error
    sym, asym = _toy_tables(at)
    expected = learn.toy_steps(TOY, 8, "symmetric").table
    assert sym["q"].tolist() == expected["q"].tolist() and -64 in sym["q"].tolist()
    assert asym["q"].tolist() == learn.toy_steps(TOY, 8, "asymmetric").table["q"].tolist()
    assert any(r"\frac{10}{127} = 0.07874" in latex.value for latex in at.latex)
    assert len(at.get("plotly_chart")) == 4 + 3  # + the uniform-against-floating-point grid section

    at.slider(key="learn_bits").set_value(3).run()  # bits: the shown codes follow the library
    sym, asym = _toy_tables(at)
    assert sym["q"].tolist() == learn.toy_steps(TOY, 3, "symmetric").table["q"].tolist() != expected["q"].tolist()
    assert asym["q"].tolist() == learn.toy_steps(TOY, 3, "asymmetric").table["q"].tolist()

    at.text_input(key="learn_tensor").input("1, 2, 4").run()  # a new tensor
    assert _toy_tables(at)[0]["q"].tolist() == [1, 2, 3]
    at.text_input(key="learn_tensor").input("1, two").run()  # a typo: one error, the last tensor kept
    assert len(at.error) == 1 and "tensor must be" in at.error[0].value
    assert _toy_tables(at)[0]["q"].tolist() == [1, 2, 3] and not at.exception

    metric = {m.label: m.value for m in at.metric}
    at.slider(key="learn_clip_ratio").set_value(0.3).run()  # clipping: numbers move
    moved = {m.label: m.value for m in at.metric}
    assert moved["clip range"] != metric["clip range"] and moved["clipped weights"] != "0.00%"

    layers = at.selectbox(key="learn_layer").options
    at.text_input(key="learn_tensor").input(learn.DEFAULT_TOY)
    at.selectbox(key="learn_layer").set_value(at.selectbox(key="learn_layer").options[-1])
    at.slider(key="learn_layer_bits").set_value(1)
    at.radio(key="learn_layer_scheme").set_value("symmetric").run()  # binarization: no sweep, no crash
    assert len(layers) > 1 and not at.exception and not at.error
    assert any("binarization" in info.value for info in at.info)


def test_formulas_show_the_step_behind_each_number():
    zeros = dict(learn.toy_steps(torch.zeros(3), bits=8, scheme="symmetric").latex())
    assert r"\max\!\left(\frac{0}{127},\ 1.1921 \times 10^{-7}\right) = \epsilon = 1.1921 \times 10^{-7}" \
        in zeros["2. Scale"]  # the eps floor, not "0/127 = 1.19e-7"
    steps = learn.toy_steps(TOY, bits=8, scheme="asymmetric")
    tex = dict(steps.latex())
    assert r"\operatorname{round}(127.49999)" in tex["3. Zero-point"] and tex["3. Zero-point"].endswith(
        f"= {steps.zero_point}\\end{{gathered}}")
    assert tex["1. Range (zero always inside)"].count(r" \\ ") == 2  # w_min, w_max, codes: one line each


def test_table_cells_show_whole_numbers_in_full():
    steps = learn.toy_steps(torch.tensor([-1e6, 1e6, 0.5, 123456.0]), bits=8, scheme="symmetric")
    cells = learn.display_cells(steps.table, ["w", "q", "w_hat"])
    assert cells["w"].tolist() == ["-1000000", "1000000", "0.5", "123456"]
    assert cells["q"].tolist() == ["-127", "127", "0", "16"]
