"""Accuracy of every PTQ method against round-to-nearest on the digits samples, W4/W3/W2.

Per channel, symmetric, BatchNorm folded (the Plan defaults); methods calibrate on 128 images of
the training split (their default), accuracy on the 450 test images. Prints one markdown table
per sample model (rows: methods; columns: W4, W3, W2 accuracy; seconds the method took).

Run: .venv/bin/python benchmarks/methods_table.py [--models digits-cnn,...] [--bits 4,3,2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightviz.analysis.methods import compare_methods  # noqa: E402
from lightviz.core.engine import Engine  # noqa: E402
from lightviz.io import zoo  # noqa: E402
from lightviz.io.datasets import eval_data_for  # noqa: E402

SAMPLES = "digits-mlp,digits-cnn,digits-mobilenet,digits-resnet"
METHODS = "gptq,adaround,bias_correction,equalize,smoothquant,awq,hadamard"


def table(name: str, methods: list[str], bits: list[int]) -> str:
    bundle = zoo.load_model(name)
    data = eval_data_for(bundle)
    result = compare_methods(Engine(bundle.model), data, methods, bits)
    rows = result.rows
    settings = [f"W{b}" for b in bits]
    lines = [f"{name} (float {result.float_accuracy:.2%}, {len(data)} test images)", "",
             "| method | " + " | ".join(settings) + " | seconds (" + "/".join(settings) + ") |",
             "|---|" + "---:|" * (len(settings) + 1)]
    nearest = {s: rows[(rows.method == "nearest") & (rows.setting == s)].accuracy.item() for s in settings}
    for method in dict.fromkeys(rows.method):
        cells, times = [], []
        for s in settings:
            row = rows[(rows.method == method) & (rows.setting == s)]
            acc = row.accuracy.item()
            delta = "" if method == "nearest" else f" ({(acc - nearest[s]) * 100:+.1f})"
            cells.append(f"{acc:.2%}{delta}")
            times.append(f"{row.seconds.item():.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " | " + "/".join(times) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=SAMPLES)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--bits", default="4,3,2")
    args = parser.parse_args()
    bits = [int(b) for b in args.bits.split(",")]
    for name in args.models.split(","):
        print(table(name, args.methods.split(","), bits), flush=True)
        print(f"[load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}]\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
