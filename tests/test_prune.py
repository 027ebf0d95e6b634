"""prune_mask against torch.nn.utils.prune: same counts, same structure."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lightviz.core.prune import global_prune_counts, keep_largest, prune_mask
from lightviz.core.specs import PruneSpec

SPARSITIES = (0.0, 0.1, 0.25, 0.5, 0.73, 0.9, 1.0)


def conv(seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(6, 10, 3)


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_prune_mask_unstructured_matches_l1_unstructured(sparsity):
    module = conv()
    weight = module.weight.detach().clone()
    torch_prune.l1_unstructured(module, "weight", amount=sparsity)
    expected = module.weight_mask.bool()
    got = prune_mask(weight, PruneSpec(sparsity=sparsity))
    assert int((~got).sum()) == int((~expected).sum()) == round(sparsity * weight.numel())
    assert torch.equal(got, expected)  # no ties in random weights: the same weights too
    if 0 < sparsity < 1:
        assert weight[~got].abs().max() <= weight[got].abs().min()


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_prune_mask_filter_matches_ln_structured(sparsity):
    module = conv(1)
    weight = module.weight.detach().clone()
    torch_prune.ln_structured(module, "weight", amount=sparsity, n=1, dim=0)
    expected = module.weight_mask.bool()
    got = prune_mask(weight, PruneSpec(sparsity=sparsity, method="filter"))
    assert torch.equal(got, expected)
    removed = ~got.reshape(10, -1).any(dim=1)
    assert int(removed.sum()) == round(sparsity * 10)


def test_prune_mask_filter_conv_transpose_axis():
    weight = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(2))  # (C_in, C_out, k, k)
    mask = prune_mask(weight, PruneSpec(sparsity=0.5, method="filter"), axis=1)
    per_out = mask.transpose(0, 1).reshape(6, -1)
    assert int((~per_out.any(dim=1)).sum()) == 3 and per_out.all(dim=1).sum() == 3


@pytest.mark.parametrize("sparsity", [0.2, 0.6, 0.95])
def test_global_prune_counts_match_global_unstructured(sparsity):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(20, 30), nn.Linear(30, 10), nn.Conv1d(2, 4, 3))
    with torch.no_grad():
        model[1].weight.mul_(5)  # layers of different scale: the global threshold matters
    weights = [m.weight.detach().clone() for m in model]
    torch_prune.global_unstructured([(m, "weight") for m in model], torch_prune.L1Unstructured, amount=sparsity)
    expected = [int((m.weight_mask == 0).sum()) for m in model]
    counts = global_prune_counts(weights, sparsity)
    assert counts == expected
    assert sum(counts) == round(sparsity * sum(w.numel() for w in weights))
    masks = [keep_largest(w, c) for w, c in zip(weights, counts)]
    assert all(torch.equal(mask, m.weight_mask.bool()) for mask, m in zip(masks, model))


@pytest.mark.parametrize("n_kept,m", [(2, 4), (1, 4), (3, 4), (4, 8)])
def test_prune_mask_n_of_m_keeps_n_largest_of_every_m(n_kept, m):
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(4))
    spec = PruneSpec(sparsity=1 - n_kept / m, method="n:m", m=m)
    assert spec.n == n_kept
    mask = prune_mask(weight, spec)
    runs = mask.reshape(8, -1, m)
    assert (runs.sum(dim=2) == n_kept).all()
    magnitudes = weight.abs().reshape(8, -1, m)
    kept_min = torch.where(runs, magnitudes, torch.inf).amin(dim=2)
    dropped_max = torch.where(~runs, magnitudes, -torch.inf).amax(dim=2)
    assert (kept_min >= dropped_max).all()


def test_prune_mask_n_of_m_conv_short_tail_stays_dense():
    weight = torch.randn(5, 3, 3, 3, generator=torch.Generator().manual_seed(5))  # K = 27 = 6 runs of 4 + 3
    mask = prune_mask(weight, PruneSpec(sparsity=0.5, method="n:m")).reshape(5, 27)
    assert (mask[:, :24].reshape(5, 6, 4).sum(dim=2) == 2).all()
    assert mask[:, 24:].all()


def test_prune_mask_ties_are_deterministic_by_index():
    weight = torch.ones(10)
    mask = prune_mask(weight, PruneSpec(sparsity=0.3))
    assert mask.tolist() == [False] * 3 + [True] * 7
    runs = prune_mask(torch.ones(2, 4), PruneSpec(sparsity=0.5, method="n:m"))
    assert runs.tolist() == [[True, True, False, False]] * 2


def test_prune_mask_leaves_input_untouched():
    weight = torch.randn(4, 4)
    before = weight.clone()
    for method in ("unstructured", "filter", "n:m"):
        prune_mask(weight, PruneSpec(sparsity=0.5, method=method))
    assert torch.equal(weight, before)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_sparsity_validation_message(bad):
    with pytest.raises(ValueError, match="sparsity must be a number from 0 to 1"):
        PruneSpec(sparsity=bad)


def test_method_validation_message():
    with pytest.raises(ValueError, match="method must be one of 'unstructured', 'filter', 'n:m'; got 'random'"):
        PruneSpec(method="random")
