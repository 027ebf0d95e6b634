"""Regenerate the sample models' weights (sample_models/*.safetensors) and their model card.

Run from the repository root:

    make models          # or: .venv/bin/python sample_models/train.py

Each sample architecture of lightviz.zoo is trained from a fixed seed on the digits training
split only, evaluated on the held-out test split, and saved with safetensors (no pickle). The
script fails, writing nothing, if any model's float test accuracy is below MIN_ACCURACY.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# Runnable as a plain script: make `import lightviz` resolve to this checkout.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from lightviz.data import EvalData, digits_split  # noqa: E402
from lightviz.zoo import SAMPLE_MODELS, SAMPLE_MODELS_DIR, build_sample, list_models  # noqa: E402

SEED = 0
EPOCHS = 40
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
MIN_ACCURACY = 0.95
TRAIN_COMMAND = "make models   # or: .venv/bin/python sample_models/train.py"


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
    """Top-1 accuracy of `model` (in eval mode) on a labeled set."""
    model.eval()
    predictions = model(data.x).argmax(dim=1)
    return float((predictions == data.y).float().mean())


def train(name: str, train_data: EvalData, seed: int = SEED) -> nn.Module:
    """Train one sample architecture from a fixed seed; returns it in eval mode."""
    torch.manual_seed(seed)
    model = build_sample(name)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    steps_per_epoch = -(-len(train_data) // BATCH_SIZE)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, epochs=EPOCHS, steps_per_epoch=steps_per_epoch
    )
    model.train()  # BatchNorm learns running statistics from the training batches
    for _ in range(EPOCHS):
        order = torch.randperm(len(train_data), generator=generator)
        for start in range(0, len(order), BATCH_SIZE):
            index = order[start:start + BATCH_SIZE]
            x = random_shift(train_data.x[index], generator)
            loss = F.cross_entropy(model(x), train_data.y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def folded_depthwise_range_spread(model: nn.Module) -> float | None:
    """Largest ratio, over depthwise convs, of max to min per-channel |w| range after BN folding.

    Folding multiplies each output channel by gamma / sqrt(running_var + eps); a large spread
    is what makes one per-tensor scale fail. None when the model has no depthwise conv + BN.
    """
    spreads = []
    for module in model.modules():
        if not isinstance(module, nn.Sequential) or len(module) < 2:
            continue
        conv, bn = module[0], module[1]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.groups > 1:
            factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
            folded = conv.weight * factor[:, None, None, None]  # (C, 1, 3, 3)
            ranges = folded.detach().abs().flatten(1).amax(dim=1)  # (C,)
            spreads.append(float(ranges.max() / ranges.min().clamp_min(1e-12)))
    return max(spreads) if spreads else None


def model_card(rows: list[dict[str, object]], train_size: int, test: EvalData) -> str:
    """The sample_models/README.md text: what ships, how well it does, how to regenerate it."""
    lines = [
        "# Sample models",
        "",
        "Small classifiers of scikit-learn's bundled 8x8 digits, shipped so that lightviz runs with",
        "no internet. Weights are safetensors files (no pickle, no code runs when they load);",
        "`lightviz.zoo.load_model(name)` loads them into the architectures of `lightviz/zoo.py`.",
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
        f"- Inputs: (N, 1, 8, 8) float32, pixel counts 0..16 scaled by 1/16 to [0, 1]; 10 classes.",
        f"- Split: `lightviz.data.digits_split()` — {test.description}; "
        f"{train_size} training images. Models are trained on the training split only; every",
        "  accuracy lightviz reports is measured on the held-out test split.",
        "",
        "## Training",
        "",
        f"Seed {SEED}, Adam with a one-cycle learning rate (max {LEARNING_RATE}), {EPOCHS} epochs, batch "
        f"{BATCH_SIZE},",
        "random shifts of up to one pixel, cross-entropy. BatchNorm layers train in train mode and",
        "are saved with their learned running statistics; models are saved in eval mode.",
        f"The script fails, writing nothing, if any float test accuracy is below {MIN_ACCURACY:.0%}.",
        "Regenerate (about a minute on 2 CPU cores):",
        "",
        "```",
        TRAIN_COMMAND,
        "```",
    ]
    spread_rows = [r for r in rows if r["dw_spread"] is not None]
    if spread_rows:
        lines += ["", "## Why digits-mobilenet is here", ""]
        for row in spread_rows:
            lines.append(
                f"After folding BatchNorm into `{row['name']}`'s depthwise convs, the per-channel "
                f"weight ranges of one layer differ by up to {row['dw_spread']:.0f}x,"
            )
        lines += [
            "so a single per-tensor scale leaves the small channels with very few codes: per-tensor",
            "quantization degrades sharply there while per-channel does not (Nagel et al. 2019,",
            "\"Data-Free Quantization Through Weight Equalization and Bias Correction\").",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Train, check and save every sample model; returns a process exit code."""
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    train_data, test_data = digits_split()
    trained: dict[str, nn.Module] = {}
    rows: list[dict[str, object]] = []
    for name in list_models():
        t0 = time.perf_counter()
        model = train(name, train_data)
        row = {
            "name": name,
            "description": SAMPLE_MODELS[name].description,
            "params": parameter_count(model),
            "accuracy": accuracy(model, test_data),
            "dw_spread": folded_depthwise_range_spread(model),
        }
        spread = "" if row["dw_spread"] is None else f", folded depthwise range spread {row['dw_spread']:.0f}x"
        print(f"{name}: {row['params']:,} params, float test accuracy {row['accuracy']:.2%}"
              f"{spread} ({time.perf_counter() - t0:.1f} s)", flush=True)
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
        model = trained[row["name"]]
        # safetensors rejects tensors that share memory; every state_dict entry here is its own.
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(SAMPLE_MODELS_DIR / f"{row['name']}.safetensors"), metadata={
            "name": str(row["name"]),
            "float_test_accuracy": f"{row['accuracy']:.6f}",
            "params": str(row["params"]),
            "seed": str(SEED),
            "epochs": str(EPOCHS),
            "dataset": "sklearn digits, digits_split(seed=0, test_size=0.25)",
            "torch": torch.__version__,
        })
    (SAMPLE_MODELS_DIR / "README.md").write_text(model_card(rows, len(train_data), test_data))
    print(f"wrote {len(rows)} models and README.md to {SAMPLE_MODELS_DIR} "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
