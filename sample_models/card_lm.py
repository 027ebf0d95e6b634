"""Measure the sample language model with lightviz and write its model card (README.md in its folder).

Called by train_lm.py after training (on the staged folder, before anything is written) and by
`train_lm.py --card`. The model loads through lightviz's own Hugging Face folder path, as a
user's model would. Returns 0 when the checks hold, 1 otherwise (nothing written then).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from lightviz.core.engine import Engine  # noqa: E402
from lightviz.core.evaldata import subset  # noqa: E402
from lightviz.core.specs import LayerConfig, Plan, QuantSpec  # noqa: E402
from lightviz.core.task import token_cross_entropy, with_float_embeddings  # noqa: E402
from lightviz.io.hf import load_hf_folder  # noqa: E402
from lightviz.io.text import DEFAULT_SEQUENCES, sample_text_data  # noqa: E402

MAX_PERPLEXITY = 7.0
W8_TOLERANCE = 0.01  # 8-bit per channel within 1% of float
W4_VISIBLE = 0.02  # 4-bit group-128 at least 2% worse than float
W2_BROKEN = 2.0  # 2-bit at least twice the float perplexity

ROWS = [  # (label, spec)
    ("8-bit per channel, symmetric", QuantSpec(bits=8, granularity="channel")),
    ("4-bit per channel, symmetric", QuantSpec(bits=4, granularity="channel")),
    ("4-bit group 128, asymmetric, fp16 scales", QuantSpec(bits=4, scheme="asymmetric", granularity="group",
                                                           group_size=128, scale_dtype="float16")),
    ("4-bit group 32, asymmetric, fp16 scales", QuantSpec(bits=4, scheme="asymmetric", granularity="group",
                                                          group_size=32, scale_dtype="float16")),
    ("3-bit group 128, asymmetric, fp16 scales", QuantSpec(bits=3, scheme="asymmetric", granularity="group",
                                                           group_size=128, scale_dtype="float16")),
    ("2-bit group 128, asymmetric, fp16 scales", QuantSpec(bits=2, scheme="asymmetric", granularity="group",
                                                           group_size=128, scale_dtype="float16")),
]


def measure(folder: Path) -> dict:
    """Perplexities of the float model and of each row's plan, on all held-out sequences and on
    the app's default 8."""
    bundle = load_hf_folder(folder, "tiny-gpt")
    engine = Engine(bundle.model)
    full = sample_text_data(bundle)
    default = subset(full, DEFAULT_SEQUENCES)
    float_plan = Plan(default=LayerConfig(keep_float=True))
    out = {"bundle": bundle, "full": full, "rows": []}
    reference = engine.logits(None, full)
    out["float"] = engine.evaluate(float_plan, full).float_perplexity
    out["float_default"] = engine.evaluate(float_plan, default).float_perplexity
    out["check_ce"] = math.exp(float(token_cross_entropy(reference, full.x).mean()))
    for label, spec in ROWS:
        plan = with_float_embeddings(Plan(default=LayerConfig(quant=spec)), engine.layers)
        ev, ev_default = engine.evaluate(plan, full), engine.evaluate(plan, default)
        out["rows"].append((label, spec, ev, ev_default))
    return out


def checks(found: dict) -> list[str]:
    """What fails of the card's promises (empty when all hold)."""
    by_label = {label: ev for label, _, ev, _ in found["rows"]}
    failed = []
    if found["float"] > MAX_PERPLEXITY:
        failed.append(f"float perplexity {found['float']:.3f} > {MAX_PERPLEXITY}")
    w8 = by_label["8-bit per channel, symmetric"].perplexity / found["float"] - 1
    if abs(w8) > W8_TOLERANCE:
        failed.append(f"8-bit per channel is {w8:+.2%} from float (more than {W8_TOLERANCE:.0%})")
    w4 = by_label["4-bit group 128, asymmetric, fp16 scales"].perplexity / found["float"] - 1
    if w4 < W4_VISIBLE:
        failed.append(f"4-bit group 128 is only {w4:+.2%} from float (want at least {W4_VISIBLE:.0%})")
    w2 = by_label["2-bit group 128, asymmetric, fp16 scales"].perplexity / found["float"]
    if w2 < W2_BROKEN:
        failed.append(f"2-bit group 128 is only {w2:.2f}x the float perplexity (want at least {W2_BROKEN:g}x)")
    return failed


def card(found: dict) -> str:
    bundle, full = found["bundle"], found["full"]
    config = bundle.model.config
    n_params = sum(p.numel() for p in bundle.model.parameters())
    lines = [
        "# tiny-gpt",
        "",
        "The sample language model lightviz ships: a byte-level GPT-2-style causal LM (transformers'",
        "`GPT2LMHeadModel`: Conv1D attention and MLP projections, the LM head tied to the token embedding),",
        "saved in the Hugging Face layout (config.json + model.safetensors), so lightviz loads it through",
        "the same path as your own model folder. No tokenizer: the 256 tokens are the bytes of UTF-8 text.",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {n_params:,} ({config.n_layer} blocks, width {config.n_embd}, {config.n_head} heads, "
        f"MLP {config.n_inner}) |",
        f"| context | {config.n_positions} bytes |",
        "| training text | `sample_models/text/train.txt`: Python 3.11 standard-library modules (see "
        "`train_lm.py`) |",
        "| evaluation text | `sample_models/text/heldout.txt`: other modules, never trained on |",
        "| calibration text | `sample_models/text/calibration.txt`: other modules again (activation ranges, "
        "fine-tuning) |",
        "| license of the text | Python Software Foundation License (`sample_models/text/LICENSE-PSF.txt`) |",
        "",
        "## Perplexity",
        "",
        f"Float perplexity on all {len(full)} held-out sequences of {full.x.shape[1]} bytes "
        f"({full.x.shape[0] * (full.x.shape[1] - 1):,} predicted bytes): **{found['float']:.4f}** "
        f"({math.log2(found['float']):.3f} bits per byte). The app evaluates a seeded subset of "
        f"{DEFAULT_SEQUENCES} sequences by default: float {found['float_default']:.4f} there.",
        "",
        "Weight-only quantization of every Conv1D projection (the embeddings and the tied LM head stay float,",
        "as LM quantization tools do); bits per weight count the quantized weights with their scales and",
        "zero-points, as LM users count them:",
        "",
        f"| plan | bits / weight | perplexity ({len(full)} sequences) | vs float | perplexity ({DEFAULT_SEQUENCES} "
        "sequences) | next-byte agreement |",
        "|---|---:|---:|---:|---:|---:|",
        f"| float32 | 32 | {found['float']:.4f} | | {found['float_default']:.4f} | 100% |",
    ]
    for label, _, ev, ev_default in found["rows"]:
        lines.append(f"| {label} | {ev.quantized_bits_per_weight:.3f} | {ev.perplexity:.4f} | "
                     f"{ev.perplexity / found['float'] - 1:+.2%} | {ev_default.perplexity:.4f} | {ev.agreement:.2%} |")
    lines += [
        "",
        "8-bit per channel stays within 1% of float; 4-bit group 128 is visibly worse; 2-bit is broken.",
        "`train_lm.py` checks these three and writes nothing if one fails. Perplexity is exp(mean",
        "next-byte cross-entropy); the float value above was also recomputed from the logits directly",
        f"({found['check_ce']:.4f}).",
        "",
        "## Training",
        "",
        "Seed 0, 2 CPU threads. AdamW (betas 0.9, 0.99, weight decay 0.1 on matrices), learning rate 2e-3",
        "with 100 warm-up steps and cosine decay to 2e-4, gradient clipping at 1.0, 2,000 steps of 16",
        "random 256-byte windows of the training text (about 8 M bytes seen, 7 passes). No dropout.",
        "",
        "```",
        ".venv/bin/python sample_models/train.py tiny-gpt      # train, check and write (about 30 min on 2 cores)",
        ".venv/bin/python sample_models/train_lm.py --card     # re-measure and rewrite this card",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(folder: Path) -> int:
    started = time.perf_counter()
    found = measure(folder)
    failed = checks(found)
    for label, _, ev, _ in found["rows"]:
        print(f"{label}: perplexity {ev.perplexity:.4f} ({ev.perplexity / found['float'] - 1:+.2%}), "
              f"{ev.quantized_bits_per_weight:.3f} bits/weight")
    print(f"float perplexity {found['float']:.4f}; measured in {time.perf_counter() - started:.0f} s")
    if failed:
        print("checks failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    (folder / "README.md").write_text(card(found))
    print(f"wrote {folder / 'README.md'}")
    return 0
