"""The Learn page's numbers: quantization step by step, clipping against rounding, common mistakes.

Every number comes from `lightviz.core.quant` (`choose_qparams`, `quantize`, `dequantize`,
`clip_range`); nothing here re-derives the math, so what the page teaches is what the
engine does. The only extra arithmetic is the intermediate `w * (1/s)` shown before rounding,
computed with the same float32 operations as the kernels.

| step        | symmetric (b bits)                 | asymmetric (b bits)                        |
|-------------|------------------------------------|--------------------------------------------|
| range       | amax = max|w|                      | [min(w, 0), max(w, 0)]                     |
| codes       | -(2^(b-1) - 1) .. 2^(b-1) - 1      | 0 .. 2^b - 1                               |
| scale s     | amax / (2^(b-1) - 1)               | (max - min) / (2^b - 1)                    |
| zero-point  | 0                                  | clamp(-round(min / s), 0, 2^b - 1)         |
| code q      | clamp(round(w * (1/s)) + z, qmin, qmax), round half to even              |
| dequantized | s * (q - z); |w - s(q - z)| <= s/2 inside the range                     |

>>> steps = toy_steps(torch.tensor([-10.0, -5.0, 10.0]), bits=8, scheme="symmetric")
>>> round(steps.scale * 127, 4), steps.table["q"].tolist(), round(float(steps.table["w_hat"][1]), 4)
(10.0, [-127, -64, 127], -5.0394)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from lightviz.core import metrics
from lightviz.core.quant import (
    EPS,
    QParams,
    binary_sign,
    choose_qparams,
    clip_range,
    code_range,
    dequantize,
    quantize,
)
from lightviz.core.specs import SCHEMES, QuantSpec

DEFAULT_TOY = "-10, -5, -0.3, 0, 0.8, 2.5, 7, 10"
MAX_TOY_VALUES = 32
MAX_TOY_ABS = 1e6
LEARN_BITS = (1, 8)  # the page's bits sliders
HIST_BINS = 120


def _fmt(x: float, digits: int = 5) -> str:
    """A number for a formula: 5 significant digits, no exponent noise for small integers."""
    if isinstance(x, (int, np.integer)) or float(x).is_integer() and abs(x) < 1e9:
        return str(int(x))
    return f"{float(x):.{digits}g}".replace("e-0", "e-").replace("e+0", "e+")


def _tex(x: float, digits: int = 5) -> str:
    """A number in LaTeX: scientific notation as a x 10^{k}."""
    text = _fmt(x, digits)
    if "e" in text:
        mantissa, exp = text.split("e")
        return rf"{mantissa} \times 10^{{{int(exp)}}}"
    return text


def cell(x: object) -> str:
    """How a table cell shows a number: whole numbers in full, others to 6 significant digits.

    >>> cell(-1e6), cell(123456.0), cell(6.375e-05), cell(0.5), cell(True)
    ('-1000000', '123456', '6.375e-05', '0.5', 'True')
    """
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return str(x)
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{float(x):.6g}"


def display_cells(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` with the numeric `columns` as text (`cell`): a narrow column never cuts a number."""
    return frame.assign(**{column: frame[column].map(cell) for column in columns if column in frame})


# --- the toy tensor ----------------------------------------------------------------------


def parse_tensor(text: str) -> torch.Tensor:
    """Comma-separated numbers -> a 1-D float32 tensor.

    Brackets are ignored and spaces or semicolons also separate values, so a pasted Python
    list works.

    Raises:
        ValueError: naming the `tensor` parameter, what is allowed and what was given.

    >>> parse_tensor("-10, -5, 0.5").tolist()
    [-10.0, -5.0, 0.5]
    >>> parse_tensor("1, x")
    Traceback (most recent call last):
    ...
    ValueError: tensor must be 1 to 32 comma-separated numbers, e.g. '-10, -5, 0, 2.5'; got 'x', which is not a number
    """
    allowed = f"tensor must be 1 to {MAX_TOY_VALUES} comma-separated numbers, e.g. '-10, -5, 0, 2.5'"
    if not isinstance(text, str):
        raise ValueError(f"{allowed}; got {type(text).__name__}")
    tokens = [t for t in re.split(r"[,;\s]+", text.strip().strip("[]()")) if t]
    if not tokens:
        raise ValueError(f"{allowed}; got an empty text")
    if len(tokens) > MAX_TOY_VALUES:
        raise ValueError(f"{allowed}; got {len(tokens)} numbers")
    values = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            raise ValueError(f"{allowed}; got {token!r}, which is not a number") from None
        if not math.isfinite(value) or abs(value) > MAX_TOY_ABS:
            raise ValueError(f"{allowed}, finite and within ±{MAX_TOY_ABS:g}; got {token!r}")
        values.append(value)
    return torch.tensor(values, dtype=torch.float32)


def toy_spec(bits: int, scheme: str) -> QuantSpec:
    """The per-tensor min/max spec every toy and layer walkthrough uses."""
    if not (isinstance(bits, (int, np.integer)) and LEARN_BITS[0] <= bits <= LEARN_BITS[1]):
        raise ValueError(f"bits must be an integer from {LEARN_BITS[0]} to {LEARN_BITS[1]}; got {bits!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(map(repr, SCHEMES))}; got {scheme!r}")
    return QuantSpec(bits=int(bits), scheme=scheme, granularity="tensor")


def is_binary(spec: QuantSpec) -> bool:
    """Symmetric 1-bit is binarization (sign(w) * mean|w|), not the uniform formulas."""
    return spec.bits == 1 and spec.scheme == "symmetric"


def covered_range(lo: float, hi: float, spec: QuantSpec) -> tuple[float, float]:
    """The range the codes cover for a clip range [lo, hi]: symmetric covers [-amax, amax].

    >>> covered_range(-2.0, 5.0, QuantSpec(bits=8)), covered_range(-2.0, 5.0, QuantSpec(bits=8, scheme="asymmetric"))
    ((-5.0, 5.0), (-2.0, 5.0))
    """
    if spec.scheme == "symmetric":
        amax = max(-float(lo), float(hi))
        return -amax, amax
    return float(lo), float(hi)


@dataclass(frozen=True, eq=False)
class QuantSteps:
    """One tensor quantized per tensor, every intermediate number kept.

    `table` columns: `w` (input), `w_over_s` (w * (1/s), before rounding), `rounded`
    (round(w * (1/s)) + z, before clamping), `q` (integer code), `clamped` (`rounded` fell
    outside [qmin, qmax]), `w_hat` (s * (q - z)),
    `error` (w_hat - w), `abs_error`.
    """

    spec: QuantSpec
    qmin: int
    qmax: int
    lo: float  # range the codes cover: lo <= 0 <= hi
    hi: float
    scale: float
    zero_point: int
    table: pd.DataFrame

    @property
    def binary(self) -> bool:
        return is_binary(self.spec)

    @property
    def half_step(self) -> float:
        return self.scale / 2

    @property
    def max_error(self) -> float:
        return float(self.table["abs_error"].max())

    @property
    def within_half_step(self) -> bool:
        """max |error| <= s/2, up to float32 rounding of s and of w * (1/s) (relative 1e-5)."""
        return self.max_error <= self.half_step * (1 + 1e-5)

    @property
    def note(self) -> str | None:
        """Why a value inside the min/max range was clamped, when one was (asymmetric only).

        z is rounded, so the grid can shift by up to s/2 and cover [s(qmin - z), s(qmax - z)]
        instead of [w_min, w_max]: an end value then rounds one code past the end. Its error
        stays within s/2.
        """
        if self.binary or not bool(self.table["clamped"].any()):
            return None
        levels = grid_levels(self)
        z_raw = float(-torch.tensor(self.lo, dtype=torch.float32) / torch.tensor(self.scale, dtype=torch.float32))
        clamped = ", ".join(_fmt(w) for w in self.table.loc[self.table["clamped"], "w"])
        return (f"Why is w = {clamped} clamped? The zero-point is rounded: −w_min/s = {z_raw:.8g} in float32 "
                f"becomes z = {self.zero_point}, which shifts the grid to [{_fmt(levels[0])}, {_fmt(levels[-1])}]. "
                f"A value at the end of the range then rounds one code past the last one and is clamped; "
                f"its error stays within s/2.")

    @property
    def example(self) -> int:
        """Row worth walking through: the largest |error| (ties: the first)."""
        return int(self.table["abs_error"].to_numpy().argmax())

    def latex(self) -> list[tuple[str, str]]:
        """(step title, LaTeX with this tensor's numbers) for each step."""
        b, s, z = self.spec.bits, _tex(self.scale), self.zero_point
        i = self.example
        row = self.table.iloc[i]
        w, q, w_hat = _tex(row["w"]), int(row["q"]), _tex(row["w_hat"])
        if self.binary:
            return [
                ("1. Range: 1 bit symmetric is binarization (XNOR-Net)",
                 rf"\alpha = \operatorname{{mean}}|w| = {_tex(self.scale)}, \quad q \in \{{-1, +1\}}"
                 r" \text{ (and } \operatorname{sign}(0) = +1\text{)}"),
                ("2. Scale", rf"s = \alpha = {s}"),
                ("3. Zero-point", r"z = 0"),
                ("4. Codes", rf"q = \operatorname{{sign}}(w), \quad q({w}) = {q}"),
                ("5. Dequantize", rf"\hat w = s\,q = {s} \times ({q}) = {w_hat}"),
                ("6. Error", rf"\max|w - \hat w| = {_tex(self.max_error)} \quad"
                             r"\text{(no } s/2 \text{ bound: two levels only)}"),
            ]
        if self.spec.scheme == "symmetric":
            amax = max(-self.lo, self.hi)
            range_tex = _lines(rf"\text{{amax}} = \max|w| = {_tex(amax)}",
                               rf"q \in [-(2^{{{b}-1}}-1),\ 2^{{{b}-1}}-1] = [{self.qmin}, {self.qmax}]")
            scale_tex = _lines(rf"s = \max\!\left(\frac{{\text{{amax}}}}{{2^{{{b}-1}}-1}}, \epsilon\right)",
                               self._scale_step(amax, self.qmax))
            zero_tex = r"z = 0 \quad \text{(zero is exact)}"
        else:
            range_tex = _lines(rf"w_{{\min}} = \min(w, 0) = {_tex(self.lo)}",
                               rf"w_{{\max}} = \max(w, 0) = {_tex(self.hi)}",
                               rf"q \in [0,\ 2^{{{b}}}-1] = [0, {self.qmax}]")
            scale_tex = _lines(rf"s = \max\!\left(\frac{{w_{{\max}} - w_{{\min}}}}{{2^{{{b}}}-1}}, \epsilon\right)",
                               self._scale_step(self.hi - self.lo, self.qmax))
            z_raw = -float(torch.tensor(self.lo, dtype=torch.float32) / torch.tensor(self.scale, dtype=torch.float32))
            zero_tex = _lines(r"z = \operatorname{clamp}\!\left(-\operatorname{round}\!\left(\frac{w_{\min}}{s}\right),"
                              rf" 0, {self.qmax}\right)",
                              rf"= \operatorname{{clamp}}(\operatorname{{round}}({_tex(z_raw, 8)}), 0, {self.qmax}) = {z}")
        example = rf"q({w}) = \operatorname{{round}}({_tex(row['w_over_s'])}) + {z} = {int(row['rounded'])}"
        if row["clamped"]:
            example += rf" \;\to\; \text{{clamped to }} {q}"
        bound = r"\le" if self.within_half_step else r">"  # clipped ranges can exceed s/2
        return [
            ("1. Range (zero always inside)", range_tex),
            ("2. Scale", scale_tex),
            ("3. Zero-point", zero_tex),
            ("4. Integer codes (round half to even)",
             _lines(r"q = \operatorname{clamp}(\operatorname{round}(w \cdot \tfrac{1}{s}) + z,"
                    rf"\ {self.qmin},\ {self.qmax})", example)),
            ("5. Dequantize", _lines(r"\hat w = s\,(q - z)", rf"= {s} \times ({q} - {z}) = {w_hat}")),
            ("6. Error",
             _lines(rf"\max|w - \hat w| = {_tex(self.max_error)}", rf"{bound} \frac{{s}}{{2}} = {_tex(self.half_step)}")),
        ]

    def _scale_step(self, span: float, qmax: int) -> str:
        """'= max(10/127, eps) = 0.07874': the step that gave s, eps shown when it wins."""
        ratio = span / qmax if qmax else 0.0
        tail = rf"= \epsilon = {_tex(self.scale)}" if self.scale > ratio * (1 + 1e-6) else rf"= {_tex(self.scale)}"
        return (rf"= \max\!\left(\frac{{{_tex(span)}}}{{{qmax}}},\ {_tex(float(EPS))}\right) {tail}"
                if self.scale > ratio * (1 + 1e-6) else rf"= \frac{{{_tex(span)}}}{{{qmax}}} {tail}")


def _lines(*lines: str) -> str:
    """Several centered lines of display math (narrow columns: one idea per line)."""
    return r"\begin{gathered}" + r" \\ ".join(lines) + r"\end{gathered}"


def quant_steps(weight: torch.Tensor, spec: QuantSpec) -> QuantSteps:
    """Quantize a tensor per tensor with `spec` (granularity 'tensor'), keeping each step.

    >>> steps = quant_steps(torch.tensor([-10.0, -5.0, 10.0]), QuantSpec(bits=8, granularity="tensor"))
    >>> steps.zero_point, steps.table["q"].tolist()
    (0, [-127, -64, 127])
    """
    if spec.bits is None or spec.granularity != "tensor":
        raise ValueError(f"spec must quantize per tensor (bits set, granularity 'tensor'); got {spec.label}")
    flat = weight.detach().reshape(-1).float().cpu()
    qparams = choose_qparams(flat, spec)
    codes = quantize(flat, spec, qparams=qparams)
    w_hat = dequantize(codes, qparams, spec)
    qmin, qmax = code_range(spec)
    lo, hi = clip_range(flat, spec)
    scale = qparams.scale.reshape(())
    lo, hi = covered_range(lo.reshape(-1)[0], hi.reshape(-1)[0], spec)
    if is_binary(spec):
        w_over_s = binary_sign(flat)
        lo, hi = -float(scale), float(scale)
    else:
        w_over_s = torch.mul(flat, torch.reciprocal(scale))  # as the kernels: w * (1/s)
    unclamped = torch.round(w_over_s) + qparams.zero_point.float()
    error = (w_hat - flat).double()
    table = pd.DataFrame({
        "w": flat.double().numpy(),
        "w_over_s": w_over_s.double().numpy(),
        "rounded": unclamped.numpy().astype(np.int64),
        "q": codes.numpy().astype(np.int64),
        "clamped": ((unclamped < qmin) | (unclamped > qmax)).numpy(),
        "w_hat": w_hat.double().numpy(),
        "error": error.numpy(),
        "abs_error": error.abs().numpy(),
    })
    return QuantSteps(spec=spec, qmin=qmin, qmax=qmax, lo=lo, hi=hi,
                      scale=float(scale), zero_point=int(qparams.zero_point[0]), table=table)


def toy_steps(weight: torch.Tensor, bits: int, scheme: str) -> QuantSteps:
    """`quant_steps` with a per-tensor min/max spec of `bits` and `scheme`."""
    return quant_steps(weight, toy_spec(bits, scheme))


def grid_levels(steps: QuantSteps) -> np.ndarray:
    """Every value a code can dequantize to, s * (q - z) for q in [qmin, qmax], ascending."""
    codes = torch.arange(steps.qmin, steps.qmax + 1, dtype=torch.int32)
    if steps.binary:
        codes = torch.tensor([-1, 1], dtype=torch.int32)
    qparams = QParams(scale=torch.tensor([steps.scale], dtype=torch.float32),
                      zero_point=torch.tensor([steps.zero_point], dtype=torch.int32))
    return dequantize(codes, qparams, steps.spec).double().numpy()


# --- a real layer ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LayerSteps:
    """A real layer's weight quantized per tensor (with a range method) and per channel.

    `channels` columns: `channel`, `min`, `max`, `scale`, `zero_point` (per-channel min/max).
    `summary` columns: `granularity`, `blocks`, `mse`, `sqnr_db`, `max_abs_error`.
    """

    spec: QuantSpec  # per tensor, with the chosen range method
    lo: float  # clip range of the per-tensor spec
    hi: float
    scale: float
    zero_point: int
    levels: np.ndarray  # the per-tensor grid, ascending
    channels: pd.DataFrame
    summary: pd.DataFrame
    counts: np.ndarray  # histogram of the weight, (bins,)
    edges: np.ndarray  # (bins + 1,)
    n_weights: int
    clipped_fraction: float  # weights outside [lo, hi] (they saturate)


def layer_steps(weight: torch.Tensor, bits: int, scheme: str, range_method: str = "minmax",
                axis: int = 0, percentile: float = 99.9, n_channels: int = 8) -> LayerSteps:
    """Quantize a layer's weight per tensor (chosen range method) and per channel (min/max).

    >>> w = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    >>> steps = layer_steps(w, bits=8, scheme="symmetric")
    >>> round(steps.scale * 127, 4), steps.channels["scale"].round(5).tolist()
    (2.0, [0.01575, 0.00394])
    """
    base = toy_spec(bits, scheme)
    tensor_spec = replace(base, range_method=range_method, percentile=percentile)
    channel_spec = replace(tensor_spec, granularity="channel")
    w = weight.detach().float().cpu()  # an engine's weight may be on a GPU; the steps are shown from the CPU
    rows, qparams = [], {}
    for spec in (tensor_spec, channel_spec):
        qparams[spec.granularity] = qp = choose_qparams(w, spec, axis)
        w_hat = dequantize(quantize(w, spec, axis, qp), qp, spec, axis)
        rows.append({"granularity": spec.granularity, "blocks": len(qp), "mse": metrics.mse(w, w_hat),
                     "sqnr_db": metrics.sqnr_db(w, w_hat), "max_abs_error": metrics.max_abs_error(w, w_hat)})
    lo_c, hi_c = clip_range(w, channel_spec, axis)  # (C_out,) each
    n = min(n_channels, len(qparams["channel"]))
    channels = pd.DataFrame({
        "channel": np.arange(n), "min": lo_c[:n].double().numpy(), "max": hi_c[:n].double().numpy(),
        "scale": qparams["channel"].scale[:n].double().numpy(),
        "zero_point": qparams["channel"].zero_point[:n].numpy().astype(np.int64),
    })
    tensor = qparams["tensor"]
    scale, zero_point = float(tensor.scale[0]), int(tensor.zero_point[0])
    if is_binary(tensor_spec):  # the two levels +-alpha are the whole "range"
        lo, hi = -scale, scale
    else:
        lo, hi = covered_range(*(x[0] for x in clip_range(w, tensor_spec, axis)), tensor_spec)
    qmin, qmax = code_range(tensor_spec)
    grid = QuantSteps(spec=tensor_spec, qmin=qmin, qmax=qmax, lo=lo, hi=hi, scale=scale,
                      zero_point=zero_point, table=pd.DataFrame())
    flat = w.reshape(-1)
    outside = ((flat < lo) | (flat > hi)).double().mean() if flat.numel() else torch.tensor(0.0)
    counts, edges = histogram(w)
    return LayerSteps(spec=tensor_spec, lo=lo, hi=hi, scale=scale, zero_point=zero_point,
                      levels=grid_levels(grid), channels=channels, summary=pd.DataFrame(rows),
                      counts=counts, edges=edges, n_weights=flat.numel(),
                      clipped_fraction=0.0 if is_binary(tensor_spec) else float(outside))


def histogram(weight: torch.Tensor, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of the weight's values: pre-binned, never raw points.

    `bins=None` picks 2 * sqrt(n) bins, from 10 to HIST_BINS: a 144-weight conv gets 24.

    >>> counts, edges = histogram(torch.tensor([0.0, 1.0, 1.0]), bins=2)
    >>> counts.tolist(), edges.tolist()
    ([1, 2], [0.0, 0.5, 1.0])
    """
    values = weight.detach().reshape(-1).double().cpu().numpy()
    if bins is None:
        bins = int(np.clip(2 * np.sqrt(values.size), 10, HIST_BINS))
    if values.size == 0:
        return np.zeros(bins, dtype=np.int64), np.linspace(-1.0, 1.0, bins + 1)
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return counts, edges


# --- common mistakes ---------------------------------------------------------------------


def wrong_range(weight: torch.Tensor, bits: int) -> dict:
    """The popular wrong range `min = min(w)/2^k`, `max = max(w)/2^k`, against the true one.

    >>> wrong_range(torch.tensor([-10.0, 10.0]), bits=8)["wrong_min"]
    -0.0390625
    """
    toy_spec(bits, "symmetric")
    w = weight.detach().reshape(-1).double()
    wmin, wmax = float(w.min()), float(w.max())
    inside = int(((w >= wmin / 2**bits) & (w <= wmax / 2**bits)).sum())
    return {"k": bits, "min": wmin, "max": wmax, "wrong_min": wmin / 2**bits, "wrong_max": wmax / 2**bits,
            "inside": inside, "inside_fraction": inside / w.numel()}


def wrong_formula_table(weight: torch.Tensor, bits: int) -> pd.DataFrame:
    """The popular `w_q = round(w * 2^k)` at k = bits next to the correct symmetric code.

    Columns: `w`, `wrong_q` (round(w * 2^k), half to even), `overflow` (outside the signed
    b-bit range [-2^(b-1), 2^(b-1) - 1]), `wrong_w_hat` (wrong_q / 2^k: what reading the code
    back would give once it is stored in b bits, saturated), `q` (correct symmetric per-tensor
    code), `w_hat` (correct s * q).

    >>> table = wrong_formula_table(torch.tensor([-10.0, -5.0, 10.0]), bits=8)
    >>> table["wrong_q"].tolist(), table["overflow"].tolist(), table["q"].tolist()
    ([-2560, -1280, 2560], [True, True, True], [-127, -64, 127])
    """
    correct = toy_steps(weight, bits, "symmetric")
    w = weight.detach().reshape(-1).double()
    wrong = torch.round(w * 2**bits)  # the popular formula, exactly as written
    lo, hi = signed_range(bits)
    stored = wrong.clamp(lo, hi)
    return pd.DataFrame({
        "w": w.numpy(),
        "wrong_q": wrong.numpy().astype(np.int64),
        "overflow": ((wrong < lo) | (wrong > hi)).numpy(),
        "wrong_w_hat": (stored / 2**bits).numpy(),
        "q": correct.table["q"].to_numpy(),
        "w_hat": correct.table["w_hat"].to_numpy(),
    })


def signed_range(bits: int) -> tuple[int, int]:
    """The signed b-bit integer range, the most any b-bit code can hold.

    >>> signed_range(8)
    (-128, 127)
    """
    toy_spec(bits, "symmetric")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
