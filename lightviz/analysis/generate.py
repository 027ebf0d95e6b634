"""Text from the float and the compressed language model for the same prompt, side by side.

Greedy decoding (the most likely next token every step) under a fixed seed, so the same plan and
prompt always give the same words and a class sees exactly what fewer bits do to a model's text.
The prompt is cut from the left to leave room for the new tokens within the model's context.

>>> from lightviz.io.hf import ByteTokenizer, random_causal_lm
>>> from lightviz.core.engine import Engine, uniform_plan
>>> engine = Engine(random_causal_lm("gpt2"))
>>> out = compare_generation(engine, uniform_plan(None), ByteTokenizer(), "def f(x):", n_new=8)
>>> out.same_tokens, out.float_text == out.compressed_text
(8, True)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from lightviz.core.batches import as_logits
from lightviz.core.engine import Engine
from lightviz.core.specs import Plan

DEFAULT_PROMPT = "import os\n\n\ndef "  # the sample LM writes a plausible function from here
DEFAULT_NEW_TOKENS = 96
MAX_NEW_TOKENS = 512
SEED = 0


@dataclass(frozen=True)
class Generation:
    """One prompt continued greedily by both models.

    Attributes:
        prompt: the prompt as the models saw it (cut from the left to fit the context).
        float_text, compressed_text: the new text only (without the prompt).
        float_ids, compressed_ids: the new tokens.
        same_tokens: how many new tokens agree before the first difference.
    """

    prompt: str
    float_text: str
    compressed_text: str
    float_ids: tuple[int, ...]
    compressed_ids: tuple[int, ...]
    same_tokens: int

    @property
    def identical(self) -> bool:
        return self.float_ids == self.compressed_ids


def _prompt_ids(engine: Engine, tokenizer, prompt: str, n_new: int, context: int | None) -> tuple[list[int], int]:
    """The prompt's tokens, cut from the left so that they and `n_new` new ones fit the context."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("the prompt must be some text")
    if isinstance(n_new, bool) or not isinstance(n_new, int) or not 1 <= n_new <= MAX_NEW_TOKENS:
        raise ValueError(f"new tokens must be an integer from 1 to {MAX_NEW_TOKENS}; got {n_new!r}")
    config = getattr(engine.model, "config", None)
    context = context or getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1024
    n_new = min(n_new, context - 1)
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt makes no tokens")
    return ids[-(context - n_new):], n_new


def float_continuation(engine: Engine, tokenizer, prompt: str = DEFAULT_PROMPT, n_new: int = DEFAULT_NEW_TOKENS,
                       context: int | None = None) -> list[int]:
    """The float model's greedy continuation of `prompt` (the same for every plan: cache it)."""
    ids, n_new = _prompt_ids(engine, tokenizer, prompt, n_new, context)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return greedy(engine.model, ids, n_new)


@torch.inference_mode()
def greedy(model: nn.Module, ids: list[int], n_new: int) -> list[int]:
    """`n_new` tokens after `ids`, each the argmax of the model's next-token logits.

    A transformers model reuses its key/value cache; any other model (tokens in, logits out)
    reruns the whole sequence each step.
    """
    tokens = torch.tensor([ids], dtype=torch.int64)
    out: list[int] = []
    cached = hasattr(model, "config") and hasattr(model, "generate")
    # transformers 5.x calls the key/value cache `cache`; earlier versions `past_key_values`
    key = "cache" if cached and "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    past = None
    step_input = tokens
    for _ in range(n_new):
        if cached:
            output = model(step_input, use_cache=True, **{key: past})
            past = getattr(output, key, None)
            if past is None:
                past = getattr(output, "past_key_values", None)
            logits = output.logits
        else:
            logits = as_logits(model(tokens))
        token = int(logits[0, -1].argmax())
        out.append(token)
        step_input = torch.tensor([[token]], dtype=torch.int64)
        tokens = torch.cat([tokens, step_input], dim=1)
    return out


def compare_generation(engine: Engine, plan: Plan, tokenizer, prompt: str = DEFAULT_PROMPT,
                       n_new: int = DEFAULT_NEW_TOKENS, calibration: torch.Tensor | None = None,
                       context: int | None = None, float_ids: list[int] | None = None) -> Generation:
    """Greedy continuations of `prompt` by the float model and by `plan`'s compressed model.

    Args:
        engine: the language model's engine; tokenizer: its tokenizer (encode / decode).
        calibration: token sequences for activation calibration when the plan quantizes inputs
            per tensor (the evaluation data's calibration text).
        context: the model's context length (default: its config's); prompt + new tokens fit in it.
        float_ids: the float model's continuation of this prompt, when already known
            (`float_continuation`): it does not depend on the plan.

    Raises:
        ValueError: an empty prompt, or n_new out of 1..MAX_NEW_TOKENS.
    """
    ids, n_new = _prompt_ids(engine, tokenizer, prompt, n_new, context)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        float_ids = list(float_ids) if float_ids is not None else greedy(engine.model, ids, n_new)
        compressed = engine.compress(plan, calibration if plan.activations is not None else None)
        compressed_ids = greedy(compressed, ids, n_new)
    same = next((i for i, (a, b) in enumerate(zip(float_ids, compressed_ids)) if a != b), len(float_ids))
    return Generation(prompt=tokenizer.decode(ids), float_text=tokenizer.decode(float_ids),
                      compressed_text=tokenizer.decode(compressed_ids), float_ids=tuple(float_ids),
                      compressed_ids=tuple(compressed_ids), same_tokens=same)
