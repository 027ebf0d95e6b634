"""The command line, `python -m lightviz COMMAND`: one module per command family.

- `common`: the error convention, shared flags (model, data, plan, activations), loading,
  parsing and JSON helpers; every command module imports it and nothing else of the CLI's.
- `evaluate`: `models`, `evaluate`, `sweep`.
- `analysis`: `sensitivity`, `allocate`.
- `finetune`: `finetune` (quantization-aware fine-tuning, distillation).
- `methods`: `compare-methods` (PTQ methods side by side).

Bad input exits with code 2 and one line on stderr, never a traceback. The CLI may import
every room below it (plots, analysis, recover, io, core) but nothing of `lightviz.ui`. Heavy
modules (torch, torchvision's zoo, pandas) are imported inside the commands that need them, so
`--help` and `models` start fast.

    python -m lightviz evaluate --model digits-cnn --bits 4 --granularity tensor --json
    python -m lightviz sweep --model digits-cnn --bits 2,4,8 --scheme symmetric,asymmetric --out r.csv
    python -m lightviz evaluate --model weights.safetensors --arch resnet18 --data images.zip --json
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from lightviz.cli import analysis, common, evaluate, finetune, methods

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = common.Parser(prog="python -m lightviz", description="Explore quantization and pruning.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=common.Parser)
    for family in (evaluate, analysis, finetune, methods):
        family.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 done, 2 bad input, 1 internal error)."""
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (common.UsageError, ValueError, OSError) as error:  # OSError: a missing or unreadable file
        print(f"lightviz: error: {common.one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - users see one line, never a traceback
        print(f"lightviz: internal error ({type(error).__name__}): {common.one_line(error)}", file=sys.stderr)
        return 1
