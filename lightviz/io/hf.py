"""Hugging Face causal language models from a local folder, loaded as data, never as code.

A folder holds `config.json`, the weights (`model.safetensors`, sharded
`model-0000i-of-0000n.safetensors` with their index, or legacy `pytorch_model.bin` pickles) and,
usually, tokenizer files. Loading goes:

1. `config.json` is read as JSON first: a folder that asks for custom code (`auto_map`,
   `trust_remote_code`) is refused, as is an already-quantized checkpoint (`quantization_config`).
2. The weights are read by `lightviz.io.safeload`: safetensors, or `torch.load(weights_only=True)`
   for .bin files, with the same size, memory and NaN checks as any model file.
3. transformers builds the architecture its own library ships for `model_type` (never code from
   the folder: `trust_remote_code=False`, `local_files_only=True`, offline) and takes those
   tensors; a missing, unexpected or mis-shaped tensor is one line, naming them.
4. Tokenization: the folder's own tokenizer files (transformers' AutoTokenizer, offline); without
   them a 256-token vocabulary is read as UTF-8 bytes (the sample's scheme, `ByteTokenizer`);
   any other vocabulary without a tokenizer is refused.

transformers is imported only here, inside the functions that need it: the digits pages, `--help`
and `models` never pay for it. Every failure is a ValueError (UntrustedCodeError for custom code)
with one sentence; nothing is cached on failure, so the caller keeps what it had.

>>> ByteTokenizer().encode("hé"), ByteTokenizer().decode([104, 195, 169])
([104, 195, 169], 'hé')
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from lightviz.io.bundle import SAMPLE_MODELS_DIR, ModelBundle
from lightviz.io.safeload import UntrustedCodeError, first_line, load_object, read_source, short_list

__all__ = ["ByteTokenizer", "HFTokenizer", "is_hf_folder", "load_hf_folder", "load_sample_lm", "random_causal_lm",
           "lm_bundle"]

CONFIG_LIMIT = 2**20  # config and tokenizer JSON files larger than this are not configs
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "vocab.txt")
CODE_KEYS = ("auto_map", "trust_remote_code")
FAMILIES = ("gpt2", "llama", "qwen2")


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255: no files, no special tokens (the sample LM's scheme)."""

    name = "UTF-8 bytes (256 tokens)"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """Text of the bytes; a cut multi-byte character shows as U+FFFD."""
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A folder's own tokenizer (transformers), with the same encode / decode as ByteTokenizer."""

    def __init__(self, tokenizer: object, folder_name: str) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.name = f"{type(tokenizer).__name__} from {folder_name} ({self.vocab_size:,} tokens)"

    def encode(self, text: str) -> list[int]:
        with _quiet():
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


@contextmanager
def _quiet():
    """transformers without its progress bars, load reports and warnings (the CLI prints one line)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def _offline() -> None:
    """No test and no default run touches the network: the hub stays offline in this process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def is_hf_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder with a config.json (a Hugging Face model folder)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


# --------------------------------------------------------------------------- reading the folder


def _read_json(path: Path, what: str) -> dict:
    if path.stat().st_size > CONFIG_LIMIT:
        raise ValueError(f"{path.name} is {path.stat().st_size:,} bytes: too large for a {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path.name} is not valid JSON ({first_line(error)}); expected a {what}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} holds a JSON {type(data).__name__}, not an object; expected a {what}")
    return data


def read_config(folder: Path) -> dict:
    """config.json as a dict, refusing custom code and quantized checkpoints (one line each)."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; a Hugging Face model is a folder with config.json")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder.name} has no config.json: not a Hugging Face model folder")
    config = _read_json(folder / "config.json", "model config (config.json)")
    for file, data in (("config.json", config),
                       ("tokenizer_config.json", _read_json(folder / "tokenizer_config.json", "tokenizer config")
                        if (folder / "tokenizer_config.json").is_file() else {})):
        asked = [key for key in CODE_KEYS if key in data]
        if asked:
            raise UntrustedCodeError(
                f"{folder.name} asks for custom code ({', '.join(asked)} in {file}): lightviz never runs code from "
                "a model folder (trust_remote_code stays off); use a model whose architecture transformers ships")
    if config.get("quantization_config"):
        raise ValueError(f"{folder.name} is already quantized ({config['quantization_config'].get('quant_method', '?')}"
                         " in config.json); lightviz needs the float checkpoint")
    if not isinstance(config.get("model_type"), str):
        raise ValueError(f"{folder.name}/config.json has no model_type: transformers cannot tell the architecture")
    return config


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a folder: safetensors (single or sharded) first, else .bin pickles."""
    for pattern, index in (("model*.safetensors", "model.safetensors.index.json"),
                           ("pytorch_model*.bin", "pytorch_model.bin.index.json")):
        files = sorted(folder.glob(pattern))
        if (folder / index).is_file():
            mapping = _read_json(folder / index, "weight index").get("weight_map")
            if not isinstance(mapping, dict):
                raise ValueError(f"{folder.name}/{index} has no weight_map")
            files = [folder / name for name in sorted(set(map(str, mapping.values())))]
            missing = [path.name for path in files if not path.is_file() or path.parent != folder]
            if missing:
                raise ValueError(f"{folder.name}/{index} names weight files that are not in the folder: "
                                 f"{short_list(missing)}")
        if files:
            return files
    raise ValueError(f"{folder.name} has no weights: expected model.safetensors (or shards with their index) "
                     "or pytorch_model.bin")


def load_state(folder: Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weight files, read as data (lightviz.io.safeload)."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        file = read_source(path, f"{folder.name}/{path.name}", max_bytes, "weights file")
        if path.suffix == ".safetensors":
            header = int.from_bytes(file.head(8), "little")
            if file.size < 8 or header > file.size - 8:
                raise ValueError(f"{file.name} is not a valid safetensors file (truncated or damaged?): its header "
                                 f"needs {header:,} bytes and the file has {file.size:,}")
        kind, obj = load_object(file, trust_code=False)
        if kind not in ("safetensors", "torch", "pickle") or not isinstance(obj, dict):
            raise ValueError(f"{file.name} holds {type(obj).__name__}, not a mapping of tensor names to tensors")
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            raise ValueError(f"{file.name} holds no tensors")
        state.update(tensors)
    bad = [key for key, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"{folder.name} has NaN or Inf weights in {len(bad)} tensor(s): {short_list(bad)}; "
                         "such a model cannot be compressed or evaluated")
    return state


# --------------------------------------------------------------------------- the model


def _config_object(folder: Path, config: dict):
    """transformers' config for the folder (offline, no remote code) and the causal-LM class it maps to."""
    _offline()
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig

    try:
        with _quiet():
            hf_config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001 - transformers raises many types; one line for the user
        raise ValueError(f"{folder.name}/config.json cannot be read by transformers (model_type "
                         f"{config['model_type']!r}): {first_line(error)}") from None
    try:
        cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(hf_config)]
    except KeyError:
        raise ValueError(f"{folder.name} is a {config['model_type']!r} model, which transformers has no causal "
                         "language model (text generation) class for") from None
    return hf_config, cls


def build_model(cls, hf_config, state: dict[str, torch.Tensor], name: str) -> nn.Module:
    """`cls` built from its config with `state` as its weights; one line naming what does not fit."""
    try:
        with _quiet(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # whatever stays initialized is reported below, never used
            model, info = cls.from_pretrained(None, config=hf_config, state_dict=state, dtype=torch.float32,
                                              output_loading_info=True, ignore_mismatched_sizes=True,
                                              local_files_only=True, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{name} does not fit its config.json: {first_line(error)}") from None
    mismatched = [f"{key} (file {tuple(a)} vs config {tuple(b)})" if isinstance(key, str) else str(key)
                  for key, a, b in _mismatches(info.get("mismatched_keys", ()))]
    parts = [f"{label} ({len(items)}): {short_list(sorted(items))}"
             for label, items in (("missing", list(info.get("missing_keys", ()))),
                                  ("unexpected", list(info.get("unexpected_keys", ()))),
                                  ("mis-shaped", mismatched)) if items]
    if parts:
        raise ValueError(f"{name} does not fit its config.json: {'; '.join(parts)}; is config.json from the same model?")
    model.config.use_cache = False  # evaluation runs whole sequences; generation asks for the cache itself
    return model.float().eval()


def _mismatches(items) -> list[tuple]:
    out = []
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 3:
            out.append(tuple(item))
        else:
            out.append((item, (), ()))
    return out


def load_tokenizer(folder: Path, vocab_size: int):
    """The folder's tokenizer; bytes for a 256-token vocabulary without one; else ValueError."""
    if any((folder / file).is_file() for file in TOKENIZER_FILES):
        _offline()
        from transformers import AutoTokenizer

        try:
            with _quiet():
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"{folder.name}: its tokenizer files cannot be read ({first_line(error)})") from None
        return HFTokenizer(tokenizer, folder.name)
    if vocab_size == ByteTokenizer.vocab_size:
        return ByteTokenizer()
    raise ValueError(f"{folder.name} has no tokenizer files (tokenizer.json, tokenizer_config.json, vocab.json, ...) "
                     f"and a {vocab_size:,}-token vocabulary: only a 256-token vocabulary can be read as bytes; "
                     "add the model's tokenizer files to the folder")


def lm_bundle(model: nn.Module, tokenizer, name: str, kind: str, description: str, note: str,
              dataset: str | None = None) -> ModelBundle:
    """A language model as a ModelBundle (task "causal_lm"): input_shape is (context length,)."""
    config = getattr(model, "config", None)
    context = (getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1024)
    vocab = int(getattr(config, "vocab_size", 0) or model.get_output_embeddings().weight.shape[0])
    return ModelBundle(name=name, model=model, input_shape=(int(context),), num_classes=vocab, class_names=(),
                           dataset=dataset, kind=kind, description=description, note=note, task="causal_lm",
                           tokenizer=tokenizer)


def load_hf_folder(path: str | os.PathLike, name: str | None = None, *, max_bytes: int | None = None,
                   kind: str = "user", dataset: str | None = None) -> ModelBundle:
    """A local Hugging Face causal LM folder as a ModelBundle, loaded without running its code.

    Raises:
        UntrustedCodeError: the folder asks for custom code (auto_map, trust_remote_code).
        ValueError: anything else wrong (no config, damaged or mis-fitting weights, no tokenizer...).
    """
    folder = Path(path)
    name = name or folder.name
    config = read_config(folder)
    hf_config, cls = _config_object(folder, config)
    state = load_state(folder, max_bytes)
    model = build_model(cls, hf_config, state, name)
    tokenizer = load_tokenizer(folder, int(getattr(hf_config, "vocab_size", 0) or 0))
    n_params = sum(p.numel() for p in model.parameters())
    layers = getattr(hf_config, "num_hidden_layers", None) or getattr(hf_config, "n_layer", "?")
    return lm_bundle(model, tokenizer, name, kind,
                     description=f"{cls.__name__} from {folder.name}: {n_params:,} parameters, {layers} blocks, "
                                 f"tokenizer: {tokenizer.name}",
                     note="your language model; perplexity is measured on the held-out text unless you give your own",
                     dataset=dataset)


@functools.lru_cache(maxsize=4)
def load_sample_lm(name: str) -> ModelBundle:
    """A shipped sample LM (sample_models/<name>/, the Hugging Face layout), cached per name."""
    from lightviz.io.catalog import LANGUAGE_MODELS

    folder = SAMPLE_MODELS_DIR / name
    if not is_hf_folder(folder):
        raise ValueError(f"the sample language model {name!r} is missing at {folder}; regenerate it with "
                         "`.venv/bin/python sample_models/train.py tiny-gpt`")
    bundle = load_hf_folder(folder, name, kind="sample", dataset="python-text")
    return replace(bundle, description=LANGUAGE_MODELS[name],
                   note="trained on Python standard-library source; perplexity is measured on held-out modules "
                        "it never saw")


# --------------------------------------------------------------------------- random-init configs


def random_causal_lm(family: str = "gpt2", seed: int = 0, **config: object) -> nn.Module:
    """A randomly initialized causal LM of a family's architecture (no download), in eval mode.

    Args:
        family: "gpt2" (Conv1D projections, tied LM head), "llama" (q/k/v/o, gate/up/down
            Linear, untied head) or "qwen2" (as llama, with q/k/v biases and a tied head).
        seed: the initialization's seed (the caller's RNG is left as it was).
        config: overrides of the small defaults, e.g. n_layer=12, n_embd=768 for GPT-2 size.
    """
    _offline()
    import transformers

    small = {
        "gpt2": dict(vocab_size=256, n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=None,
                     eos_token_id=None),
        "llama": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=None, eos_token_id=None, tie_word_embeddings=False),
        "qwen2": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=None, eos_token_id=None, tie_word_embeddings=True),
    }
    if family not in small:
        raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}; got {family!r}")
    classes = {"gpt2": ("GPT2Config", "GPT2LMHeadModel"), "llama": ("LlamaConfig", "LlamaForCausalLM"),
               "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}
    config_cls, model_cls = (getattr(transformers, n) for n in classes[family])
    hf_config = config_cls(**{**small[family], **config, "use_cache": False})
    with _quiet(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(hf_config)
    return model.float().eval()

