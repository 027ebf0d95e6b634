"""Gradient-scored sensitivity: the Fisher estimate is right on a model whose Fisher is known,
ranks layers x formats like the measured sensitivity, and drives mixed precision."""

import math

import pytest
import torch
from torch import nn

import lightviz as lv
from lightviz.analysis.gradsens import fisher_diagonal, gradient_sensitivity, rank_correlation
from lightviz.analysis.mixed import allocate
from lightviz.analysis.sensitivity import sensitivity
from lightviz.core.evaldata import EvalData


def test_fisher_diagonal_of_a_softmax_regression_matches_its_closed_form():
    """For p = softmax(W x): E_y~p[(d log p_y / d W_ij)^2] = p_i (1 - p_i) x_j^2, averaged over x."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(4, 6, generator=g))
    x = torch.randn(3000, 6, generator=g)
    engine = lv.Engine(model)
    estimate = fisher_diagonal(engine, x, ["0"], passes=3000)["0"]  # one input per pass
    p = torch.softmax(x @ model[0].weight.detach().T, dim=1)
    exact = ((p * (1 - p)).unsqueeze(2) * x.pow(2).unsqueeze(1)).mean(dim=0)  # (4, 6)
    relative = (estimate / exact - 1).abs()  # one label drawn per input: a noisy but unbiased estimate
    assert relative.mean() < 0.08 and relative.max() < 0.3
    batched = fisher_diagonal(engine, x, ["0"], passes=100)["0"]  # 30 inputs per pass: noisier, unbiased
    assert torch.allclose(batched.mean(), exact.mean(), rtol=0.15)


@pytest.fixture(scope="module")
def cnn():
    bundle = lv.load_model("digits-cnn")
    data = lv.subset(lv.eval_data_for(bundle), 200)
    return lv.Engine(bundle.model), data


def test_gradient_scores_rank_like_the_measured_sensitivity(cnn):
    engine, data = cnn
    settings = dict(bits=[2, 3, 4], formats=["mxfp4", "fp8_e4m3"])
    measured, scored = sensitivity(engine, data, **settings), gradient_sensitivity(engine, data, **settings)
    assert list(scored["setting"].unique()) == ["2 bits", "3 bits", "4 bits", "mxfp4", "fp8_e4m3"]
    rho = rank_correlation(measured, scored)
    print(f"digits-cnn: Spearman rho {rho:.3f}; measured {measured.attrs['seconds']:.1f} s, "
          f"gradient {scored.attrs['seconds']:.1f} s")
    assert rho > 0.85
    assert (scored["layer_size_bytes"].to_numpy() == measured["layer_size_bytes"].to_numpy()).all()


def test_gradient_objective_allocates_within_the_budget(cnn):
    engine, data = cnn
    scored = gradient_sensitivity(engine, data, bits=[2, 4, 8])
    result = allocate(engine, data, scored, avg_bits=4.0, objective="gradient")
    assert result.evaluation.avg_bits_per_weight <= 4.0 and result.objective == "gradient"
    with pytest.raises(ValueError, match="score"):
        allocate(engine, data, sensitivity(engine, data, bits=[2, 4]), avg_bits=4.0, objective="gradient")


def test_rank_correlation_needs_three_rows():
    import pandas as pd

    rows = pd.DataFrame({"layer": ["a"], "setting": ["2"], "kl": [1.0], "score": [1.0]})
    assert math.isnan(rank_correlation(rows, rows))


def test_unlabeled_inputs_score_too():
    engine = lv.Engine(nn.Sequential(nn.Flatten(), nn.Linear(8, 3)))
    data = EvalData(torch.randn(32, 8), None, "noise", "random inputs")
    df = gradient_sensitivity(engine, data, bits=[2, 8])
    assert df["score"].iloc[0] > df["score"].iloc[1] >= 0
