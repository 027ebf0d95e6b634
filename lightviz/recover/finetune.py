"""Quantization-aware fine-tuning of a Plan, optionally distilled from the float model.

The model trains in its deployed form: BatchNorm folded into the conv or linear before it
(when `plan.fold_bn`) and removed, pruned weights at exactly zero. Every forward pass uses
fake-quantized weights computed from the current float *latent* weights, and gradients pass
the rounding unchanged (the straight-through estimator, Bengio et al. 2013):

| step                  | what happens, per compressed layer                                            |
|-----------------------|-------------------------------------------------------------------------------|
| masks (once)          | the engine's pruning masks of the float model, fixed for the whole run        |
| forward               | w = latent * mask; qparams = choose_qparams(w); w_hat = fake_quantize(w)      |
|                       | the layer computes with w + (w_hat - w).detach(): value w_hat, gradient of w  |
| after each step       | latent weights outside the mask set back to exactly 0                         |
| result                | a float model holding the latent weights                                      |

`choose_qparams` and `fake_quantize` are the engine's own functions on the same tensor, so
`Engine(result.model).compress_layers(plan)` gives back exactly the fake-quantized weights of
the final evaluation (`result.weights_hat`), and the engine's accuracy of the result is the
last epoch's test accuracy. The model trains in eval mode: a folded model has no BatchNorm
left, and BatchNorms that were not folded keep their running statistics (eval-stable).

When the plan quantizes activations (`plan.activations`), every compressed layer's input is
fake-quantized too, per tensor, with ranges calibrated as the engine calibrates them: on the
current *latent float* model, with `test.calibration_inputs` (the digits training
split for the digits test split). They are recalibrated at the start of every epoch and once
more before the final evaluation, so the engine, calibrating the returned model, finds the
same ranges. Gradients pass the input rounding inside the clip range and stop outside it.

>>> from lightviz.core.engine import uniform_plan
>>> from lightviz.io.datasets import digits_split
>>> from torch import nn
>>> train, test = digits_split()
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
>>> result = finetune(model, uniform_plan(4), train, test, epochs=1)
>>> list(result.history.columns)
['epoch', 'loss', 'hard_loss', 'soft_loss', 'test_accuracy', 'seconds']
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from lightviz.core.activations import InputFakeQuant, InputQParams, TokenFakeQuant
from lightviz.core.batches import as_logits
from lightviz.core.device import model_device
from lightviz.core.engine import Engine, LayerResult, eval_batch_size
from lightviz.core.evaldata import EvalData
from lightviz.core.quant import choose_qparams, code_range, fake_quantize
from lightviz.core.specs import ActivationSpec, Plan
from lightviz.core.trainconfig import TrainConfig
from lightviz.core.task import get_task, task_of
from lightviz.recover.training import Progress, check_training_data, fit, frozen_logits


@dataclass(frozen=True, eq=False)
class FinetuneResult:
    """What fine-tuning gave: the model, its history, and the accuracies to compare.

    Attributes:
        model: a new float model with the trained latent weights, in the deployed form
            (BatchNorm folded into Identity when plan.fold_bn); compress it with `plan`.
        plan: the Plan it was fine-tuned for.
        history: one row per epoch (training.HISTORY_COLUMNS); test_accuracy is the
            fake-quantized model's.
        accuracy_before: the plan's accuracy on the test set before fine-tuning.
        accuracy_after: the plan's accuracy after, as Engine(model).evaluate(plan, test) reports.
        float_accuracy: the original float model's accuracy.
        size_bytes: the compressed model's size under the plan (the same before and after).
        float_size_bytes: the original float model's size.
        weights_hat: {layer name: the fake-quantized weight of the final evaluation}.
        stopped: True when the progress callback stopped it before the last epoch.
    """

    model: nn.Module
    plan: Plan
    history: pd.DataFrame
    accuracy_before: float
    accuracy_after: float
    float_accuracy: float
    size_bytes: int
    float_size_bytes: int
    weights_hat: dict[str, torch.Tensor]
    stopped: bool = False
    task: str = "classification"  # "causal_lm": the three accuracy fields hold perplexities

    @property
    def recovered(self) -> float:
        """Share of the accuracy (or perplexity) lost to compression that fine-tuning won back (1 = all of it)."""
        good = get_task(self.task).goodness
        lost = good(self.float_accuracy) - good(self.accuracy_before)
        return (good(self.accuracy_after) - good(self.accuracy_before)) / lost if lost > 0 else float("nan")

    def summary(self) -> dict:
        """JSON-able numbers (no model, no tensors); a language model's say perplexity, not accuracy."""
        metric = get_task(self.task).metric
        return {
            f"{metric}_before": self.accuracy_before, f"{metric}_after": self.accuracy_after,
            f"float_{metric}": self.float_accuracy, "recovered": self.recovered,
            "size_bytes": self.size_bytes, "float_size_bytes": self.float_size_bytes,
            "epochs_run": len(self.history), "stopped": self.stopped,
            "seconds": float(self.history["seconds"].sum()) if len(self.history) else 0.0,
            "history": self.history.to_dict(orient="records"),
            "plan": self.plan.to_dict(),
        }


def finetune(model: nn.Module, plan: Plan, train: EvalData, test: EvalData, *, epochs: int = 10,
             lr: float = 3e-3, batch_size: int = 64, seed: int = 0, teacher: nn.Module | None = None,
             distill_weight: float = 0.5, temperature: float = 4.0,
             progress: Progress | None = None, device: str | torch.device | None = None) -> FinetuneResult:
    """Quantization-aware fine-tuning of `model` under `plan`; `model` itself is not modified.

    Args:
        model: the float model (e.g. `zoo.load_model(name).model`).
        plan: the compression to fine-tune for (quantization, pruning, BatchNorm folding).
        train: labeled training data (the digits train split, never the test split), or a
            language model's token sequences (calibration text, never the evaluation text).
        test: labeled data (token sequences) scored after every epoch: accuracy (perplexity).
        epochs, lr, batch_size: Adam with cosine decay, `batch_size` samples per step.
        seed: fixes the batch order and everything random: same seed, same numbers.
        teacher: a float model whose soft targets join the loss (e.g. `model` itself:
            the float model teaches its compressed version); None trains on labels alone.
        distill_weight: alpha, the soft loss's share when a teacher is given.
        temperature: T of the soft targets.
        progress: called after each epoch with the history so far; returning False stops.
        device: where training runs ("auto", "cpu", "cuda"; None: where `model` is). The
            returned model and weights are on the CPU either way.

    Raises:
        ValueError: bad settings, unlabeled or overlapping data, or a plan this model
            cannot take (e.g. overrides of layers it does not have).
    """
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                         distill_weight=distill_weight, temperature=temperature)
    if not isinstance(plan, Plan):
        raise ValueError(f"plan must be a Plan; got {type(plan).__name__}")
    if plan.uses_methods:
        raise ValueError("quantization-aware training rounds every weight to nearest at each step, so a PTQ "
                         "method (gptq, adaround, ...) does not carry over: set the method to nearest first")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher must be a torch nn.Module or None; got {type(teacher).__name__}")
    check_training_data(train, test, needs_labels=teacher is None or config.distill_weight < 1)
    _check_teacher_memory(teacher, model, train)
    engine = Engine(model, device=device)
    if teacher is model:  # the usual "the float model teaches": its copy on the device
        teacher = engine.model
    elif teacher is not None and model_device(teacher) != engine.device:
        teacher = copy.deepcopy(teacher).to(engine.device)
    results = engine.compress_layers(plan)
    before = engine.evaluate(plan, test)
    task = task_of(test)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG state is left as it was
        torch.manual_seed(seed)
        student, layers = deployed_copy(engine, plan, results)
        teacher_logits = None if teacher is None else frozen_logits(teacher, train.x)
        inputs = InputQuantizer(student, plan, test.calibration_inputs, [r.layer.module_path for r in layers])

        def evaluate() -> float:
            inputs.calibrate()  # for this evaluation and the next epoch
            batch = eval_batch_size(test.x)
            with torch.inference_mode():
                weights = fake_weights(student, layers, straight_through=False)
                logits = torch.cat([as_logits(functional_call(student, weights, (test.x[i:i + batch].to(engine.device),))).cpu()
                                    for i in range(0, len(test), batch)])
            return task.score(logits, test.x, test.y)

        with inputs:
            history, stopped = fit(
                lambda x: functional_call(student, fake_weights(student, layers), (x,)),
                [p for p in student.parameters() if p.requires_grad], train, evaluate, config,
                teacher_logits=teacher_logits, after_step=lambda: apply_masks_(student, layers),
                progress=progress, score_column=f"test_{task.metric}")
    student.requires_grad_(False)
    with torch.no_grad():
        final = fake_weights(student, layers, straight_through=False)
        weights_hat = {r.layer.name: final[r.layer.weight_key].to("cpu", copy=True) for r in layers}
    after = Engine(student).evaluate(plan, test)
    return FinetuneResult(model=student.cpu().eval(), plan=plan, history=history, accuracy_before=before.score,
                          accuracy_after=after.score, float_accuracy=before.float_score,
                          size_bytes=after.size_bytes, float_size_bytes=before.float_size_bytes,
                          weights_hat=weights_hat, stopped=stopped, task=task.name)


TEACHER_LOGITS_BYTES = 2**30  # distillation keeps the teacher's logits of every training input


def _check_teacher_memory(teacher: nn.Module | None, model: nn.Module, train: EvalData) -> None:
    """Refuse a distillation whose teacher logits (a language model's: tokens x vocabulary) would not fit."""
    if teacher is None or not task_of(train).is_lm:
        return
    head = getattr(model, "get_output_embeddings", lambda: None)()
    vocab = int(head.weight.shape[0]) if head is not None else 0
    needed = train.x.numel() * vocab * 4
    if needed > TEACHER_LOGITS_BYTES:
        raise ValueError(f"distilling from the float model keeps its logits for every training token: "
                         f"{needed / 2**30:.1f} GiB here ({train.x.numel():,} tokens x {vocab:,}-token vocabulary), "
                         f"over {TEACHER_LOGITS_BYTES / 2**30:.0f} GiB; train without distillation or on fewer sequences")


# --- the deployed float copy and its fake-quantized weights ---------------------------------


def deployed_copy(engine: Engine, plan: Plan,
                  results: dict[str, LayerResult] | None = None) -> tuple[nn.Module, list[LayerResult]]:
    """A trainable float copy of the engine's model as the plan deploys it, and its layers.

    BatchNorm is folded into the preceding layer's weight and bias and replaced by Identity
    when `plan.fold_bn` (the structure `Engine.compress` builds); pruned weights are zero.
    Parameters require gradients; the copy is in eval mode.
    """
    results = results or engine.compress_layers(plan)
    student = copy.deepcopy(engine.model)
    modules = dict(student.named_modules())
    for name, result in results.items():
        module = modules[result.layer.module_path]
        weight = result.weight if result.mask is None else result.weight * result.mask
        parameter = nn.Parameter(weight.detach().clone())
        setattr(module, result.layer.param, parameter)
        for alias in result.layer.tied:  # a tied LM head keeps computing with the same tensor
            modules[alias].weight = parameter
        if plan.fold_bn and result.layer.bn is not None:
            module.bias = nn.Parameter(engine.reference_weight(name, True)[1].detach().clone())
            parent, _, child = result.layer.bn.rpartition(".")
            setattr(student.get_submodule(parent) if parent else student, child, nn.Identity())
    student.requires_grad_(True)
    return student.eval(), list(results.values())


def fake_weights(model: nn.Module, layers: list[LayerResult],
                 straight_through: bool = True) -> dict[str, torch.Tensor]:
    """{weight key ("<layer>.weight"): the weight each layer computes with}, for `functional_call`.

    Pruned, then fake-quantized with qparams chosen from the current latent weight, exactly
    as the engine does. With `straight_through` the value is w_hat and the gradient flows to
    the latent weight as if rounding were the identity.
    """
    out = {}
    for layer in layers:
        spec, axis = layer.quant, layer.layer.axis
        weight = getattr(model.get_submodule(layer.layer.module_path), layer.layer.param)
        if layer.mask is not None:
            weight = weight * layer.mask  # zero gradient for pruned weights
        if spec.bits is not None:
            detached = weight.detach()
            weight_hat = fake_quantize(detached, spec, axis, choose_qparams(detached, spec, axis))
            if layer.mask is not None:  # as the engine: 1-bit codes map 0 to +s, pruned stays 0
                weight_hat = weight_hat * layer.mask
            weight = weight + (weight_hat - weight).detach() if straight_through else weight_hat
        out[layer.layer.weight_key] = weight
    return out


@torch.no_grad()
def apply_masks_(model: nn.Module, layers: list[LayerResult]) -> None:
    """Set every pruned latent weight back to exactly +0.0 (in place)."""
    for layer in layers:
        if layer.mask is not None:
            getattr(model.get_submodule(layer.layer.module_path), layer.layer.param).masked_fill_(~layer.mask, 0.0)


# --- activations -------------------------------------------------------------------------------


class InputQuantizer:
    """Fake-quantizes the inputs of the named layers of `model` while in a `with` block.

    Forward pre-hooks go on `model` (fine-tuning's private copy) for the block only. Ranges
    come from `calibrate()`: the engine's own calibration of the current float model (run
    with the hooks off). With gradients enabled the rounding is straight-through inside the
    clip range (zero gradient outside); without, the input gets the engine's exact
    InputFakeQuant. A plan with float activations makes this a no-op.
    """

    def __init__(self, model: nn.Module, plan: Plan, calibration: torch.Tensor, names: list[str]) -> None:
        self.model, self.plan, self.calibration, self.names = model, plan, calibration, names
        self.spec: ActivationSpec | None = plan.activations
        self.qparams: dict[str, InputQParams] = {}
        self._handles: list = []

    def calibrate(self) -> None:
        """Ranges from the current latent float model, as Engine(model) calibrates them."""
        if self.spec is None or self.spec.per_token:  # per-token ranges are chosen as the model runs
            return
        active = bool(self._handles)
        self.__exit__()  # calibration must see float inputs
        self.qparams = Engine(self.model).activation_qparams(self.plan, self.calibration)
        if active:
            self.__enter__()

    def __enter__(self) -> InputQuantizer:
        if self.spec is not None and not self._handles:
            if not self.qparams:
                self.calibrate()
            modules = dict(self.model.named_modules())
            self._handles = [modules[name].register_forward_pre_hook(self._hook(name))
                             for name in dict.fromkeys(self.names)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str):
        if self.spec.per_token:
            return self._token_hook()

        def quantize_input(module: nn.Module, args: tuple) -> tuple | None:
            item = self.qparams.get(name)
            x = args[0] if args else None
            if item is None or not isinstance(x, torch.Tensor) or not x.is_floating_point():
                return None
            if not torch.is_grad_enabled():
                return InputFakeQuant(self.spec.quant, item.qparams)(module, args)
            exact = InputFakeQuant(self.spec.quant, item.qparams)(module, (x.detach(), *args[1:]))
            qmin, qmax = code_range(self.spec.quant)
            lo, hi = item.scale * (qmin - item.zero_point), item.scale * (qmax - item.zero_point)
            clipped = x.clamp(lo, hi)  # gradient 1 inside the representable range, 0 outside
            return (clipped + (exact[0] - clipped).detach(), *args[1:])
        return quantize_input

    def _token_hook(self):
        """Per-token ranges: the engine's TokenFakeQuant, straight-through with gradients."""
        exact = TokenFakeQuant(self.spec.quant)

        def quantize_tokens(module: nn.Module, args: tuple) -> tuple | None:
            x = args[0] if args else None
            out = exact(module, (x.detach(), *args[1:])) if isinstance(x, torch.Tensor) else None
            if out is None or not torch.is_grad_enabled():
                return exact(module, args)
            q = x + (out[0] - x).detach()
            return (q, *(q if a is x else a for a in args[1:]))
        return quantize_tokens
