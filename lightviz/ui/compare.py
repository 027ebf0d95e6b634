"""Compare page's sections: plan A (pinned) against plan B (the current plan), and A on Trade-offs.

Pinning stores (model, plan) in the session (`state.set_pinned`) and the link shares it as
`?a=<token>` next to `plan=` (plan B): the pair survives a shared link. Every number comes from
`lightviz.analysis.compare`: the deltas are `evaluate(B) - evaluate(A)`.
"""

from __future__ import annotations

import math

import streamlit as st

from lightviz.analysis import sweep
from lightviz.analysis.compare import PlanComparison, compare_plans, overlaid_histogram
from lightviz.analysis.sweep import plan_label
from lightviz.core.task import LM
from lightviz.plots import compare as plots
from lightviz.plots import tradeoffs as tradeoff_plots
from lightviz.ui import charts, state
from lightviz.ui.format import bytes_text, percent

LAYER_KEY = "ab_layer"


# --- pinning (sidebar) ------------------------------------------------------------------------


def pin_controls() -> None:
    """In the sidebar: pin the current plan as A, or what is pinned with unpin and a link to Compare."""
    pinned = state.pinned_plan()
    if pinned is None:
        st.button("Pin this plan as A", key="ab_pin", icon=":material/push_pin:", on_click=pin_current,
                  help="Keep the current plan as A, then change settings: the Compare page shows A and the "
                       "new plan (B) side by side, and the link shares both.")
        return
    same = pinned == state.current_plan()
    st.caption(f"**A**: {plan_label(pinned)}" + (" (the same as the current plan: change a setting to get B)"
                                                  if same else f"  \n**B**: {plan_label(state.current_plan())}"))
    left, right = st.columns(2)
    left.page_link("pages/compare.py", label="Compare", icon=":material/compare_arrows:")
    right.button("Unpin A", key="ab_unpin", on_click=state.set_pinned, args=(None,))


def pin_current() -> None:
    state.set_pinned(state.current_plan())


def _swap() -> None:
    a, b = state.pinned_plan(), state.current_plan()
    state.set_pinned(b)
    state.set_plan(a)


# --- the Compare page --------------------------------------------------------------------------


def comparison() -> PlanComparison | None:
    """Plan A against the current plan on the current data, or None (after saying what to do)."""
    pinned = state.pinned_plan()
    if pinned is None:
        st.info("Nothing is pinned yet. Press **Pin this plan as A** (sidebar, under Share) to keep the current "
                "plan as A, then change settings on Explore: the new plan is B, and this page shows both.")
        st.button("Pin the current plan as A", key="ab_pin_page", on_click=pin_current, type="primary")
        return None
    return state.attempt(lambda: compare_plans(state.current_engine(), state.current_data(), pinned,
                                               state.current_plan()),
                         "The two plans could not be compared", "unpin A, or pick another plan")


def header(c: PlanComparison) -> None:
    a, b = plan_label(c.a), plan_label(c.b)
    st.markdown(f"**A** (pinned): {a}  \n**B** (current): {b}")
    if c.a == c.b:
        st.info("A and B are the same plan: change a setting on Explore to get B.")
    swap, make, unpin, _ = st.columns([1, 1.3, 1, 3])
    swap.button("Swap A and B", key="ab_swap", on_click=_swap, icon=":material/swap_horiz:")
    make.button("Make A the current plan", key="ab_make_current", on_click=state.set_plan, args=(c.a,))
    unpin.button("Unpin A", key="ab_unpin_page", on_click=state.set_pinned, args=(None,))


def headline(c: PlanComparison) -> None:
    """B's numbers, each with its change from A (B - A); A's value in the caption under it."""
    a, b, d = c.eval_a, c.eval_b, c.deltas
    cols = st.columns(5)
    if b.task == "causal_lm":  # perplexity: lower is better
        cols[0].metric("Perplexity", LM.format(b.perplexity), delta=f"{d['perplexity']:+.4g} vs A",
                       delta_color="inverse", help=f"A: {LM.format(a.perplexity)}; float {LM.format(b.float_perplexity)}")
        cols[0].caption(f"A: {LM.format(a.perplexity)}")
    elif b.accuracy is not None:
        cols[0].metric("Accuracy", percent(b.accuracy), delta=f"{d['accuracy'] * 100:+.2f} pp vs A",
                       help=f"A: {percent(a.accuracy)}; float {percent(b.float_accuracy)}")
        cols[0].caption(f"A: {percent(a.accuracy)}")
    else:
        cols[0].metric("Accuracy", "n/a", help="no labels: compare agreement and KL")
    cols[1].metric("Agreement with float", percent(b.agreement), delta=f"{d['agreement'] * 100:+.2f} pp vs A")
    cols[1].caption(f"A: {percent(a.agreement)}")
    cols[2].metric("Size", bytes_text(b.size_bytes), delta=f"{d['size_bytes']:+,} B vs A", delta_color="inverse")
    cols[2].caption(f"A: {bytes_text(a.size_bytes)}")
    cols[3].metric("Compression", f"{b.compression_ratio:.2f}×", delta=f"{d['compression_ratio']:+.2f}× vs A")
    cols[3].caption(f"A: {a.compression_ratio:.2f}×")
    cols[4].metric("Bits per weight", f"{b.avg_bits_per_weight:.2f}", delta=f"{d['avg_bits_per_weight']:+.2f} vs A",
                   delta_color="inverse")
    cols[4].caption(f"A: {a.avg_bits_per_weight:.2f}")


def layers(c: PlanComparison) -> None:
    """The per-layer table (changed layers highlighted) and the SQNR and size charts."""
    table = c.layers.assign(sqnr_db_a=c.layers["sqnr_db_a"].map(_db), sqnr_db_b=c.layers["sqnr_db_b"].map(_db),
                            sqnr_delta=c.layers["sqnr_delta"].map(lambda v: "" if math.isnan(v) else f"{v:+.2f}"))
    shown = table[["name", "setting_a", "setting_b", "sqnr_db_a", "sqnr_db_b", "sqnr_delta", "size_bytes_a",
                   "size_bytes_b", "size_delta"]].rename(columns={
        "name": "layer", "setting_a": "A", "setting_b": "B", "sqnr_db_a": "SQNR A (dB)", "sqnr_db_b": "SQNR B (dB)",
        "sqnr_delta": "Δ dB", "size_bytes_a": "size A (B)", "size_bytes_b": "size B (B)", "size_delta": "Δ bytes"})
    changed = c.layers["differs"].tolist()
    highlight = ["background-color: rgba(238, 202, 59, 0.25)" if flag else "" for flag in changed]
    styled = shown.style.apply(lambda row: [highlight[row.name]] * len(row), axis=1).format(
        {"Δ bytes": "{:+,}", "size A (B)": "{:,}", "size B (B)": "{:,}"})
    st.dataframe(styled, hide_index=True, width="stretch")
    n = sum(changed)
    st.caption(f"{n} of {len(changed)} layers are set differently in A and B (highlighted)." if n else
               "Every layer has the same setting in A and B.")
    left, right = st.columns(2)
    charts.show(plots.ab_layers_figure(c.layers, "sqnr"), left, key="ab_sqnr_chart")
    charts.show(plots.ab_layers_figure(c.layers, "size"), right, key="ab_size_chart")


def histogram(c: PlanComparison) -> None:
    """One layer's float weights with A's and B's overlaid; the first changed layer by default."""
    names = c.layers["name"].tolist()
    if st.session_state.get(LAYER_KEY) not in names:
        changed = c.changed_layers
        st.session_state[LAYER_KEY] = changed[0] if changed else names[0]
    name = st.selectbox("Layer", names, key=LAYER_KEY)
    engine = state.current_engine()
    hist = overlaid_histogram(engine.compress_layer(c.a, name), engine.compress_layer(c.b, name))
    row = c.layers.set_index("name").loc[name]
    charts.show(plots.ab_histogram_figure(hist, name, f"A {row['setting_a']}", f"B {row['setting_b']}"),
                key="ab_histogram")


def tradeoffs(c: PlanComparison) -> None:
    """A and B (the current plan's star) on accuracy against size, with the sweep and history."""
    data, engine = state.current_data(), state.current_engine()
    y = sweep.chart_column(data)
    found = st.session_state.get("sweeps", {}).get(state.current_name())
    results = found["results"] if found and found["data"] == data.description else None
    float_y = c.eval_b.chart_value(y, floating=True)
    fig = tradeoff_plots.tradeoff_figure(
        results, y, sweep.pareto_front(results, y=y) if results is not None and len(results) else None,
        (engine.float_size_bytes, float_y), (c.eval_b.size_bytes, c.eval_b.chart_value(y), f"B: {plan_label(c.b)}"), None)
    fig = plots.add_ab_points(fig, (c.eval_a.size_bytes, c.eval_a.chart_value(y), plan_label(c.a)), None, y)
    fig.update_layout(title_text="A (square) and B (star) against size")
    charts.show(fig, key="ab_tradeoff_chart")


def add_to_tradeoffs(fig, y: str):
    """Draw plan A on the Trade-offs chart when one is pinned for this model."""
    pinned = state.pinned_plan()
    if pinned is None:
        return fig
    ev = state.current_evaluation(pinned)
    return plots.add_ab_points(fig, (ev.size_bytes, ev.chart_value(y), plan_label(pinned)), None, y)


def _db(value: float) -> str:
    return "exact" if math.isinf(value) and value > 0 else f"{value:.2f}"
