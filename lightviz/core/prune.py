"""Pruning masks: which weights to keep. Masks are computed on copies; nothing is modified.

| method       | zeroes                                                  | reference                        |
|--------------|---------------------------------------------------------|----------------------------------|
| unstructured | the k = round(sparsity * n) weights of smallest |w|     | prune.l1_unstructured            |
| filter       | the round(sparsity * C_out) rows of smallest L1 norm    | prune.ln_structured(n=1, dim=0)  |
| n:m          | all but the n largest |w| of every run of m along K     | NVIDIA 2:4 sparsity              |
| global       | one threshold over several layers, exact total count    | prune.global_unstructured        |

Ties are broken by index (a stable sort), so masks are deterministic.
"""

from __future__ import annotations

from typing import Sequence

import torch

from lightviz.core.specs import PruneSpec


def prune_mask(weight: torch.Tensor, spec: PruneSpec, axis: int = 0) -> torch.Tensor:
    """Boolean mask, True where the weight is kept; same shape as `weight`.

    Args:
        weight: the weight to prune (left untouched).
        spec: sparsity and method.
        axis: the output-channel dimension (filters are removed along it; n:m runs lie
            along the flattened remaining dimensions of each output channel).

    >>> prune_mask(torch.tensor([0.1, -3.0, 0.2, 2.0]), PruneSpec(sparsity=0.5)).tolist()
    [False, True, False, True]
    """
    if not spec.active:
        return torch.ones_like(weight, dtype=torch.bool)
    if spec.method == "unstructured":
        return keep_largest(weight, round(spec.sparsity * weight.numel()))
    rows = weight.detach().movedim(axis, 0)
    flat = rows.reshape(rows.shape[0], -1)  # (C_out, K)
    if spec.method == "filter":
        kept = _filter_rows(flat, round(spec.sparsity * flat.shape[0]))  # (C_out,)
        mask = kept.reshape(-1, 1).expand_as(flat)
    else:
        mask = _n_of_m(flat, spec.n, spec.m)
    return mask.reshape(rows.shape).movedim(0, axis).contiguous()


def keep_largest(weight: torch.Tensor, n_pruned: int) -> torch.Tensor:
    """Mask that zeroes exactly `n_pruned` weights of smallest |w| (ties: lower index first)."""
    if not 0 <= n_pruned <= weight.numel():
        raise ValueError(f"n_pruned must be from 0 to {weight.numel()}; got {n_pruned}")
    magnitudes = weight.detach().abs().reshape(-1)
    mask = torch.ones_like(magnitudes, dtype=torch.bool)
    if n_pruned:
        mask[_smallest(magnitudes, n_pruned)] = False
    return mask.reshape(weight.shape)


def global_prune_counts(weights: Sequence[torch.Tensor], sparsity: float) -> list[int]:
    """How many weights each tensor loses under one global magnitude threshold.

    The total is round(sparsity * total weights), as torch.nn.utils.prune.global_unstructured;
    ties across layers go to the earlier layer. `keep_largest(w, count)` gives each mask.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be a number from 0 to 1; got {sparsity!r}")
    if not weights:
        return []
    magnitudes = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    total = round(sparsity * magnitudes.numel())
    if not total:
        return [0] * len(weights)
    ends = torch.tensor([w.numel() for w in weights], device=magnitudes.device).cumsum(0)
    owner = torch.searchsorted(ends, _smallest(magnitudes, total), right=True)
    return torch.bincount(owner, minlength=len(weights)).tolist()


def _smallest(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest values of a 1-D tensor, ties by lower index: the first k of a
    stable argsort, found with one selection (kthvalue) instead of a full sort."""
    threshold = torch.kthvalue(magnitudes, k).values
    below = (magnitudes < threshold).nonzero().squeeze(1)
    ties = (magnitudes == threshold).nonzero().squeeze(1)  # in index order
    return torch.cat([below, ties[: k - below.numel()]])


def _filter_rows(flat: torch.Tensor, n_pruned: int) -> torch.Tensor:
    """(C_out,) bool: rows kept after removing the n_pruned of smallest L1 norm."""
    kept = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
    if n_pruned:
        norms = flat.abs().sum(dim=1)
        kept[torch.argsort(norms, stable=True)[:n_pruned]] = False
    return kept


def _n_of_m(flat: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """(C_out, K) bool: the n largest |w| of each run of m; a last run shorter than m stays dense."""
    c, k = flat.shape
    full = k // m * m
    mask = torch.ones_like(flat, dtype=torch.bool)
    if full:
        runs = flat[:, :full].abs().reshape(c, -1, m)  # (C_out, K // m, m)
        # Stable sort descending by |w|: equal magnitudes keep the lower index.
        order = torch.sort(runs, dim=2, descending=True, stable=True).indices
        keep = torch.zeros_like(runs, dtype=torch.bool).scatter_(2, order[..., :n], True)
        mask[:, :full] = keep.reshape(c, full)
    return mask
