"""Fine-tuned and distilled weights as one .safetensors file that loads back as the same model.

The file is plain safetensors (tensors only, never code) with one metadata entry,
`"lightviz"`, a JSON object:

| key           | meaning                                                                          |
|---------------|----------------------------------------------------------------------------------|
| `format`      | "lightviz-trained" (version in `version`)                                         |
| `kind`        | "finetuned" (QAT weights of a plan) or "distilled" (a student trained from scratch) |
| `arch`        | the architecture: a sample model or a distillation student (`student_names()`)   |
| `num_classes` | outputs of the last layer                                                        |
| `identity`    | modules replaced by Identity: BatchNorms folded into the layer before them       |
|               | (whose bias, if it had none, comes from the weights)                             |
| `base`        | fine-tuned: the float model it came from; distilled: its teacher                 |
| `plan`        | fine-tuned: the plan JSON it was trained for                                     |
| `description` | one line for the model picker                                                    |

The architecture is built from lightviz's own list by name, never from the file, and the
state_dict must fit it exactly.

>>> from lightviz.io import zoo
>>> model = zoo.build_architecture("digits-mlp").eval()
>>> data = to_bytes(model, TrainedMeta(kind="distilled", arch="digits-mlp", num_classes=10, base="digits-cnn"))
>>> loaded, meta = from_bytes(data)
>>> meta.arch, torch.equal(loaded.fc1.weight, model.fc1.weight)
('digits-mlp', True)
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from lightviz.io import zoo
from lightviz.recover.distill import STUDENTS, build_student, student_names

FORMAT = "lightviz-trained"
VERSION = 1
KINDS = ("finetuned", "distilled")
MAX_HEADER = 16 * 2**20


@dataclass(frozen=True)
class TrainedMeta:
    """What a trained-weights file says about its model (see the module table)."""

    kind: str
    arch: str
    num_classes: int
    identity: tuple[str, ...] = ()
    base: str = ""
    plan: str = ""
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")
        if self.arch not in student_names():
            raise ValueError(f"arch must be one of {student_names()}; got {self.arch!r}")
        if not (isinstance(self.num_classes, int) and 1 <= self.num_classes <= 100_000):
            raise ValueError(f"num_classes must be a positive integer; got {self.num_classes!r}")
        object.__setattr__(self, "identity", tuple(str(name) for name in self.identity))


def folded_modules(model: nn.Module, arch: str) -> tuple[str, ...]:
    """Modules of `model` that are Identity where the architecture has something else
    (the BatchNorms fine-tuning folded away)."""
    fresh = dict(_build(arch, _num_classes(model)).named_modules())
    return tuple(name for name, module in model.named_modules()
                 if isinstance(module, nn.Identity) and name in fresh and not isinstance(fresh[name], nn.Identity))


def to_bytes(model: nn.Module, meta: TrainedMeta) -> bytes:
    """The model's weights and `meta` as safetensors bytes (what the download holds)."""
    from safetensors.torch import save

    tensors = {key: value.detach().contiguous().clone() for key, value in model.state_dict().items()}
    info = {"format": FORMAT, "version": VERSION, **{k: v for k, v in asdict(meta).items() if k != "extra"}}
    info["identity"] = list(meta.identity)
    return save(tensors, metadata={"lightviz": json.dumps(info, sort_keys=True)})


def read_meta(data: bytes) -> TrainedMeta | None:
    """The TrainedMeta of safetensors bytes written by `to_bytes`, None for any other file.

    Raises:
        ValueError: the file says it is a lightviz trained-weights file but its entry is damaged.
    """
    if len(data) < 8:
        return None
    (size,) = struct.unpack("<Q", data[:8])
    if not 2 <= size <= min(MAX_HEADER, len(data) - 8):
        return None
    try:
        header = json.loads(data[8:8 + size])
        text = header.get("__metadata__", {}).get("lightviz")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    if text is None:
        return None
    try:
        info = json.loads(text)
        if info.pop("format") != FORMAT or info.pop("version") != VERSION:
            raise ValueError("unsupported format or version")
        return TrainedMeta(**info)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"the file's lightviz entry is damaged ({error})") from None


def from_bytes(data: bytes) -> tuple[nn.Module, TrainedMeta]:
    """The model (eval mode) and its TrainedMeta from `to_bytes` output.

    Raises:
        ValueError: not a lightviz trained-weights file, or weights that do not fit its architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    meta = read_meta(data)
    if meta is None:
        raise ValueError("this is not a lightviz fine-tuned or distilled weights file (no 'lightviz' metadata)")
    try:
        state = load(data)
    except (SafetensorError, ValueError) as error:
        raise ValueError(f"the weights could not be read ({error})") from None
    model = _build(meta.arch, meta.num_classes)
    for name in meta.identity:
        parent, _, child = name.rpartition(".")
        try:
            owner = model.get_submodule(parent) if parent else model
            getattr(owner, child)
        except AttributeError:
            raise ValueError(f"{meta.arch} has no module {name!r} to fold") from None
        setattr(owner, child, nn.Identity())
    expected = model.state_dict()
    for key in state:  # folding gave a bias-free conv the bias of its BatchNorm
        owner_name, _, attr = key.rpartition(".")
        if key not in expected and attr == "bias":
            try:
                owner = model.get_submodule(owner_name)
            except AttributeError:
                continue
            if getattr(owner, "bias", False) is None:
                owner.bias = nn.Parameter(torch.zeros_like(state[key]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"the weights do not fit {meta.arch}: {str(error).splitlines()[0]}") from None
    if not all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point()):
        raise ValueError("the weights hold NaN or infinite values")
    return model.float().eval(), meta


def _build(arch: str, num_classes: int) -> nn.Module:
    if arch in STUDENTS:
        model = STUDENTS[arch](num_classes=num_classes)
    elif arch in zoo.SAMPLE_MODELS:
        model = zoo.build_architecture(arch, num_classes=num_classes)
    else:
        model = build_student(arch)  # raises with the list of names
    return model


def _num_classes(model: nn.Module) -> int:
    last = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return last[-1].out_features if last else 10
