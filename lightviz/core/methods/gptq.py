"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers"): round a weight matrix column by column, each rounding error spread
over the columns not yet rounded so that the layer's output on the calibration inputs moves
as little as possible.

For a layer y = W x with calibration inputs X (K x n), the objective is ||W X - W_hat X||^2,
whose Hessian in each row is H = 2 X X^T. Algorithm 1 of the paper, per row and column i:

    q_i = round(w_i)                     on the layer's grid (qparams fixed beforehand)
    e   = (w_i - q_i) / [U]_ii           U = upper Cholesky factor of H^-1
    w_j -= e * U_ij                      for every column j > i

*Lazy batch updates*: columns are processed in blocks of `block_size`; inside a block only the
block is updated, and the rest of the matrix gets the block's accumulated errors in one matrix
product (same result, far fewer memory passes). *Dampening* adds `damp` times the mean of
diag(H) to the diagonal; a column whose input is always zero is dropped (H_ii = 1, w = 0), as
the reference implementation does. *Activation order* rounds columns by decreasing H_ii.

Grouped convolutions run all groups at once: weights (G, O, K), Hessians (G, K, K).
The updates run in float32 by default, as the authors' code does (`dtype=torch.float64` gives
the exact arithmetic the tests compare with a plain implementation); U comes from one Cholesky
factorization of H with its rows and columns reversed and one triangular solve, in the same
precision (the same U as cholesky(cholesky_inverse(cholesky(H)), upper), at half the cost; a
Hessian too ill-conditioned for float32 is factored in float64).
Rounding itself happens in float32 on the layer's grid, so every value returned is exactly a
grid value.

>>> g = torch.Generator().manual_seed(0)
>>> w, x = torch.randn(1, 4, 8, generator=g), torch.randn(1, 64, 8, generator=g)
>>> h = x.transpose(1, 2) @ x
>>> q = gptq(w, h, lambda cols, idx: torch.round(cols * 4) / 4)
>>> bool(((q * 4) == (q * 4).round()).all())
True
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

Rounder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (values (G, O, b), column indices (b,)) -> rounded


def gptq(weight: torch.Tensor, hessian: torch.Tensor, round_columns: Rounder, block_size: int = 128,
         damp: float = 0.01, act_order: bool = False, mask: torch.Tensor | None = None,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """GPTQ-rounded weights, float32, shape (G, O, K) as `weight`.

    Args:
        weight: (G, O, K) rows of each group's weight matrix.
        hessian: (G, K, K) X X^T of each group's inputs (any positive scale: damping is relative).
        round_columns: rounds values of shape (G, O, b) that belong to the original columns
            `idx` (b,) to the grid (the grid may differ per column: groups, MX blocks).
        block_size: columns per lazy batch.
        damp: fraction of the mean diagonal of H added to its diagonal.
        act_order: process columns by decreasing diagonal of H.
        mask: (G, O, K) True where a weight is kept; pruned weights round to 0 and their error
            is spread like any other (SparseGPT with a fixed mask).
        dtype: precision of the updates (float32, or float64 for exact comparisons).

    Raises:
        ValueError: shapes that do not fit, or a Hessian that is not positive definite even
            after dampening (e.g. damp=0 with fewer inputs than columns).
    """
    if weight.dim() != 3 or hessian.shape != (weight.shape[0], weight.shape[2], weight.shape[2]):
        raise ValueError(f"weight must be (G, O, K) and hessian (G, K, K); got {tuple(weight.shape)} and "
                         f"{tuple(hessian.shape)}")
    w = weight.detach().to(dtype).clone()
    h = hessian.detach().double().clone()
    n_cols = w.shape[2]
    diag = torch.diagonal(h, dim1=1, dim2=2)  # a view: writes go into h
    dead = diag == 0
    diag[dead] = 1.0
    w.masked_fill_(dead.unsqueeze(1), 0.0)
    order = torch.arange(n_cols)
    if act_order:  # one order for every group: by the diagonal summed over groups
        order = torch.argsort(diag.sum(dim=0), descending=True, stable=True)
        w, h = w[:, :, order], h[:, order][:, :, order]
        diag = torch.diagonal(h, dim1=1, dim2=2)
    keep = None if mask is None else mask[:, :, order]
    diag += damp * diag.mean(dim=1, keepdim=True)
    hinv = _upper_cholesky_of_inverse(h, dtype)  # (G, K, K)
    wt = w.transpose(1, 2).contiguous()  # (G, K, O): a column of W is a contiguous row here
    qt = torch.zeros_like(wt)
    keep_t = None if keep is None else keep.transpose(1, 2)
    for start in range(0, n_cols, block_size):
        end = min(start + block_size, n_cols)
        block = wt[:, start:end].clone()  # (G, b, O)
        errors = torch.zeros_like(block)
        hinv_block = hinv[:, start:end, start:end]  # (G, b, b)
        with _one_thread():  # column steps are small ops: threads only add synchronization
            for i in range(end - start):
                column = block[:, i]  # (G, O)
                rounded = round_columns(column.unsqueeze(2), order[start + i:start + i + 1]).to(dtype).squeeze(2)
                if keep_t is not None:
                    rounded = rounded * keep_t[:, start + i]
                qt[:, start + i] = rounded
                error = (column - rounded) / hinv_block[:, i, i].unsqueeze(1)  # (G, O)
                block[:, i:].addcmul_(hinv_block[:, i, i:].unsqueeze(2), error.unsqueeze(1), value=-1)  # (G, b-i, O)
                errors[:, i] = error
        wt[:, end:] -= hinv[:, start:end, end:].transpose(1, 2) @ errors  # lazy update of the remaining columns
    q = qt.transpose(1, 2)
    if act_order:
        q = q[:, :, torch.argsort(order)]
    return q.float().contiguous()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the block in one intra-op thread (restored after): the per-column steps are tiny
    kernels, which two threads slow down (5x under load on a 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _upper_cholesky_of_inverse(h: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """U upper triangular with U^T U = H^-1, in `dtype` (float32 falls back to float64 when H is
    too ill-conditioned for it).

    With J the reversal of rows and columns, cholesky(J H J) = L' gives H = M M^T for the upper
    triangular M = J L' J; then H^-1 = M^-T M^-1, so U = M^-1 (one triangular solve).
    """
    lower, info = torch.linalg.cholesky_ex(h.to(dtype).flip(-2, -1))
    if int(info.max()) > 0 and dtype != torch.float64:
        return _upper_cholesky_of_inverse(h, torch.float64).to(dtype)
    if int(info.max()) > 0:
        raise ValueError("the layer's input Hessian is not positive definite; raise damp (e.g. 0.01) or give "
                         "more calibration inputs")
    upper = lower.flip(-2, -1)
    identity = torch.eye(h.shape[-1], dtype=dtype).expand_as(upper)
    u = torch.linalg.solve_triangular(upper, identity, upper=True)
    if dtype != torch.float64 and not bool(torch.isfinite(u).all()):
        return _upper_cholesky_of_inverse(h, torch.float64).to(dtype)
    return u


def layer_output_error(weight: torch.Tensor, weight_hat: torch.Tensor, x: torch.Tensor) -> float:
    """||W X - W_hat X||_F for rows (O, K) and inputs x (n, K), in float64.

    >>> layer_output_error(torch.eye(2), torch.eye(2), torch.ones(3, 2))
    0.0
    """
    diff = (weight.double() - weight_hat.double()) @ x.double().T
    return float(torch.linalg.matrix_norm(diff))
