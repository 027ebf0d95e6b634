"""Explore's global controls (each keyed by the spec field it sets), Undo/Redo, and its live metrics.

Controls that do nothing in the current state (a scheme while bits is float, folding on a
model without BatchNorm) are disabled and say why. Metrics compare with the float baseline
(analysis/baseline.py): float is 0 % and 1.00x, zero deltas are neutral, sizes read in
KiB/MiB with the exact bytes in the tooltip.
"""

from __future__ import annotations

import math

import streamlit as st

from lightviz.analysis.baseline import Baseline, output_sqnr_db, prediction_spread
from lightviz.core.engine import Evaluation
from lightviz.core.specs import (
    FORMAT_BLOCKS,
    GRANULARITIES,
    PRUNE_METHOD_HELP,
    PRUNE_METHODS,
    RANGE_METHOD_HELP,
    RANGE_METHODS,
    SCHEMES,
    Plan,
)
from lightviz.io import pretrained
from lightviz.ui import history, lm, state
from lightviz.ui.format import bytes_text, human_bytes, percent, sentence_case
from lightviz.ui.text import plain

BITS_OPTIONS = list(range(1, 17)) + [state.FLOAT_BITS_LABEL]
FLOAT_BITS = 32
FLOAT_REASON = "No effect while Bits is float: nothing is quantized."

HELP = {
    "bits": "Bits per stored weight. 'float' keeps float32 weights (pruning still applies).",
    "scheme": "symmetric: codes ±(2^(b-1)-1), zero-point 0, zero is exact. "
              "asymmetric: codes 0..2^b-1 with a zero-point, the grid fits [min, max].",
    "granularity": "One scale (and zero-point) per tensor, per output channel, or per group of "
                   "consecutive weights within a channel.",
    "group_size": "Weights per group along each output channel's inputs (a whole number, at least 1); a last "
                  "short group gets its own scale.",
    "percentile": "Clip at this percentile of |w| (symmetric) or of w at both ends (asymmetric).",
    "sparsity": "Fraction of weights set to zero before quantization.",
    "global_prune": "One magnitude threshold over all layers (torch global_unstructured) instead of the "
                    "same sparsity in every layer. Unstructured pruning only.",
    "fold_bn": "Fold each BatchNorm into the conv before it, then compress, as deployed int8 models do. "
               "Folding is a re-parametrization, not compression: sizes compare with the float model folded "
               "the same way.",
}
NARROW_2BIT = ("Why can 1 bit beat 2 bits? Symmetric 2-bit is *narrow*: codes −1, 0, +1, three levels "
               "−s, 0, +s with s = max|w|, so every weight smaller than max|w|/2 rounds to 0. Symmetric 1-bit is "
               "binarization: two levels ±mean|w| (sign(0) = +1), which sit where most weights are. Asymmetric "
               "2-bit has four levels.")


def _change(source: str):
    return {"on_change": state.on_widget_change, "args": (source,)}


def global_controls() -> None:
    """The plan's default settings; every widget writes back through state.on_widget_change."""
    ss = st.session_state
    # Only values that differ from the plan are written (a plan set elsewhere: a link, Undo, a point
    # picked on Trade-offs): writing a key the user is still moving would reset it in the browser.
    state.write_widgets(state.current_plan())
    plan = state.current_plan()
    is_float = ss.bits == state.FLOAT_BITS_LABEL
    bits, scheme, granularity, group = st.columns([4, 2.2, 2.6, 1.4])
    fmt = state.current_plan().default.quant.format  # a non-integer format fixes bits and scheme (MX: groups too)
    fixed, blocked = fmt != "int", fmt in FORMAT_BLOCKS
    format_reason = f"Set by the number format {fmt} (Number format, below)."
    bits.select_slider("Bits", BITS_OPTIONS, key="bits", disabled=fixed,
                       help=format_reason if fixed else HELP["bits"], **_change("bits"))
    scheme.radio("Scheme", SCHEMES, key="scheme", horizontal=True, disabled=is_float or fixed,
                 help=FLOAT_REASON if is_float else format_reason if fixed else HELP["scheme"], **_change("scheme"))
    granularity.radio("Granularity", GRANULARITIES, key="granularity", horizontal=True, disabled=is_float or blocked,
                      help=FLOAT_REASON if is_float else format_reason if blocked else HELP["granularity"],
                      **_change("granularity"))
    if ss.granularity == "group":  # no min_value: a 0 typed here reaches the spec and is refused, visibly
        group.number_input("Group size", step=1, key="group_size", disabled=is_float or blocked,
                           help=FLOAT_REASON if is_float else format_reason if blocked else HELP["group_size"],
                           **_change("group_size"))

    range_col, pct_col, prune_col, sparsity_col, flags = st.columns([2.1, 1.1, 2.1, 2.3, 2.4])
    range_col.selectbox("Range method", RANGE_METHODS, key="range_method", disabled=is_float or blocked,
                        help=FLOAT_REASON if is_float else format_reason if blocked else None,
                        **_change("range_method"))
    range_col.caption(sentence_case(RANGE_METHOD_HELP[ss.range_method]))
    if ss.range_method == "percentile":
        pct_col.number_input("Percentile", min_value=50.0, max_value=100.0, step=0.01, format="%.2f",
                             key="percentile", disabled=is_float, help=FLOAT_REASON if is_float else HELP["percentile"],
                             **_change("percentile"))
    prune_col.selectbox("Pruning", PRUNE_METHODS, key="prune_method", **_change("prune_method"))
    prune_col.caption(sentence_case(PRUNE_METHOD_HELP[ss.prune_method]))
    sparsity_col.slider("Sparsity", min_value=0.0, max_value=1.0, step=0.05, format="%.2f", key="sparsity",
                        help=HELP["sparsity"], **_change("sparsity"))
    prune = plan.default.prune
    if prune.method == "n:m" and prune.sparsity > 0:
        achieved = 1 - prune.n / prune.m
        sparsity_col.caption(f"keeps {prune.n} of every {prune.m} weights ({prune.n}:{prune.m}): "
                             f"{achieved:.0%} sparsity" + ("" if math.isclose(achieved, prune.sparsity)
                                                           else f", the nearest n:m to {prune.sparsity:.2f}"))
    global_reason = ("Unstructured pruning only." if ss.prune_method != "unstructured" else
                     "No effect at sparsity 0: nothing is pruned." if not ss.sparsity else None)
    flags.toggle("Global pruning", key="global_prune", disabled=global_reason is not None,
                 help=global_reason or HELP["global_prune"], **_change("global_prune"))
    has_bn = any(layer.bn is not None for layer in state.current_engine().layers)
    flags.toggle("Fold BatchNorm", key="fold_bn", disabled=not has_bn,
                 help=HELP["fold_bn"] if has_bn else f"{plain(state.current_name())} has no BatchNorm: nothing to fold.",
                 **_change("fold_bn"))
    if ss.get("widget_error"):  # a refused value, said at the controls; the control shows the plan's value again
        st.error(ss.pop("widget_error"), icon=":material/block:")
    quant = plan.default.quant
    if quant.scheme == "symmetric" and quant.bits in (1, 2):
        st.caption(NARROW_2BIT)


def undo_redo() -> None:
    """Undo / Redo buttons for plan changes (Back in the browser goes to the previous plan too)."""
    undo, redo = history.available(state.current_name())
    left, right, note = st.columns([1, 1, 6], vertical_alignment="center")
    left.button("Undo", icon=":material/undo:", on_click=state.undo, disabled=not undo, key="undo",
                help=f"Back to the plan before the last change ({undo} step{'s' if undo != 1 else ''})")
    right.button("Redo", icon=":material/redo:", on_click=state.redo, disabled=not redo, key="redo",
                 help=f"Forward again ({redo} step{'s' if redo != 1 else ''})")
    note.caption("Quick changes of one control are one step. The browser's Back button also returns to the "
                 "previous plan, and the URL always shares the current one.")


def _delta(value: float, text: str, inverse: bool = False) -> dict:
    """st.metric delta arguments: neutral grey without an arrow when the change is zero."""
    if value == 0:
        return {"delta": text, "delta_color": "off", "delta_arrow": "off"}
    return {"delta": text, "delta_color": "inverse" if inverse else "normal"}


def metrics_row(evaluation: Evaluation, base: Baseline, plan: Plan) -> None:
    """The plan's numbers against the float baseline: accuracy (or, without labels, KL and
    output SQNR first), agreement, size and bits per weight; a language model's perplexity,
    next-token agreement, size and bits per quantized weight (ui/lm.py)."""
    if evaluation.task == "causal_lm":
        lm.metrics_row(evaluation)
        return
    ev, data, reference = evaluation, state.current_data(), state.reference_name()
    original = f"the original float model {reference}" if reference else "the float model"
    ref_logits, test_logits = state.reference_logits(), state.current_engine().logits(plan, data)
    sqnr, spread = output_sqnr_db(ref_logits, test_logits), prediction_spread(ref_logits)
    tiles = st.columns(5)
    kl = {"label": "KL divergence", "value": "≈ 0" if ev.kl < 1e-9 else f"{ev.kl:.3g}",
          "help": f"mean KL(p_float ‖ p_compressed) over {ev.n_samples} inputs, in nats; 0 when the outputs match "
                  f"{original}'s (below 1e-9: float rounding only, shown as ≈ 0)"}
    out = {"label": "Output SQNR", "value": "exact (∞)" if math.isinf(sqnr) else f"{sqnr:.1f} dB",
           "help": f"10·log10(Σ z_float² / Σ (z_float − z_compressed)²) over the logits of {ev.n_samples} inputs: "
                   f"how far compression moves the outputs of {original}; higher is closer"}
    if ev.accuracy is not None:
        correct = round(ev.accuracy * ev.n_samples)
        change = round((ev.accuracy - ev.float_accuracy) * 100, 2)
        tiles[0].metric("Accuracy", percent(ev.accuracy), **_delta(change, f"{change:+.2f} pp vs float"),
                        help=f"top-1 on {ev.n_samples} test samples ({correct} correct); {original}: "
                             f"{percent(ev.float_accuracy)}. pp: percentage points")
        tiles[2].metric(**kl)
    else:
        tiles[0].metric(**kl)
        tiles[2].metric(**out)
    agreement_change = round((ev.agreement - 1) * 100, 2)
    tiles[1].metric("Agreement vs original" if reference else "Agreement with float", percent(ev.agreement),
                    **_delta(agreement_change, f"{agreement_change:+.2f} pp"),
                    help=f"inputs whose top-1 class matches {original}'s, of {ev.n_samples}"
                         + ("; the float model predicts one class for nearly all of them, so this says little"
                            if spread.degenerate else ""))
    ratio, change = base.ratio(ev.size_bytes), round((ev.size_bytes / base.size_bytes - 1) * 100, 1)
    tiles[3].metric("Size", human_bytes(ev.size_bytes),
                    **_delta(change, f"{change:+.1f}% · {ratio:.2f}×" if change else "float baseline · 1.00×",
                             inverse=True),
                    help=f"{bytes_text(ev.size_bytes)}, {ratio:.2f}× smaller than the float baseline: what a packed file holds (codes, scales, zero-points, sparse "
                         f"indices, float biases and other tensors). Float baseline {human_bytes(base.size_bytes)} "
                         f"({bytes_text(base.size_bytes)})" + (", BatchNorm folded as this plan deploys it; stored "
                                                               f"unfolded {bytes_text(base.stored_bytes)}"
                                                               if base.folded else ""))
    bits_change = round(ev.avg_bits_per_weight - FLOAT_BITS, 2)
    tiles[4].metric("Bits per weight", f"{ev.avg_bits_per_weight:.2f}",
                    **_delta(bits_change, f"{bits_change:+.2f}", inverse=True),
                    help="storage bits of the compressible weights (values, scales, zero-points, indices) per weight; "
                         "float32 is 32")
    _notes(ev, base, reference, spread)


def _notes(ev: Evaluation, base: Baseline, reference: str | None, spread) -> None:
    """One line each on what the numbers above are measured against, where it is not obvious."""
    bundle = state.current_bundle()
    if bundle.kind == "torchvision" and not pretrained.is_pretrained_name(bundle.name):
        names = dict(enumerate(bundle.class_names))
        st.info(f"{bundle.name} has **random weights** (nothing was downloaded): its float model predicts "
                f"{spread.distinct} distinct class{'es' if spread.distinct != 1 else ''} over {spread.n} inputs, "
                f"'{names.get(spread.top_class, spread.top_class)}' for {spread.top_count} of them. Accuracy means "
                "nothing here and agreement little; **KL** and **output SQNR** measure what compression does to its "
                "outputs. Pretrained weights: see the sidebar.", icon=":material/casino:")
    elif ev.accuracy is None:
        st.caption("No labels for these inputs: KL and output SQNR against the float model are the headline; "
                   "agreement counts matching top-1 classes.")
    if reference:
        st.caption(f"Measured against the original float model {reference} ({percent(ev.float_accuracy)}): the "
                   "fine-tuned weights are a compressed model of it, not a new float model.")
    if base.folded:
        st.caption(f"Folding {base.folded} BatchNorm layer{'s' if base.folded != 1 else ''} into the conv before "
                   f"{'them' if base.folded != 1 else 'it'} changes the float model's size by "
                   f"{base.fold_change:+.1%} ({human_bytes(base.stored_bytes)} → {human_bytes(base.size_bytes)}): a "
                   "re-parametrization, not compression. Sizes and ratios above compare with the folded float model.")
