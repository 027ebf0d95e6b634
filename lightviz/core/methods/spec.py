"""MethodSpec: how a layer's weights are rounded, and what is done to them before and after.

A method name is one of METHODS, or a '+'-joined combination of at most one *transform*
(equalize, smoothquant, awq, hadamard: a change of coordinates the float model does not
notice), one *rounding* (nearest, gptq, adaround) and `bias_correction` (a bias fix after
rounding), e.g. "equalize+bias_correction" (DFQ, Nagel et al. 2019) or "hadamard+gptq"
(QuaRot). The name is stored in that canonical order.

| method          | uses data | what it does                                                          |
|-----------------|-----------|-----------------------------------------------------------------------|
| nearest         | no        | round to the nearest grid point (lightviz's default)                  |
| gptq            | yes       | column by column, correct the rest of the row for each rounding error, weighted by the input Hessian (Frantar et al. 2022) |
| adaround        | yes       | learn up-or-down rounding per weight minimizing the layer's output error (Nagel et al. 2020) |
| bias_correction | yes       | move the mean output error of the quantized layer into its bias (Nagel et al. 2019, empirical) |
| equalize        | no        | rescale channels between consecutive layers so their ranges match (cross-layer equalization, DFQ) |
| smoothquant     | yes       | divide inputs by s = max|x|^alpha / max|w|^(1-alpha), multiply weights by s (Xiao et al. 2022) |
| awq             | yes       | scale salient input channels, s = mean|x|^a with a searched (Lin et al. 2023) |
| hadamard        | no        | rotate a Linear layer's inputs by a random orthogonal matrix (QuaRot)  |

>>> MethodSpec("bias_correction+equalize").name
'equalize+bias_correction'
>>> MethodSpec("gptq").uses_data, MethodSpec("hadamard").uses_data
(True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TRANSFORMS = ("equalize", "smoothquant", "awq", "hadamard")
ROUNDINGS = ("nearest", "gptq", "adaround")
METHODS = ("nearest", "gptq", "adaround", "bias_correction", "equalize", "smoothquant", "awq", "hadamard")
PRESETS = METHODS + ("equalize+bias_correction", "equalize+adaround", "hadamard+gptq", "smoothquant+gptq",
                     "awq+gptq", "gptq+bias_correction")
METHOD_HELP = {
    "nearest": "round every weight to the nearest grid point",
    "gptq": "GPTQ: round column by column, spreading each error over the not-yet-rounded columns "
            "(weighted by the inputs' Hessian)",
    "adaround": "AdaRound: learn, per weight, whether to round up or down so the layer's output stays close",
    "bias_correction": "round to nearest, then move the mean output error into the bias (empirical)",
    "equalize": "cross-layer equalization: rescale channels between consecutive layers so ranges match "
                "(no data)",
    "smoothquant": "SmoothQuant: migrate input outliers into the weights, s = max|x|^α / max|w|^(1−α)",
    "awq": "AWQ: scale up the weights of salient input channels (searched on calibration data)",
    "hadamard": "rotate Linear inputs by a random orthogonal (Hadamard) matrix to spread outliers (no data)",
}
DATA_FREE = {"nearest", "equalize", "hadamard"}
SEQUENTIAL = {"gptq", "adaround", "bias_correction"}  # read the quantized model's inputs, layer by layer
MAX_CALIB = 4096


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def canonical_name(name: str) -> str:
    """The canonical form of a method name (transform+rounding+bias_correction). Raises ValueError.

    >>> canonical_name("gptq+hadamard"), canonical_name("equalize+nearest")
    ('hadamard+gptq', 'equalize')
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"method must be one of {', '.join(METHODS)} or a '+' combination; got {name!r}")
    parts = [part.strip() for part in name.split("+")]
    unknown = [part for part in parts if part not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; methods: {', '.join(METHODS)} (combine with '+', "
                         "e.g. equalize+bias_correction)")
    if len(set(parts)) < len(parts):
        raise ValueError(f"method {name!r} names a step twice")
    transforms = [p for p in parts if p in TRANSFORMS]
    roundings = [p for p in parts if p in ROUNDINGS and p != "nearest"]
    if len(transforms) > 1 or len(roundings) > 1:
        raise ValueError(f"method {name!r} combines at most one transform ({', '.join(TRANSFORMS)}), one "
                         f"rounding (gptq, adaround) and bias_correction")
    ordered = transforms + roundings + [p for p in parts if p == "bias_correction"]
    return "+".join(ordered) or "nearest"


@dataclass(frozen=True)
class MethodSpec:
    """A layer's PTQ method and its settings (frozen, validated, JSON-able).

    Args:
        name: a method or combination (module docstring).
        calib_samples: calibration inputs the method reads (the first of the data's calibration set).
        damp: GPTQ's dampening, a fraction of the mean diagonal of the Hessian added to it.
        act_order: GPTQ rounds columns in order of decreasing Hessian diagonal (activation order).
        block_size: GPTQ's lazy batch: columns updated together before the rest of the row.
        alpha: SmoothQuant's migration strength (0: nothing moves to the weights, 1: everything).
        iterations: AdaRound's optimization steps per layer (AIMET uses 10,000).
        seed: random rotations (hadamard) and AdaRound's sampling.
    """

    name: str = "nearest"
    calib_samples: int = 128
    damp: float = 0.01
    act_order: bool = False
    block_size: int = 128
    alpha: float = 0.5
    iterations: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", canonical_name(self.name))
        for field_name, low, high in (("calib_samples", 1, MAX_CALIB), ("block_size", 1, 65536),
                                      ("iterations", 1, 100_000), ("seed", 0, 2**31 - 1)):
            value = getattr(self, field_name)
            if not (_is_int(value) and low <= value <= high):
                raise ValueError(f"{field_name} must be an integer from {low} to {high}; got {value!r}")
        if not (_number(self.damp) and 0.0 <= self.damp <= 1.0):
            raise ValueError(f"damp must be a number from 0 to 1 (a fraction of the mean Hessian diagonal); "
                             f"got {self.damp!r}")
        if not (_number(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must be a number from 0 to 1; got {self.alpha!r}")
        if not isinstance(self.act_order, bool):
            raise ValueError(f"act_order must be True or False; got {self.act_order!r}")
        object.__setattr__(self, "damp", float(self.damp))
        object.__setattr__(self, "alpha", float(self.alpha))

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(self.name.split("+"))

    @property
    def transform(self) -> str | None:
        return next((step for step in self.steps if step in TRANSFORMS), None)

    @property
    def rounding(self) -> str:
        return next((step for step in self.steps if step in ("gptq", "adaround")), "nearest")

    @property
    def bias_correction(self) -> bool:
        return "bias_correction" in self.steps

    @property
    def uses_data(self) -> bool:
        """Whether the method reads calibration inputs."""
        return any(step not in DATA_FREE for step in self.steps)

    @property
    def sequential(self) -> bool:
        """Whether it reads the inputs the *quantized* upstream layers produce (so it depends on them)."""
        return any(step in SEQUENTIAL for step in self.steps)
