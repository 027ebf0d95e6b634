"""The command line, `python -m lightviz COMMAND`: one module per command family.

- `common`: the error convention, shared flags (model, data, plan, activations), loading,
  parsing and JSON helpers; every command module imports it and nothing else of the CLI's.
- `evaluate`: `models`, `evaluate`, `sweep`.
- `analysis`: `sensitivity`, `allocate`.
- `finetune`: `finetune` (quantization-aware fine-tuning, distillation).
- `report`: `report` (a self-contained HTML report, optionally comparing two plans).
- `export`: `export` (ONNX QDQ, packed file), `benchmark` (measured latency), `inspect` (packed file).
- `methods`: `compare-methods` (PTQ methods side by side).

Bad input exits with code 2 and one line on stderr, never a traceback; Ctrl-C exits with 130.
`--device auto|cpu|cuda` picks where models run; `sweep`, `sensitivity` and `allocate` take
`--ray [ADDRESS]` to run their evaluations as Ray tasks (Ray is imported only then). The CLI may import
every room below it (plots, analysis, recover, io, core) but nothing of `lightviz.ui`. Heavy
modules (torch, torchvision's zoo, pandas) are imported inside the commands that need them, so
`--help` and `models` start fast.

    python -m lightviz evaluate --model digits-cnn --bits 4 --granularity tensor --json
    python -m lightviz sweep --model digits-cnn --bits 2,4,8 --scheme symmetric,asymmetric --out r.csv
    python -m lightviz evaluate --model weights.safetensors --arch resnet18 --data images.zip --json
    python -m lightviz sweep --model resnet18 --bits 2,4,8 --ray --out r.csv   # a local Ray instance
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from lightviz.cli import analysis, common, evaluate, export, finetune, methods, report

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = common.Parser(prog="python -m lightviz", description="Explore quantization and pruning.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=common.Parser)
    for family in (evaluate, analysis, finetune, methods, export, report):
        family.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 done, 2 bad input, 1 internal error).

    stderr gets at most one line: library warnings (numpy overflow, torch deprecations) are
    silenced, since what they would say reaches the user as a result field or a note. A reader
    that closes the pipe early (`| head`) ends the command quietly with code 0.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = build_parser().parse_args(argv)
            code = args.run(args)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except (common.UsageError, ValueError, OSError) as error:  # OSError: a missing or unreadable file
        print(f"lightviz: error: {common.one_line(error)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("lightviz: error: not enough memory for this request; use fewer samples (--max-samples), "
              "a smaller image size or a smaller model", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ray tasks are cancelled on the way out (ray_backend.py)
        print("lightviz: interrupted: the remaining work was cancelled; --out files are written only by a "
              "command that completes", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - users see one line, never a traceback
        print(f"lightviz: internal error ({type(error).__name__}): {common.one_line(error)}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again
    (the recipe of Python's signal documentation for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (pytest's capture): nothing to silence
        pass
