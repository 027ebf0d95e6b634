"""The PTQ method flags every plan-taking command shares: --method and each method's settings
(lightviz/core/methods/spec.py), and the MethodSpec they describe.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> method_flags(parser)
>>> method_from_args(parser.parse_args(["--method", "gptq", "--damp", "0.05"])).damp
0.05
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from lightviz.core.methods.spec import MethodSpec

METHOD_FLAGS = {"calib_samples": "calib_samples", "damp": "damp", "act_order": "act_order", "alpha": "alpha",
                "iterations": "iterations", "method_seed": "seed"}


def method_from_args(args: argparse.Namespace, method: MethodSpec | None = None) -> MethodSpec:
    """`method` (default MethodSpec()) with --method and the method-setting flags applied."""
    changes = {field: getattr(args, flag) for flag, field in METHOD_FLAGS.items()
               if getattr(args, flag, None) not in (None, False)}
    if getattr(args, "method", None):
        changes["name"] = args.method
    return replace(method or MethodSpec(), **changes)


def method_flags(parser: argparse.ArgumentParser, with_method: bool = True) -> None:
    """--method and the settings of the PTQ methods (lightviz/core/methods/spec.py)."""
    if with_method:
        parser.add_argument("--method", help="PTQ method: nearest, gptq, adaround, bias_correction, equalize, "
                                             "smoothquant, awq, hadamard, or a '+' combination such as "
                                             "equalize+bias_correction (default nearest)")
    parser.add_argument("--calib-samples", type=int, help="calibration inputs methods read (default 128)")
    parser.add_argument("--damp", type=float, help="GPTQ dampening, a fraction of the mean Hessian diagonal (0.01)")
    parser.add_argument("--act-order", action="store_true", help="GPTQ: round columns by decreasing Hessian diagonal")
    parser.add_argument("--alpha", type=float, help="SmoothQuant migration strength, 0 to 1 (0.5)")
    parser.add_argument("--iterations", type=int, help="AdaRound steps per layer (500; AIMET uses 10000)")
    parser.add_argument("--method-seed", type=int, help="seed of rotations and AdaRound's sampling (0)")
