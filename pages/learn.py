"""Learn: what quantization does to numbers, step by step, on a toy tensor and on a real layer."""

import streamlit as st
import torch

from lightviz.analysis import clipping, learn
from lightviz.core.specs import RANGE_METHOD_HELP, RANGE_METHODS, SCHEMES
from lightviz.plots import learn as learn_plots
from lightviz.ui import charts, learn_formats, router, state
from lightviz.ui.text import plain

router.through_router("pages/learn.py")  # opened by URL before the app first ran

state.init_state()  # idempotent: app.py does it too; the page also runs on its own
NUM = {"format": "%.5g"}
def TEXT(label: str, help: str | None = None):  # noqa: N802 - reads as a column type
    """A column of numbers shown as text (learn.cell): whole numbers in full; `_fit` sets its width."""
    return ("text", label, help)


def _fit(frame, columns: dict) -> dict:
    """Column config with every TEXT column as wide as its longest cell (8 px a character)."""
    config = {}
    for name, column in columns.items():
        if isinstance(column, tuple):
            _, label, help_text = column
            longest = max([len(label)] + [len(str(v)) for v in frame[name]]) if name in frame else 4
            column = st.column_config.TextColumn(label, help=help_text, width=24 + 8 * longest)
        config[name] = column
    return config


STEP_COLUMNS = {
    "w": TEXT("w"),
    "w_over_s": TEXT("w·(1/s)", help="before rounding"),
    "rounded": TEXT("round(·)+z", help="round half to even, plus z, before clamping"),
    "q": TEXT("code q", help="clamped to the code range"),
    "clamped": st.column_config.CheckboxColumn("clamped", help="the rounded code fell outside the code range"),
    "w_hat": TEXT("ŵ = s(q−z)"),
    "error": TEXT("error ŵ−w"),
    "abs_error": None,
}
STEP_NUMBERS = ["w", "w_over_s", "rounded", "q", "w_hat", "error"]
MISTAKE_COLUMNS = {
    "w": TEXT("w"),
    "wrong_q": TEXT("round(w·2^k)", help="the popular formula"),
    "overflow": st.column_config.CheckboxColumn("overflows", help="outside the signed b-bit range"),
    "wrong_w_hat": TEXT("read back", help="saturated to b bits, divided by 2^k"),
    "q": TEXT("correct q", help="symmetric, per tensor"),
    "w_hat": TEXT("correct ŵ"),
}
MISTAKE_NUMBERS = ["w", "wrong_q", "wrong_w_hat", "q", "w_hat"]
METHOD_COLUMNS = {c: st.column_config.NumberColumn(c, **NUM) for c in ("ratio", "lo", "hi", "scale")} | {
    "clip_mse": st.column_config.NumberColumn("clipping MSE", **NUM),
    "round_mse": st.column_config.NumberColumn("rounding MSE", **NUM),
    "mse": st.column_config.NumberColumn("total MSE", **NUM),
    "clipped_fraction": st.column_config.NumberColumn("clipped", format="percent"),
    "zero_point": None,
}
WHY_CLIP = (
    "**Why MSE and percentile ranges help.** The step is s = range / (number of levels − 1): the full min/max "
    "range spends most levels on a few outliers, so every other weight gets a coarse step. Shrinking the range "
    "saturates those few outliers (a little clipping error) and makes the step finer for all the rest (much less "
    "rounding error, which falls with the square of the step). The total is smallest in between: `mse` searches "
    "for that point, `percentile` and `entropy` estimate it from the distribution.")


@st.cache_data(max_entries=32, show_spinner="Quantizing the layer…")
def layer_numbers(model: str, layer: str, fold_bn: bool, bits: int, scheme: str, method: str, percentile: float):
    """What the real-layer sections show, cached per choice (keyed by names, not tensors)."""
    engine = state.load_engine(model)
    weight, _ = engine.reference_weight(layer, fold_bn)
    steps = learn.layer_steps(weight, bits, scheme, method, engine.by_name[layer].axis, percentile)
    if learn.is_binary(steps.spec):
        return steps, None, None
    return steps, clipping.clip_sweep(weight, bits, scheme), clipping.method_ranges(weight, bits, scheme, percentile)


def toy_section() -> tuple[torch.Tensor, int]:
    left, right = st.columns([3, 1])
    text = left.text_input("Toy tensor w (comma-separated numbers)", value=learn.DEFAULT_TOY, key="learn_tensor")
    bits = right.slider("bits b", *learn.LEARN_BITS, value=8, key="learn_bits",
                        help="Fewer bits: fewer levels, a coarser step s, bigger errors.")
    try:
        st.session_state.learn_weight = learn.parse_tensor(text).tolist()
    except ValueError as error:
        st.error(plain(f"{error}. Still showing the last valid tensor; fix the text to update."))
    weight = torch.tensor(st.session_state.get("learn_weight") or learn.parse_tensor(learn.DEFAULT_TOY).tolist())
    toy = {scheme: learn.toy_steps(weight, bits, scheme) for scheme in SCHEMES}
    for column, (scheme, steps) in zip(st.columns(2), toy.items()):
        with column:
            st.subheader(scheme.capitalize())
            for title, tex in steps.latex():
                st.markdown(f"**{title}**")
                st.latex(tex)
            cells = learn.display_cells(steps.table, STEP_NUMBERS)
            st.dataframe(cells, column_config=_fit(cells, STEP_COLUMNS), hide_index=True)
            if steps.note:
                st.caption(steps.note)
    charts.show(learn_plots.number_line(list(toy.values())), key="learn_number_line")
    st.caption("Each float value (blue) moves to the nearest level of the grid (orange). Drag bits down to 2–4 "
               "to see the grid and the rounding; the green band is what the codes cover.")
    return weight, bits


def _range_text(lo: float, hi: float) -> str:
    """'±0.753' for a symmetric range, else '[-0.2, 0.75]': short enough for a metric tile."""
    return f"±{hi:.3g}" if abs(lo + hi) <= 1e-9 * max(abs(hi), 1e-30) else f"[{lo:.3g}, {hi:.3g}]"


def layer_sections() -> None:
    engine, plan = state.current_engine(), state.current_plan()
    infos = {info.name: info for info in engine.layers}
    if not infos:
        st.info("This model has no quantizable layers; pick another model in the sidebar.")
        return
    largest = max(infos, key=lambda n: infos[n].n_weights)  # a histogram worth looking at
    cols = st.columns([3, 2, 2, 2, 2])
    name = cols[0].selectbox("Layer", list(infos), key="learn_layer", index=list(infos).index(largest),
                             format_func=lambda n: f"{n} · {'×'.join(map(str, infos[n].shape))}",
                             help="Each layer with its weight shape (output channels first).")
    bits = cols[1].slider("bits", *learn.LEARN_BITS, value=4, key="learn_layer_bits",
                          help="4 bits by default: where the choice of clip range starts to matter.")
    scheme = cols[2].radio("scheme", SCHEMES, key="learn_layer_scheme",
                           index=SCHEMES.index(plan.default.quant.scheme))
    method = cols[3].selectbox("range method (per tensor)", RANGE_METHODS, key="learn_range_method",
                               index=RANGE_METHODS.index(plan.default.quant.range_method),
                               help=" · ".join(f"{m}: {h}" for m, h in RANGE_METHOD_HELP.items()))
    percentile = cols[4].number_input("percentile (|w| or both ends)", 90.0, 100.0, 99.9, 0.01, format="%.2f",
                                      key="learn_percentile", help="Used by the percentile range method.")
    folded = plan.fold_bn and infos[name].bn
    st.caption(f"{method}: {RANGE_METHOD_HELP[method]}. Weights "
               + ("with BatchNorm folded in, as the plan says." if folded else "as stored in the model."))
    numbers = state.attempt(lambda: layer_numbers(state.current_name(), name, plan.fold_bn, bits, scheme, method,
                                                  percentile), f"Could not quantize {name}",
                            "pick another layer or setting")
    if numbers is None:
        return
    layer, sweep, methods = numbers
    tensor_row = layer.summary.iloc[0]
    cols = st.columns([3, 2, 2, 2, 2])
    cols[0].metric("clip range [lo, hi]", _range_text(layer.lo, layer.hi),
                   help=f"[{layer.lo:.6g}, {layer.hi:.6g}]: weights outside saturate at its ends")
    cols[1].metric("scale s", f"{layer.scale:.4g}")
    cols[2].metric("zero-point z", layer.zero_point)
    cols[3].metric("MSE (per tensor)", f"{tensor_row['mse']:.3g}")
    cols[4].metric("SQNR (per tensor)", f"{tensor_row['sqnr_db']:.1f} dB")
    charts.show(learn_plots.layer_histogram(layer, name), key="learn_layer_histogram")
    st.caption(f"{layer.clipped_fraction:.2%} of the weights lie outside the clip range and saturate at its ends.")
    left, right = st.columns(2)
    left.markdown("**Per tensor against per channel** (same bits, scheme and range method)")
    left.dataframe(layer.summary, hide_index=True, column_config={
        "mse": st.column_config.NumberColumn("MSE", format="%.3g"),
        "sqnr_db": st.column_config.NumberColumn("SQNR (dB)", format="%.1f"),
        "max_abs_error": st.column_config.NumberColumn("max |error|", format="%.3g")})
    right.markdown(f"**Per channel**: one (s, z) per output channel (axis {infos[name].axis}); the first channels:")
    right.dataframe(layer.channels, hide_index=True,
                    column_config={c: st.column_config.NumberColumn(c, **NUM) for c in ("min", "max", "scale")})
    st.caption("Channels with a small range get a small step of their own instead of sharing the widest "
               "channel's step: that is why per-channel quantization usually has the lower error.")

    st.header("3. Clipping against rounding")
    if sweep is None:
        st.info("1-bit symmetric is binarization (s = mean|w|): there is no clip range to move. "
                "Pick 2 bits or more, or the asymmetric scheme.")
        return
    ratio = st.slider("clip ratio: the clip range as a fraction of the full min/max range", 0.05, 1.0, 1.0, 0.01,
                      key="learn_clip_ratio")
    current = clipping.clip_at(engine.reference_weight(name, plan.fold_bn)[0], bits, scheme, ratio)
    cols = st.columns(4)
    cols[0].metric("clip range", _range_text(current["lo"], current["hi"]),
                   help=f"[{current['lo']:.6g}, {current['hi']:.6g}]")
    cols[1].metric("clipped weights", f"{current['clipped_fraction']:.2%}")
    cols[2].metric("clipping / rounding MSE", f"{current['clip_mse']:.3g} / {current['round_mse']:.3g}")
    cols[3].metric("total MSE", f"{current['mse']:.3g}")
    charts.show(learn_plots.clip_chart(sweep, methods, current, ratio), key="learn_clip_chart")
    if sweep.attrs.get("n_evaluated", layer.n_weights) < layer.n_weights:
        st.caption(f"Errors measured on a fixed random sample of {sweep.attrs['n_evaluated']:,} of the "
                   f"{layer.n_weights:,} weights; the ranges come from all of them.")
    st.markdown(WHY_CLIP)
    st.dataframe(methods, hide_index=True, column_config=METHOD_COLUMNS)


def mistakes_section(weight: torch.Tensor, bits: int) -> None:
    st.markdown(f"Popular texts give these formulas; here they are on the toy tensor above at k = b = {bits}.")
    wrong, table = learn.wrong_range(weight, bits), learn.wrong_formula_table(weight, bits)
    lo, hi = learn.signed_range(bits)
    st.latex(rf"\min = \frac{{\min(w)}}{{2^{{k}}}} = \frac{{{wrong['min']:.4g}}}{{2^{{{bits}}}}} = "
             rf"{wrong['wrong_min']:.4g}, \quad \max = \frac{{{wrong['max']:.4g}}}{{2^{{{bits}}}}} = "
             rf"{wrong['wrong_max']:.4g}")
    st.markdown(f"**Wrong:** a quantization range must contain the weights; this one holds only {wrong['inside']} "
                f"of the {len(weight)}. Dividing by 2^k confuses the range with the step: the step is s = range / "
                f"(number of levels − 1), and the range stays [min(w, 0), max(w, 0)].")
    left, right = st.columns(2)
    left.latex(r"w_q = \operatorname{round}(w \times 2^{k}) \quad \text{vs} \quad "
               r"q = \operatorname{round}(w \cdot \tfrac{1}{s})")
    cells = learn.display_cells(table, MISTAKE_NUMBERS)
    left.dataframe(cells, hide_index=True, column_config=_fit(cells, MISTAKE_COLUMNS))
    charts.show(where=right, fig=learn_plots.mistakes_chart(table, bits), key="learn_mistakes_chart")
    example = learn.wrong_formula_table(torch.tensor([-10.0, -5.0, 10.0]), 8).iloc[1]  # DESIGN.md's example
    st.markdown(
        f"**Wrong:** multiplying by 2^k ignores the range, so codes grow with |w|: {int(table['overflow'].sum())} of "
        f"{len(table)} values here overflow the {bits}-bit range [{lo}, {hi}]. It is fixed-point with k fractional "
        f"bits, which only fits |w| < 2^(b−1) / 2^k = {(hi + 1) / 2 ** bits:g}. Divide by the step instead: "
        f"q = round(w · 1/s). A popular worked example maps w = −5 at k = 8 to −4096, which is wrong twice: "
        f"round(−5 × 256) = {int(example['wrong_q'])}, and either number overflows the 8-bit range [−128, 127]. "
        f"With w in [−10, 10] at 8 bits symmetric, s = 10/127 and the correct code is {int(example['q'])}, "
        f"which dequantizes to {example['w_hat']:.5g}.")


st.title("Learn: how quantization works")
st.caption("Every number here comes from the same functions the engine uses (`choose_qparams`, `quantize`, "
           "`dequantize`), bit-exact with PyTorch's torch.ao observers and fake-quant kernels.")
st.header("1. A toy tensor, step by step")
toy_weight, toy_bits = toy_section()
st.header("2. The same steps on a real layer")
layer_sections()
st.header("4. Common mistakes")
mistakes_section(toy_weight, toy_bits)
st.header("5. Uniform against floating-point grids")
learn_formats.grid_comparison_section()
