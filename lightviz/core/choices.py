"""The specs' vocabulary: the values each choice allows and what each means, and the checks
every spec validates its fields with.

>>> check_choice("scheme", "symmetric", SCHEMES), is_int(True), is_finite_number(float("inf"))
(None, False, False)
"""

from __future__ import annotations

import math
from typing import Any

SCHEMES = ("symmetric", "asymmetric")
# Plans come from files and links: bounded before parsing (a plan nests 4 levels deep; a link's
# plan 100,000 levels deep would blow Python's recursion limit in json.loads).
MAX_PLAN_CHARS = 2_000_000
MAX_PLAN_DEPTH = 16
GRANULARITIES = ("tensor", "channel", "group")
RANGE_METHODS = ("minmax", "percentile", "mse", "entropy")
PRUNE_METHODS = ("unstructured", "filter", "n:m")
SCALE_DTYPES = ("float32", "float16", "bfloat16")  # how a quantized weight's scales are stored

RANGE_METHOD_HELP = {
    "minmax": "use the block's full range: no clipping, largest rounding step",
    "percentile": "clip at a percentile of the values: outliers saturate, the step shrinks",
    "mse": "grid-search the clip range that minimizes the squared error of the block",
    "entropy": "TensorRT-style KL calibration over a 2048-bin histogram",
}
# Number formats (lightviz/core/formats.py holds their math). A non-integer format fixes the
# stored bits; MX and NVFP4 also fix the block layout and the scale rule (their specs say how).
NUMBER_FORMATS = ("int", "fp8_e4m3", "fp8_e5m2", "mxfp8", "mxfp6", "mxfp4", "mxint8", "nvfp4", "nf4")
FORMAT_BITS = {"fp8_e4m3": 8, "fp8_e5m2": 8, "mxfp8": 8, "mxfp6": 6, "mxfp4": 4, "mxint8": 8, "nvfp4": 4, "nf4": 4}
FORMAT_BLOCKS = {"mxfp8": 32, "mxfp6": 32, "mxfp4": 32, "mxint8": 32, "nvfp4": 16}
FORMAT_HELP = {
    "int": "integer codes on a uniform grid (bits, scheme, granularity and range method as chosen)",
    "fp8_e4m3": "FP8 E4M3 (max 448): 8-bit floats, a float32 scale per block, finer steps near zero",
    "fp8_e5m2": "FP8 E5M2 (max 57344): wider range, 2 mantissa bits",
    "mxfp8": "OCP MX: blocks of 32 FP8 E4M3 values sharing a power-of-two E8M0 scale",
    "mxfp6": "OCP MX: blocks of 32 FP6 E2M3 values (max 7.5) sharing an E8M0 scale",
    "mxfp4": "OCP MX: blocks of 32 FP4 E2M1 values (0, 0.5, 1, 1.5, 2, 3, 4, 6) sharing an E8M0 scale",
    "mxint8": "OCP MX: blocks of 32 int8 values (fixed point, step 1/64) sharing an E8M0 scale",
    "nvfp4": "NVIDIA: blocks of 16 FP4 E2M1 values with an FP8 E4M3 scale, times a float32 tensor scale",
    "nf4": "QLoRA NormalFloat: 16 levels at normal quantiles, one float32 absmax per block",
}
PRUNE_METHOD_HELP = {
    "unstructured": "zero the individual weights of smallest |w|",
    "filter": "remove whole output channels with the smallest L1 norm",
    "n:m": "keep the n largest |w| in every run of m weights (2:4 at sparsity 0.5)",
}


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    """Raise ValueError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
