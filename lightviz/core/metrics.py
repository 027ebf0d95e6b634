"""Metrics: tiny (reference, test) -> number functions, as torch.ao's Numeric Suite.

Weight fidelity takes the float weight and its compressed version; model metrics take
logits (N, classes) and labels. Sums run in float64: squares of float32 weights near its
limit (3.4e38) overflow float32 but not float64. A result that still is not a finite number
(a compressed weight or a logit that overflowed to inf or NaN) comes back as inf or NaN, never
as an exception: reports show it as null with a note (`nonfinite_rows` counts such logits).

>>> w = torch.tensor([1.0, -2.0, 3.0])
>>> sqnr_db(w, w), round(sqnr_db(w, w + 0.1), 2)
(inf, 26.69)
"""

from __future__ import annotations

import math

import torch


def mse(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Mean squared error."""
    return float(torch.mean((reference.double() - test.double()) ** 2)) if reference.numel() else 0.0


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10*log10(sum w^2 / sum (w - w_hat)^2); inf when exact."""
    signal = float(torch.sum(reference.double() ** 2))
    noise = float(torch.sum((reference.double() - test.double()) ** 2))
    return _sqnr(signal, noise)


def _sqnr(signal: float, noise: float) -> float:
    """10*log10(signal / noise), with the edge cases named: inf exact, -inf no signal, NaN
    when the sums themselves overflowed float64 both ways or are NaN."""
    if math.isnan(signal) or math.isnan(noise) or math.isinf(signal) and math.isinf(noise):
        return math.nan
    if noise == 0.0 or math.isinf(signal):
        return math.inf
    if signal == 0.0 or math.isinf(noise):
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine_similarity(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Cosine of the angle between the flattened tensors (1.0 when both are zero)."""
    a, b = reference.double().reshape(-1), test.double().reshape(-1)
    return _cosine(a, b)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    norms = float(a.norm() * b.norm())
    if not math.isfinite(norms):
        return math.nan
    if norms == 0.0:
        return 1.0 if float(a.norm()) == float(b.norm()) else 0.0
    return float(a @ b) / norms


def max_abs_error(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Largest |w - w_hat|."""
    return float((reference.double() - test.double()).abs().max()) if reference.numel() else 0.0


def sparsity(test: torch.Tensor) -> float:
    """Fraction of exact zeros."""
    return float((test == 0).sum()) / max(test.numel(), 1)


def weight_fidelity(reference: torch.Tensor, test: torch.Tensor) -> dict[str, float]:
    """mse, sqnr_db, cosine, max_abs_error and achieved_sparsity at once: the same numbers as the
    functions above, with one float64 copy of each tensor instead of one per metric (a
    resnet18's layer table is several times faster).

    >>> w = torch.tensor([1.0, -2.0, 3.0])
    >>> fid = weight_fidelity(w, w + 0.1)
    >>> fid["sqnr_db"] == sqnr_db(w, w + 0.1), fid["mse"] == mse(w, w + 0.1)
    (True, True)
    """
    if reference.numel() == 0:
        return {"mse": 0.0, "sqnr_db": math.inf, "cosine": 1.0, "max_abs_error": 0.0, "achieved_sparsity": 0.0}
    a, b = reference.double().reshape(-1), test.double().reshape(-1)
    error = (a - b).square_()
    sqnr = _sqnr(float(torch.sum(a ** 2)), float(torch.sum(error)))
    return {"mse": float(torch.mean(error)), "sqnr_db": sqnr, "cosine": _cosine(a, b),
            "max_abs_error": max_abs_error(reference, test), "achieved_sparsity": sparsity(test)}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy: fraction of rows whose argmax is the label."""
    _require_rows(logits)
    return float((logits.argmax(dim=1) == labels).double().mean())


def agreement(reference_logits: torch.Tensor, test_logits: torch.Tensor) -> float:
    """Fraction of inputs whose top-1 class is the same for both models."""
    _require_rows(reference_logits)
    return float((reference_logits.argmax(dim=1) == test_logits.argmax(dim=1)).double().mean())


def mean_kl(reference_logits: torch.Tensor, test_logits: torch.Tensor) -> float:
    """Mean KL(p_reference || p_test) over inputs, in nats."""
    _require_rows(reference_logits)
    log_p = torch.log_softmax(reference_logits.double(), dim=1)
    log_q = torch.log_softmax(test_logits.double(), dim=1)
    return float((log_p.exp() * (log_p - log_q)).sum(dim=1).mean())


def nonfinite_rows(logits: torch.Tensor) -> int:
    """Rows (inputs) whose logits hold NaN or inf: their argmax, KL and agreement mean nothing.

    >>> nonfinite_rows(torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [float("inf"), 1.0]]))
    2
    """
    return int((~torch.isfinite(logits)).flatten(1).any(dim=1).sum()) if logits.numel() else 0


def standard_error(p: float, n: int) -> float:
    """Binomial standard error sqrt(p(1-p)/n) of an accuracy measured on n samples."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n else math.nan


def _require_rows(logits: torch.Tensor) -> None:
    if logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be (N, classes) with N >= 1; got shape {tuple(logits.shape)}")
