"""Evaluation text for language models: the shipped held-out text, or a user's .txt / .jsonl.

Text becomes token sequences with the model's own tokenizer: the text is tokenized once and cut
into non-overlapping windows of `seq_len` tokens (a short tail is dropped). Calibration text is
kept apart from evaluation text, always:

| source                 | evaluation sequences                  | calibration sequences (activation ranges, fine-tuning) |
|------------------------|---------------------------------------|--------------------------------------------------------|
| the shipped text       | sample_models/text/heldout.txt        | sample_models/text/calibration.txt (other modules)     |
| a user's file          | its windows but the last ones         | its last windows (about 10%, at most 32), or a second file |

A bad file (binary, empty, not UTF-8, a .jsonl line without text, too large, too short for two
windows) is one ValueError sentence; nothing is kept from it.

>>> from lightviz.io.hf import ByteTokenizer
>>> data = text_data(ByteTokenizer(), "abcdefgh" * 4, "toy", "a toy text", seq_len=8)
>>> data.task, tuple(data.x.shape), tuple(data.calibration.shape)
('causal_lm', (3, 8), (1, 8))
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lightviz.core.evaldata import EvalData, subset
from lightviz.io.bundle import SAMPLE_MODELS_DIR, ModelBundle
from lightviz.io.safeload import Source, read_source

__all__ = ["TEXT_SUFFIXES", "read_text", "text_data", "sample_text_data", "user_text_data", "lm_eval_data",
           "lm_train_data"]

SAMPLE_TEXT_DIR = SAMPLE_MODELS_DIR / "text"
TEXT_SUFFIXES = (".txt", ".jsonl")
MAX_TEXT_BYTES = 32 * 2**20
DEFAULT_SEQ_LEN = 256
DEFAULT_SEQUENCES = 8
MAX_CALIBRATION = 32
_BINARY_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x04", b"\x89PNG", b"%PDF", b"\x1f\x8b", b"\x7fELF")


def read_text(source: Source, filename: str | None = None, max_bytes: int | None = None) -> tuple[str, str]:
    """(text, file name) of a UTF-8 .txt file, or of a .jsonl file's "text" fields joined by blank lines.

    Raises:
        FileNotFoundError: no file at the path.
        ValueError: a folder, empty, too large, binary, not UTF-8, or a .jsonl without text.
    """
    file = read_source(source, filename, MAX_TEXT_BYTES if max_bytes is None else max_bytes, "text file (.txt, .jsonl)")
    data = file.data if file.data is not None else file.path.read_bytes()
    head = data[:8192]
    if head.startswith(_BINARY_MAGIC) or b"\x00" in head:
        raise ValueError(f"{file.name} is a binary file, not text; give a UTF-8 .txt or .jsonl file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{file.name} is not UTF-8 text (byte 0x{data[error.start]:02x} at position {error.start:,}); "
                         "save it as UTF-8") from None
    if Path(file.name).suffix.lower() == ".jsonl":
        text = _jsonl_text(text, file.name)
    if not text.strip():
        raise ValueError(f"{file.name} holds no text (only whitespace)")
    return text, file.name


def _jsonl_text(text: str, name: str) -> str:
    """The "text" of every JSON line (or the line itself when it is a JSON string)."""
    parts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} line {number} is not JSON ({error.msg}); a .jsonl file has one JSON object "
                             "per line with a \"text\" field") from None
        value = item.get("text") if isinstance(item, dict) else item
        if not isinstance(value, str):
            raise ValueError(f"{name} line {number} has no \"text\" string; each line must be a JSON object "
                             "with a \"text\" field (or a JSON string)")
        parts.append(value)
    return "\n\n".join(parts)


def _windows(ids: list[int], seq_len: int) -> torch.Tensor:
    """Non-overlapping windows (k, seq_len) of token ids, int64; a short tail is dropped."""
    k = len(ids) // seq_len
    return torch.tensor(ids[:k * seq_len], dtype=torch.int64).reshape(k, seq_len)


def _check_seq_len(seq_len: object, context: int | None) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"sequence length must be an integer of at least 2 tokens; got {seq_len!r}")
    if context is not None and seq_len > context:
        raise ValueError(f"sequence length {seq_len} is longer than the model's context of {context} tokens")
    return seq_len


def text_data(tokenizer, text: str, name: str, description: str, seq_len: int = DEFAULT_SEQ_LEN,
              calibration_text: str | None = None, context: int | None = None) -> EvalData:
    """Token sequences of `text` (task causal_lm), calibration apart (see the module's table).

    Args:
        tokenizer: anything with encode(text) -> token ids (lightviz.io.hf tokenizers).
        calibration_text: text whose windows calibrate; None: the last windows of `text`.
        context: the model's context length; a longer seq_len is refused.
    """
    seq_len = _check_seq_len(seq_len, context)
    windows = _windows(tokenizer.encode(text), seq_len)
    if calibration_text is not None:
        calibration = _windows(tokenizer.encode(calibration_text), seq_len)[:MAX_CALIBRATION]
        evaluation = windows
        if not len(calibration):
            raise ValueError(f"the calibration text is shorter than one sequence of {seq_len} tokens")
        where = "separate calibration text"
    else:
        if len(windows) < 2:
            raise ValueError(f"{name} is too short: it makes {len(windows)} sequence(s) of {seq_len} tokens and needs "
                             "at least 2 (one to evaluate, one to calibrate); give more text or a shorter sequence length")
        n_calibration = min(MAX_CALIBRATION, max(1, len(windows) // 10))
        evaluation, calibration = windows[:-n_calibration], windows[-n_calibration:]
        where = f"its last {n_calibration} sequence(s), never evaluated"
    if not len(evaluation):
        raise ValueError(f"{name} is shorter than one sequence of {seq_len} tokens; give more text or a shorter "
                         "sequence length")
    return EvalData(x=evaluation.contiguous(), y=None, name=name, task="causal_lm", calibration=calibration.contiguous(),
                    description=f"{description}: {len(evaluation)} sequences of {seq_len} tokens "
                                f"(calibration: {len(calibration)} from {where})")


def sample_text_data(bundle: ModelBundle, seq_len: int = DEFAULT_SEQ_LEN) -> EvalData:
    """The shipped held-out Python source, calibrated on the shipped calibration text."""
    heldout = (SAMPLE_TEXT_DIR / "heldout.txt").read_text(encoding="utf-8")
    calibration = (SAMPLE_TEXT_DIR / "calibration.txt").read_text(encoding="utf-8")
    return text_data(bundle.tokenizer, heldout, "python-heldout",
                     "held-out Python standard-library modules (sample_models/text/heldout.txt)", seq_len,
                     calibration, _context(bundle))


def user_text_data(bundle: ModelBundle, source: Source, filename: str | None = None,
                   seq_len: int = DEFAULT_SEQ_LEN, calibration: Source | None = None,
                   max_bytes: int | None = None) -> EvalData:
    """A user's .txt / .jsonl as evaluation sequences (calibration: its last windows, or `calibration`)."""
    _require_lm(bundle)
    text, name = read_text(source, filename, max_bytes)
    calibration_text = read_text(calibration, None, max_bytes)[0] if calibration is not None else None
    return text_data(bundle.tokenizer, text, name, f"your text {name}", seq_len, calibration_text, _context(bundle))


def lm_eval_data(bundle: ModelBundle, n: int | None = None, seq_len: int | None = None) -> EvalData:
    """What a language model is evaluated on by default: `n` (default DEFAULT_SEQUENCES) seeded
    sequences of the shipped held-out text."""
    _require_lm(bundle)
    data = sample_text_data(bundle, seq_len or min(DEFAULT_SEQ_LEN, _context(bundle)))
    return subset(data, DEFAULT_SEQUENCES if n is None else n)


def lm_train_data(bundle: ModelBundle, seq_len: int | None = None) -> EvalData:
    """Every window of the shipped calibration text: what fine-tuning a language model trains on
    (never the held-out text it is scored on)."""
    _require_lm(bundle)
    seq_len = _check_seq_len(seq_len or min(DEFAULT_SEQ_LEN, _context(bundle)), _context(bundle))
    windows = _windows(bundle.tokenizer.encode((SAMPLE_TEXT_DIR / "calibration.txt").read_text(encoding="utf-8")),
                       seq_len)
    return EvalData(x=windows, y=None, name="python-calibration", task="causal_lm",
                    description=f"calibration Python modules (sample_models/text/calibration.txt): {len(windows)} "
                                f"sequences of {seq_len} tokens")


def _context(bundle: ModelBundle) -> int:
    return int(bundle.input_shape[0])


def _require_lm(bundle: ModelBundle) -> None:
    if getattr(bundle, "task", "classification") != "causal_lm" or bundle.tokenizer is None:
        raise ValueError(f"{bundle.name} is not a language model: text data needs a model with a tokenizer")
