"""Gradient-scored sensitivity: predict each layer x setting's damage from backward passes.

Measured sensitivity (sensitivity.py) runs the model once per layer and setting. Like HAWQ and
NVIDIA's AutoQuantize, this scores them from second-order information gathered once:

    KL(p_float || p_{w + d})  ~  1/2 d^T F d  ~  1/2 sum_i F_ii d_i^2

where d = Q(w) - w is the setting's weight error (the engine's own quantization, BatchNorm
folded) and F the Fisher information of the float model: the expected squared gradient of
log p(y|x) with y *drawn from the float model's own prediction* (the true Fisher, which is the
Hessian of the KL at d = 0; the "empirical" Fisher with dataset labels is not). Its diagonal
is estimated from `passes` backward passes over minibatches: with y drawn from p, the
gradients of different samples have mean zero, so the squared minibatch gradient sums their
squares in expectation. The score is in nats, the unit of the measured `kl` column, so the two
can be compared directly; their Spearman rank correlation says how well the cheap one orders
layers and settings.

Cost: `passes` forward+backward passes, whatever the number of layers, plus one quantization
and one weighted sum per layer x setting (no forward pass): it grows with settings, not with
forward passes per layer.

Columns (GRADIENT_COLUMNS): layer, type, params, setting, kind, bits, format, sparsity, score
(predicted KL, nats), layer_size_bytes, layer_float_size_bytes, size_bytes, n_samples.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lightviz.analysis.sensitivity import DEFAULT_BITS, _layer_names, settings, single_layer_plan
from lightviz.core.activations import float_plan
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData, subset
from lightviz.core.specs import Plan

GRADIENT_COLUMNS = ["layer", "type", "params", "setting", "kind", "bits", "format", "sparsity", "score",
                    "layer_size_bytes", "layer_float_size_bytes", "size_bytes", "n_samples"]
DEFAULT_PASSES = 16


def fisher_diagonal(engine: Engine, x: torch.Tensor, names: list[str], fold_bn: bool = True,
                    passes: int = DEFAULT_PASSES, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Per-sample diagonal Fisher of each named layer's weight (BatchNorm folded), float32.

    Args:
        x: inputs (N, ...); the model's outputs (..., C) are read as class logits.
        passes: backward passes (minibatches of ceil(N / passes) inputs).
        seed: the labels drawn from the float model's predictions.
    """
    if not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be a positive integer; got {passes!r}")
    model = engine.compress(float_plan(fold_bn))  # a private copy: gradients are safe
    modules = dict(model.named_modules())
    for param in model.parameters():
        param.requires_grad_(False)
    weights = [modules[name].weight.requires_grad_(True) for name in names]
    fisher = [torch.zeros_like(w) for w in weights]
    generator = torch.Generator().manual_seed(seed)
    batch = math.ceil(len(x) / passes)
    steps = math.ceil(len(x) / batch)
    with torch.enable_grad():
        for step, start in enumerate(range(0, len(x), batch), start=1):
            logits = model(x[start:start + batch])
            logits = logits.reshape(-1, logits.shape[-1]).float()
            with torch.no_grad():
                drawn = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
            loss = F.cross_entropy(logits, drawn, reduction="sum")
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
            for total, grad in zip(fisher, grads):
                if grad is not None:
                    total += grad.detach() ** 2
            if progress is not None:
                progress(step, steps)
    return {name: total / len(x) for name, total in zip(names, fisher)}


def gradient_sensitivity(engine: Engine, data: EvalData, bits: Iterable[int] = DEFAULT_BITS,
                         sparsities: Iterable[float] = (), base: Plan | None = None, formats: Iterable[str] = (),
                         max_samples: int | None = None, layers: Iterable[str] | None = None,
                         passes: int = DEFAULT_PASSES, seed: int = 0,
                         progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One row per (layer, setting) with its predicted KL (`score`); settings as sensitivity().

    Returns:
        A DataFrame (GRADIENT_COLUMNS); `df.attrs` holds "seconds", "fisher_seconds", "passes", "data".

    >>> from lightviz.io.datasets import generated_inputs
    >>> engine = Engine(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)))
    >>> df = gradient_sensitivity(engine, generated_inputs((4,), n=8), bits=[2, 8])
    >>> bool(df.loc[0, "score"] > df.loc[1, "score"])  # 2 bits hurt more than 8
    True
    """
    started = time.perf_counter()
    base = base or Plan()
    chosen = settings(base, bits, sparsities, formats)
    names = _layer_names(engine, layers)
    data = subset(data, max_samples)
    total = len(names) * len(chosen)
    fisher = fisher_diagonal(engine, data.x, names, base.fold_bn, passes, seed,
                             None if progress is None else lambda i, n: progress(0, total))
    fisher_seconds = time.perf_counter() - started
    float_sizes = {name: engine.compress_layer(float_plan(base.fold_bn), name).size.total_bytes for name in names}
    rows = []
    for name in names:
        info = engine.by_name[name]
        for label, kind, config in chosen:
            plan = single_layer_plan(base, name, config)
            result = engine.compress_layer(plan, name)
            delta = (result.weight_hat - result.weight).float()
            rows.append({
                "layer": name, "type": info.kind, "params": info.n_weights, "setting": label, "kind": kind,
                "bits": config.effective_quant.bits, "format": None if kind == "sparsity" else config.quant.format,
                "sparsity": result.prune.sparsity, "score": 0.5 * float((fisher[name] * delta * delta).sum()),
                "layer_size_bytes": result.size.total_bytes, "layer_float_size_bytes": float_sizes[name],
                "size_bytes": engine.size_bytes(plan), "n_samples": len(data),
            })
            if progress is not None:
                progress(len(rows), total)
    df = pd.DataFrame(rows, columns=GRADIENT_COLUMNS)
    df.attrs.update(seconds=time.perf_counter() - started, fisher_seconds=fisher_seconds, passes=passes,
                    data=data.description)
    return df


def rank_correlation(measured: pd.DataFrame, scored: pd.DataFrame, value: str = "kl") -> float:
    """Spearman's rank correlation between measured `value` and the gradient `score`, over the
    (layer, setting) rows both tables hold; NaN when fewer than 3 rows or a column is constant.

    >>> m = pd.DataFrame({"layer": ["a", "a", "b"], "setting": ["2", "4", "2"], "kl": [3.0, 1.0, 2.0]})
    >>> s = pd.DataFrame({"layer": ["a", "a", "b"], "setting": ["2", "4", "2"], "score": [9.0, 1.0, 5.0]})
    >>> rank_correlation(m, s)
    1.0
    """
    both = measured[["layer", "setting", value]].merge(scored[["layer", "setting", "score"]], on=["layer", "setting"])
    both = both.dropna()
    if len(both) < 3:
        return float("nan")
    a, b = both[value].rank().to_numpy(), both["score"].rank().to_numpy()
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def side_by_side(measured: pd.DataFrame, scored: pd.DataFrame, value: str = "kl") -> pd.DataFrame:
    """layer, setting, the measured value and the score, one row per (layer, setting) in both."""
    return measured[["layer", "setting", value]].merge(scored[["layer", "setting", "score"]],
                                                       on=["layer", "setting"])
