"""Explore's global controls (each keyed by the spec field it sets) and its live metrics."""

from __future__ import annotations

import streamlit as st

from lightviz.core.engine import Evaluation
from lightviz.core.specs import (
    FORMAT_BLOCKS,
    GRANULARITIES,
    PRUNE_METHOD_HELP,
    PRUNE_METHODS,
    RANGE_METHOD_HELP,
    RANGE_METHODS,
    SCHEMES,
)
from lightviz.ui import state
from lightviz.ui.format import bytes_text, percent

BITS_OPTIONS = list(range(1, 17)) + [state.FLOAT_BITS_LABEL]
FLOAT_BITS = 32

HELP = {
    "bits": "Bits per stored weight. 'float' keeps float32 weights (pruning still applies).",
    "scheme": "symmetric: codes ±(2^(b-1)-1), zero-point 0, zero is exact. "
              "asymmetric: codes 0..2^b-1 with a zero-point, the grid fits [min, max].",
    "granularity": "One scale (and zero-point) per tensor, per output channel, or per group of "
                   "consecutive weights within a channel.",
    "group_size": "Weights per group along each output channel's inputs; a last short group gets its own scale.",
    "percentile": "Clip at this percentile of |w| (symmetric) or of w at both ends (asymmetric).",
    "sparsity": "Fraction of weights set to zero before quantization.",
    "global_prune": "One magnitude threshold over all layers (torch global_unstructured) instead of the "
                    "same sparsity in every layer. Unstructured pruning only.",
    "fold_bn": "Fold each BatchNorm into the conv before it, then compress, as deployed int8 models do.",
}


def global_controls() -> None:
    """The plan's default settings; every widget writes back through state.on_widget_change."""
    ss = st.session_state
    # Written in the run that renders them: values written on another page (a point picked on
    # Trade-offs, a shared link opened there) would otherwise not reach the browser's widgets.
    state.write_widgets(state.current_plan())
    bits, scheme, granularity, group = st.columns([4, 2.2, 2.6, 1.4])
    fmt = state.current_plan().default.quant.format  # a non-integer format fixes bits and scheme (MX: groups too)
    bits.select_slider("Bits", BITS_OPTIONS, key="bits", on_change=state.on_widget_change, help=HELP["bits"],
                       disabled=fmt != "int")
    scheme.radio("Scheme", SCHEMES, key="scheme", horizontal=True, on_change=state.on_widget_change, help=HELP["scheme"],
                 disabled=fmt != "int")
    granularity.radio("Granularity", GRANULARITIES, key="granularity", horizontal=True, on_change=state.on_widget_change,
                      help=HELP["granularity"], disabled=fmt in FORMAT_BLOCKS)
    if ss.granularity == "group":
        group.number_input("Group size", min_value=1, step=1, key="group_size", on_change=state.on_widget_change,
                           help=HELP["group_size"], disabled=fmt in FORMAT_BLOCKS)

    range_col, pct_col, prune_col, sparsity_col, flags = st.columns([2.2, 1.2, 2.2, 2.4, 2.0])
    range_col.selectbox("Range method", RANGE_METHODS, key="range_method", on_change=state.on_widget_change,
                        disabled=fmt in FORMAT_BLOCKS)
    range_col.caption(RANGE_METHOD_HELP[ss.range_method])
    if ss.range_method == "percentile":
        pct_col.number_input("Percentile", min_value=50.0, max_value=100.0, step=0.01, format="%.2f",
                             key="percentile", on_change=state.on_widget_change, help=HELP["percentile"])
    prune_col.selectbox("Pruning", PRUNE_METHODS, key="prune_method", on_change=state.on_widget_change)
    prune_col.caption(PRUNE_METHOD_HELP[ss.prune_method])
    sparsity_col.slider("Sparsity", min_value=0.0, max_value=1.0, step=0.05, format="%.2f", key="sparsity",
                        on_change=state.on_widget_change, help=HELP["sparsity"])
    plan = state.current_plan()
    if plan.default.prune.method == "n:m" and plan.default.prune.active:
        sparsity_col.caption(f"keeps {plan.default.prune.n} of every {plan.default.prune.m} weights "
                             f"({plan.default.prune.n}:{plan.default.prune.m})")
    flags.toggle("Global pruning", key="global_prune", on_change=state.on_widget_change, help=HELP["global_prune"],
                 disabled=ss.prune_method != "unstructured")
    flags.toggle("Fold BatchNorm", key="fold_bn", on_change=state.on_widget_change, help=HELP["fold_bn"])


def metrics_row(evaluation: Evaluation) -> None:
    """Accuracy, agreement, size and bits per weight of the current plan, with deltas against float."""
    ev = evaluation
    accuracy, agreement, size, bits = st.columns(4)
    if ev.accuracy is not None:
        correct = round(ev.accuracy * ev.n_samples)
        accuracy.metric("Accuracy", percent(ev.accuracy), delta=f"{(ev.accuracy - ev.float_accuracy) * 100:+.2f} pp",
                        help=f"top-1 on {ev.n_samples} test samples ({correct} correct); "
                             f"float model {percent(ev.float_accuracy)}")
    else:
        accuracy.metric("Accuracy", "n/a", help="these inputs have no labels: only fidelity to the float model "
                                                "(agreement, KL) is measurable")
    agreement.metric("Agreement with float", percent(ev.agreement), delta=f"{(ev.agreement - 1) * 100:+.2f} pp",
                     help=f"inputs whose top-1 class matches the float model's, of {ev.n_samples}; "
                          f"mean KL(p_float || p_compressed) = {ev.kl:.4g} nats")
    change = ev.size_bytes / ev.float_size_bytes - 1
    size.metric("Size", bytes_text(ev.size_bytes), delta=f"{change * 100:+.1f}% · {ev.compression_ratio:.2f}× compression",
                delta_color="inverse",
                help=f"what a packed file holds (codes, scales, zero-points, sparse indices, float biases and "
                     f"other tensors); float model {bytes_text(ev.float_size_bytes)}")
    bits.metric("Bits per weight", f"{ev.avg_bits_per_weight:.2f}", delta=f"{ev.avg_bits_per_weight - FLOAT_BITS:+.2f}",
                delta_color="inverse",
                help="storage bits of the compressible weights (values, scales, zero-points, indices) per weight; "
                     "float32 is 32")
