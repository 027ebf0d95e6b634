"""The training loop that fine-tuning and distillation share: seeded batches, the
distillation loss, one history row per epoch, a progress callback that may stop early.

Loss with a teacher (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"):

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

T^2 keeps the soft term's gradients on the scale of the hard term's as T grows. Without a
teacher the loss is the cross-entropy alone (alpha is ignored).

"""

from __future__ import annotations

import copy
import time
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lightviz.core.batches import as_logits, eval_batch_size
from lightviz.core.device import model_device
from lightviz.core.evaldata import EvalData
from lightviz.core.trainconfig import TrainConfig
from lightviz.core.task import task_of

HISTORY_COLUMNS = ["epoch", "loss", "hard_loss", "soft_loss", "test_accuracy", "seconds"]

# progress(history so far) after every epoch; returning False stops after that epoch.
Progress = Callable[[pd.DataFrame], "bool | None"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch.

    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> float(distillation_loss(logits, logits, 4.0))
    0.0
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)  # (N, classes)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature ** 2


def check_training_data(train: EvalData, test: EvalData, needs_labels: bool = True) -> None:
    """Raise ValueError unless `train` and `test` can train and score a classifier (or, token
    data, a language model: its targets are the next tokens, no labels needed)."""
    for name, data in (("train", train), ("test", test)):
        if not isinstance(data, EvalData):
            raise ValueError(f"{name} must be an EvalData; got {type(data).__name__}")
    if task_of(train).name != task_of(test).name:
        raise ValueError(f"train and test must be the same kind of data; got {task_of(train).name} "
                         f"and {task_of(test).name}")
    if task_of(test).is_lm:
        needs_labels = False
    elif needs_labels and not train.labeled:
        raise ValueError(f"train must be labeled (fine-tuning learns from its labels); got {train.name!r} "
                         "without labels")
    if not test.labeled and not task_of(test).is_lm:
        raise ValueError(f"test must be labeled (accuracy is measured on it); got {test.name!r} without labels")
    if train is test or (train.x.data_ptr() == test.x.data_ptr() and train.x.shape == test.x.shape):
        raise ValueError("train and test must be different sets: the test split is never trained on")
    if train.input_shape != test.input_shape:
        raise ValueError(f"train and test inputs must have the same shape; got {train.input_shape} "
                         f"and {test.input_shape}")


@torch.no_grad()
def frozen_logits(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Logits of a teacher in eval mode (a copy is used if it is in train mode), no gradients;
    batches run on the model's device, the logits come back to the CPU."""
    if model.training:  # evaluating in train mode would update BatchNorm statistics
        model = copy.deepcopy(model).eval()
    device = model_device(model)
    batch = min(batch, eval_batch_size(x))  # token sequences: a few per pass
    return torch.cat([as_logits(model(x[i:i + batch].to(device))).cpu() for i in range(0, len(x), batch)]).float()


def fit(step_forward: Callable[[torch.Tensor], torch.Tensor], parameters: list[torch.nn.Parameter],
        train: EvalData, evaluate: Callable[[], float], config: TrainConfig,
        teacher_logits: torch.Tensor | None = None, after_step: Callable[[], None] | None = None,
        progress: Progress | None = None, score_column: str = "test_accuracy") -> tuple[pd.DataFrame, bool]:
    """Train `parameters` for `config.epochs` epochs; one history row per epoch.

    Args:
        step_forward: x -> logits with gradients (the training forward).
        parameters: what Adam updates.
        train: labeled inputs (labels may be absent when distill_weight is 1 with a teacher).
        evaluate: () -> test accuracy (a language model: perplexity) after each epoch; the
            history's column is `score_column`.
        teacher_logits: (N_train, classes) soft targets, or None to train on labels alone.
        after_step: called after each optimizer step (e.g. to re-apply pruning masks).
        progress: called with the history so far after each epoch; False stops early.

    Batches move to the device of `parameters` one at a time (inputs, labels, soft targets).

    Returns:
        (history with HISTORY_COLUMNS, whether progress stopped it early). The caller seeds
        torch's global RNG; the batch order comes from its own generator seeded by config.seed.
    """
    alpha = config.distill_weight if teacher_logits is not None else 0.0
    task = task_of(train)
    columns = [score_column if c == "test_accuracy" else c for c in HISTORY_COLUMNS]
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    steps = config.epochs * -(-len(train) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(config.seed)
    device = parameters[0].device if parameters else torch.device("cpu")
    rows, stopped = [], False
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        totals = torch.zeros(3, dtype=torch.float64)  # loss, hard, soft (sums over samples)
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(order), config.batch_size):
            index = order[start:start + config.batch_size]
            x = train.x[index].to(device)
            logits = as_logits(step_forward(x))  # (B, classes), or (B, T, vocabulary)
            if task.is_lm:
                hard = task.loss(logits, x, None)
            else:
                hard = (F.cross_entropy(logits, train.y[index].to(device)) if train.y is not None
                        else logits.new_zeros(()))
            soft = (distillation_loss(logits.reshape(-1, logits.shape[-1]),
                                      teacher_logits[index].to(device).reshape(-1, logits.shape[-1]), config.temperature)
                    if alpha > 0 else logits.new_zeros(()))
            loss = (1 - alpha) * hard + alpha * soft
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if after_step is not None:
                after_step()
            totals += torch.tensor([loss.item(), hard.item(), soft.item()], dtype=torch.float64) * len(index)
        loss, hard, soft = (totals / len(train)).tolist()
        rows.append({"epoch": epoch, "loss": loss, "hard_loss": hard, "soft_loss": soft,
                     score_column: evaluate(), "seconds": time.perf_counter() - started})
        if progress is not None and progress(pd.DataFrame(rows, columns=columns)) is False:
            stopped = epoch < config.epochs
            break
    return pd.DataFrame(rows, columns=columns), stopped
