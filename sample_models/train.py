"""Regenerate the sample models' weights (sample_models/*.safetensors) and their model card.

Run from the repository root:

    make models          # or: .venv/bin/python sample_models/train.py            (every sample)
    .venv/bin/python sample_models/train.py digits                                # the digits classifiers
    .venv/bin/python sample_models/train.py tiny-gpt                              # the language model (train_lm.py)

Each sample architecture of lightviz.io.zoo is trained from a fixed seed on the digits training
split only, evaluated on the held-out test split, and saved with safetensors (no pickle). The
script fails, writing nothing, if any model's float test accuracy is below MIN_ACCURACY.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Runnable as a plain script: make `import lightviz` resolve to this checkout.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from lightviz.core.evaldata import EvalData
from lightviz.io.datasets import digits_split
from lightviz.io.zoo import SAMPLE_MODELS, SAMPLE_MODELS_DIR, build_sample, list_models  # noqa: E402

SEED = 0
MIN_ACCURACY = 0.95
NUM_THREADS = 1
TRAIN_COMMAND = "make models   # or: .venv/bin/python sample_models/train.py"
CARD_BITS = (8, 6, 4)  # bit-widths of the per-tensor vs per-channel check in the model card


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer and schedule of one sample model (AdamW, one-cycle learning rate)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.05
    augment: bool = True  # random one-pixel shifts; conv nets are shift-tolerant, an MLP is not


TRAIN_CONFIGS: dict[str, TrainConfig] = {
    "digits-mlp": TrainConfig(epochs=40, lr=3e-3, augment=False),
    "digits-cnn": TrainConfig(),
    "digits-mobilenet": TrainConfig(),
    "digits-resnet": TrainConfig(),
}


def random_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by -1, 0 or +1 pixel in each direction, filling with zeros."""
    n, _, h, w = x.shape  # (N, 1, 8, 8)
    padded = F.pad(x, (1, 1, 1, 1))  # (N, 1, 10, 10)
    dy = torch.randint(0, 3, (n,), generator=generator)
    dx = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, 8, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, 8)
    batch = torch.arange(n)[:, None, None]
    return padded[batch, 0, rows, cols].unsqueeze(1)  # (N, 1, 8, 8)


@torch.no_grad()
def accuracy(model: nn.Module, data: EvalData) -> float:
    """Top-1 accuracy of `model` (switched to eval mode) on a labeled set."""
    model.eval()
    predictions = model(data.x).argmax(dim=1)
    return float((predictions == data.y).float().mean())


def train(name: str, train_data: EvalData, config: TrainConfig, seed: int = SEED) -> nn.Module:
    """Train one sample architecture from a fixed seed; returns it in eval mode."""
    torch.manual_seed(seed)
    model = build_sample(name)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train_data) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch
    )
    model.train()  # BatchNorm learns running statistics from the training batches
    for _ in range(config.epochs):
        order = torch.randperm(len(train_data), generator=generator)
        for start in range(0, len(order), config.batch_size):
            index = order[start:start + config.batch_size]
            x = train_data.x[index]
            if config.augment:
                x = random_shift(x, generator)
            loss = F.cross_entropy(model(x), train_data.y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


# --- A minimal, self-contained check for the model card. It uses no lightviz.core.quant on purpose:
# the card states what the shipped weights do, measured independently of the library.


def _fold_bn(model: nn.Module) -> nn.Module:
    """A copy of `model` with each Sequential(Conv2d, BatchNorm2d, ...) folded into the conv."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not (isinstance(module, nn.Sequential) and len(module) >= 2):
            continue
        conv, bn = module[0], module[1]
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            continue
        factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight = nn.Parameter((conv.weight * factor[:, None, None, None]).detach())
        conv.bias = nn.Parameter((bn.bias + (bias - bn.running_mean) * factor).detach())
        module[1] = nn.Identity()
    return folded


def _fake_quantize_symmetric(weight: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Symmetric narrow-range fake quantization: s = amax / (2^(b-1) - 1), codes rounded half-even."""
    qmax = 2 ** (bits - 1) - 1
    amax = weight.abs().flatten(1).amax(dim=1) if per_channel else weight.abs().amax()
    scale = (amax / qmax).clamp_min(torch.finfo(torch.float32).eps)
    if per_channel:
        scale = scale.reshape(-1, *([1] * (weight.dim() - 1)))  # (C_out, 1, ...)
    return torch.round(weight * (1.0 / scale)).clamp(-qmax, qmax) * scale


@torch.no_grad()
def folded_quantized_accuracy(model: nn.Module, data: EvalData, bits: int, per_channel: bool) -> float:
    """Accuracy after folding BN and fake-quantizing every Conv2d/Linear weight (weights only)."""
    quantized = _fold_bn(model)
    for module in quantized.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.copy_(_fake_quantize_symmetric(module.weight, bits, per_channel))
    return accuracy(quantized, data)


def folded_depthwise_range_spread(model: nn.Module) -> float | None:
    """Largest max/min ratio of per-channel |w| ranges in a depthwise conv, after BN folding.

    None when the model has no depthwise conv.
    """
    spreads = []
    for module in _fold_bn(model).modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            ranges = module.weight.detach().abs().flatten(1).amax(dim=1)  # (C,)
            spreads.append(float(ranges.max() / ranges.min().clamp_min(1e-12)))
    return max(spreads) if spreads else None


# --- model card


def model_card(rows: list[dict], train_size: int, test: EvalData) -> str:
    """The sample_models/README.md text: what ships, how well it does, how to regenerate it."""
    lines = [
        "# Sample models",
        "",
        "Small classifiers of scikit-learn's bundled 8x8 digits, shipped so that lightviz runs with",
        "no internet. Weights are safetensors files (no pickle, no code runs when they load);",
        "`lightviz.load_model(name)` loads them into the architectures of `lightviz/io/zoo.py`.",
        "The sample language model `tiny-gpt` (a Hugging Face folder, trained by `train_lm.py` on the",
        "PSF-licensed Python source in `text/`) has its own card: [tiny-gpt/README.md](tiny-gpt/README.md).",
        "",
        "| name | architecture | parameters | float test accuracy | test images |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['name']}` | {row['description']} | {row['params']:,} | "
            f"{row['accuracy']:.2%} | {len(test)} |"
        )
    lines += [
        "",
        "## Data",
        "",
        "- Inputs: (N, 1, 8, 8) float32, pixel counts 0..16 scaled by 1/16 to [0, 1]; 10 classes.",
        "- Split: `lightviz.digits_split()` (seed 0, test_size 0.25, stratified by class):",
        f"  {train_size} training images, {len(test)} held-out test images. Models are trained on",
        "  the training split only; every accuracy lightviz reports is measured on the test split.",
        "",
        "## Training",
        "",
        f"Seed {SEED}, deterministic ({NUM_THREADS} CPU thread). AdamW with a one-cycle learning rate,",
        "cross-entropy; BatchNorm layers train in train mode and ship with their learned running",
        "statistics.",
        "",
        "| name | epochs | batch | max lr | weight decay | one-pixel random shifts |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        c = TRAIN_CONFIGS[row["name"]]
        lines.append(f"| `{row['name']}` | {c.epochs} | {c.batch_size} | {c.lr:g} | {c.weight_decay:g} | "
                     f"{'yes' if c.augment else 'no'} |")
    lines += [
        "",
        f"The script fails, writing nothing, if any float test accuracy is below {MIN_ACCURACY:.0%}.",
        "Regenerate (a couple of minutes on 2 CPU cores):",
        "",
        "```",
        TRAIN_COMMAND,
        "```",
        "",
        "## Per-tensor against per-channel, after BatchNorm folding",
        "",
        "Test accuracy with BatchNorm folded into the convs and every Conv/Linear weight",
        "fake-quantized symmetrically (weights only, activations float), measured by `train.py`",
        "with its own few-line reference, independently of `lightviz.core.quant`:",
        "",
        "| name | " + " | ".join(f"{b}-bit tensor | {b}-bit channel" for b in CARD_BITS) + " |",
        "|---|" + "---:|" * (2 * len(CARD_BITS)),
    ]
    for row in rows:
        quant = row["quant"]
        cells = " | ".join(f"{quant[(b, False)]:.2%} | {quant[(b, True)]:.2%}" for b in CARD_BITS)
        lines.append(f"| `{row['name']}` | {cells} |")
    for row in rows:
        if row["dw_spread"] is not None:
            lines += [
                "",
                f"In `{row['name']}`, folding makes the per-channel weight ranges of one depthwise conv",
                f"differ by up to {row['dw_spread']:.0f}x: a channel whose input never varies (a ReLU6 unit",
                "that never fires) has running_var ~ 0, so folding scales its weights by",
                "gamma / sqrt(eps). One per-tensor scale then leaves the other channels with a code or two,",
                "while per-channel scales are unaffected (Nagel et al. 2019, \"Data-Free Quantization",
                "Through Weight Equalization and Bias Correction\"). Training produced this; nothing",
                "forces it.",
            ]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Train, check and save every sample model; returns a process exit code."""
    # One thread: these batches are too small to gain from intra-op parallelism, two threads
    # ran 20-50x slower when the 2-core machine was also busy (OpenMP threads wait on each
    # other), and a fixed count keeps the float reductions, hence the weights, reproducible.
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    train_data, test_data = digits_split()
    trained: dict[str, nn.Module] = {}
    rows: list[dict] = []
    for name in list_models():
        t0 = time.perf_counter()
        model = train(name, train_data, TRAIN_CONFIGS[name])
        row = {
            "name": name,
            "description": SAMPLE_MODELS[name].description,
            "params": parameter_count(model),
            "accuracy": accuracy(model, test_data),
            "dw_spread": folded_depthwise_range_spread(model),
            "quant": {(b, pc): folded_quantized_accuracy(model, test_data, b, pc)
                      for b in CARD_BITS for pc in (False, True)},
        }
        low = CARD_BITS[-1]
        spread = "" if row["dw_spread"] is None else f", folded depthwise spread {row['dw_spread']:.0f}x"
        print(f"{name}: {row['params']:,} params, float test accuracy {row['accuracy']:.2%}{spread}, "
              f"{low}-bit tensor/channel {row['quant'][(low, False)]:.2%}/{row['quant'][(low, True)]:.2%} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        trained[name] = model
        rows.append(row)

    failed = [r for r in rows if r["accuracy"] < MIN_ACCURACY]
    if failed:
        for r in failed:
            print(f"FAILED: {r['name']} float test accuracy {r['accuracy']:.2%} < {MIN_ACCURACY:.0%}",
                  file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return 1

    for row in rows:
        path = SAMPLE_MODELS_DIR / f"{row['name']}.safetensors"
        state = {k: v.detach().contiguous() for k, v in trained[row["name"]].state_dict().items()}
        save_file(state, str(path), metadata={
            "name": row["name"],
            "float_test_accuracy": f"{row['accuracy']:.6f}",
            "params": str(row["params"]),
            "seed": str(SEED),
            "train_config": repr(TRAIN_CONFIGS[row["name"]]),
            "dataset": "sklearn digits, lightviz.io.datasets.digits_split(seed=0, test_size=0.25), train split",
            "torch": torch.__version__,
        })
        path.chmod(0o644)  # safetensors creates 0600 files; these ship and are read by everyone
    (SAMPLE_MODELS_DIR / "README.md").write_text(model_card(rows, len(train_data), test_data))
    print(f"wrote {len(rows)} models and README.md to {SAMPLE_MODELS_DIR} "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def run(argv: list[str]) -> int:
    """`digits`, `tiny-gpt`, or both (no argument)."""
    which = set(argv) or {"digits", "tiny-gpt"}
    unknown = which - {"digits", "tiny-gpt"}
    if unknown:
        print(f"usage: train.py [digits] [tiny-gpt]; unknown {sorted(unknown)}", file=sys.stderr)
        return 2
    if "digits" in which and main() != 0:
        return 1
    if "tiny-gpt" in which:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import train_lm

        return train_lm.main([])
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
