"""Explore's sections: the per-layer table, per-layer charts, the weight histogram, what changed."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from lightviz.analysis import editing
from lightviz.analysis import explore as analysis
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import GRANULARITIES, NUMBER_FORMATS, SCHEMES, Plan
from lightviz.plots import explore as plots
from lightviz.ui import method_controls, state
from lightviz.ui.format import bytes_text

MAX_THUMBNAILS = 32
READ_ONLY = ["layer", "type", "shape", "params", "override", "storage", "method_note"]
STORAGE_HELP = ("How the layer is stored, the cheapest that applies: dense, bitmask (1 bit per weight + kept "
                "values), n:m (kept values + log2(m)-bit indices), filters removed (nothing stored for them).")


def layer_editor(engine: Engine) -> Plan:
    """The per-layer table: an edit overrides the global default for that layer only.

    Returns the plan that is current once the table's edits are absorbed.
    """
    names = [layer.name for layer in engine.layers]
    plan = state.current_plan()
    frame = editing.layer_editor_frame(engine, plan, state.current_layer_table(plan))
    generation = st.session_state.editor_generation
    # A new index gives the table a new identity after its edits were absorbed (state.py).
    frame.index = pd.RangeIndex(generation * len(frame), (generation + 1) * len(frame))
    st.data_editor(
        frame, key=state.LAYER_EDITOR_KEY, hide_index=True, disabled=READ_ONLY, width="stretch",
        on_change=state.absorb_layer_edits, args=(names,),
        column_config={
            "layer": st.column_config.TextColumn("layer", pinned=True),
            "type": st.column_config.TextColumn("type · role"),
            "params": st.column_config.NumberColumn("weights", format="localized"),
            "bits": st.column_config.SelectboxColumn("bits", options=editing.BITS_CHOICES, required=True,
                                                     help="bits per weight, or float"),
            "scheme": st.column_config.SelectboxColumn("scheme", options=list(SCHEMES), required=True),
            "granularity": st.column_config.SelectboxColumn("granularity", options=list(GRANULARITIES),
                                                            required=True),
            "sparsity": st.column_config.NumberColumn("sparsity", min_value=0.0, max_value=1.0, step=0.05,
                                                      format="%.2f", help="fraction of weights zeroed, 0 to 1"),
            "keep_float": st.column_config.CheckboxColumn("keep float", help="neither quantize nor prune"),
            "override": st.column_config.CheckboxColumn("overridden"),
            "storage": st.column_config.TextColumn("storage", help=STORAGE_HELP),
            "number_format": st.column_config.SelectboxColumn("format", options=list(NUMBER_FORMATS), required=True,
                                                              help="number format (fp8, MX, NVFP4, NF4 set bits)"),
            "method": st.column_config.SelectboxColumn(
                "method", options=sorted(set(method_controls.method_choices(plan.default.method.name))
                                         | set(frame["method"])), required=True,
                help="PTQ method of this layer"),
            "method_note": st.column_config.TextColumn("method note", width="large",
                                                       help="what the method did here, or why a step does not apply"),
        })
    state.absorb_layer_edits(names)
    plan = state.current_plan()
    overrides = plan.overrides
    button, note = st.columns([1, 5], vertical_alignment="center")
    button.button("Reset overrides", on_click=state.reset_overrides, disabled=not overrides)
    note.caption(f"{len(overrides)} layer override{'s' if len(overrides) != 1 else ''}: "
                 f"{', '.join(name for name, _ in overrides)}" if overrides else
                 "Edit bits, scheme, granularity, sparsity, keep float, format or method to override the global "
                 "settings for one layer.")
    return plan


def _on_chart_select(key: str) -> None:
    points = (st.session_state.get(key) or {}).get("selection", {}).get("points", [])
    if points:
        point = points[0]
        state.select_layer(point.get("customdata") or point.get("x"))


def selected_layer(names: list[str]) -> str:
    selected = st.session_state.selected_layer
    return selected if selected in names else names[0]


def layer_charts(table: pd.DataFrame) -> None:
    """SQNR and storage per layer, side by side; clicking a bar selects that layer."""
    selected = selected_layer(table["name"].tolist())
    left, right = st.columns(2)
    with left:
        st.plotly_chart(plots.layer_sqnr_figure(table, selected), key="sqnr_chart", selection_mode="points",
                        on_select=partial(_on_chart_select, "sqnr_chart"))
    with right:
        st.plotly_chart(plots.layer_size_figure(table, selected), key="size_chart", selection_mode="points",
                        on_select=partial(_on_chart_select, "size_chart"))


def _clamp(key: str, upper: int) -> None:
    if not 0 <= st.session_state.get(key, 0) <= upper:
        st.session_state[key] = 0


def histogram_section(engine: Engine, plan: Plan, table: pd.DataFrame) -> None:
    """Float and compressed weights of the selected layer (or one of its channels / groups)."""
    names = table["name"].tolist()
    st.session_state.hist_layer = selected_layer(names)
    pick, scope, channel_col, group_col = st.columns([2.5, 2, 1.2, 1.2])
    name = pick.selectbox("Layer", names, key="hist_layer",
                          on_change=lambda: state.select_layer(st.session_state.hist_layer))
    result = engine.compress_layer(plan, name, state.current_data())
    channels, groups, _ = analysis.block_grid(result)
    channel = group = None
    if scope.radio("Show", ["whole layer", "one channel"], key="hist_scope", horizontal=True) == "one channel":
        _clamp("hist_channel", channels - 1)
        channel = int(channel_col.number_input(f"Channel (0–{channels - 1})", 0, channels - 1, key="hist_channel"))
        if groups > 1:
            _clamp("hist_group", groups - 1)
            group = int(group_col.number_input(f"Group (0–{groups - 1})", 0, groups - 1, key="hist_group"))
    hist = analysis.weight_histogram(result, channel, group)
    label = result.quant.label + (f", {result.prune.label}" if result.prune.active else "")
    chart, details = st.columns([3, 1])
    chart.plotly_chart(plots.weight_histogram_figure(hist, name, label), key="histogram")
    notes = [hist.note] if hist.note else []
    if hist.saturated:
        notes.append(f"{hist.saturated:,} weights lie outside the clip range and saturate")
    if hist.pruned:
        notes.append(f"{hist.pruned:,} of {hist.n_weights:,} weights pruned to exactly 0 (red bar)")
    chart.caption(". ".join(notes) + ("." if notes else ""))
    row = table.set_index("name").loc[name]
    details.markdown(
        f"| **{name}** | {row['type']} {row['shape'].replace('x', '×')} |\n|---|---|\n"
        f"| setting | {label} |\n| storage | {row['format']} |\n"
        f"| size | {bytes_text(row['size_bytes'])} (float {bytes_text(row['float_size_bytes'])}) |\n"
        f"| bits / weight | {row['bits_per_weight']:.2f} |\n| SQNR | {_db(row['sqnr_db'])} |\n"
        f"| MSE | {row['mse']:.3g} |\n| max abs error | {row['max_abs_error']:.3g} |\n"
        f"| cosine | {row['cosine']:.6f} |\n| zeros | {row['achieved_sparsity']:.1%} |\n"
        f"| BN folded | {'yes' if row['bn_folded'] else 'no'} |")


def _db(value: float) -> str:
    return "exact (∞)" if value == float("inf") else f"{value:.2f} dB"


def flips_section(engine: Engine, plan: Plan, data: EvalData, class_names: tuple[str, ...]) -> None:
    """The evaluation inputs whose top-1 class changed, as thumbnails (1-channel images) or a table."""
    flips = analysis.flipped_samples(engine.logits(None, data), engine.logits(plan, data), data.y)
    if flips.empty:
        st.success(f"No prediction changed: the compressed model picks the same class as the float model "
                   f"on all {len(data)} inputs.")
        return
    counts = flips["change"].value_counts()
    parts = [f"{counts.get('broke', 0)} broke (float right, compressed wrong)",
             f"{counts.get('fixed', 0)} fixed (float wrong, compressed right)",
             f"{counts.get('changed', 0)} changed between wrong answers"] if data.labeled else []
    st.markdown(f"**{len(flips)} of {len(data)}** predictions changed" + (": " + ", ".join(parts) if parts else "."))
    name = dict(enumerate(class_names)).get
    if data.x.dim() == 4 and data.x.shape[1] == 1:
        shown = flips.head(MAX_THUMBNAILS)
        images = data.x[shown["index"].tolist(), 0].numpy()
        captions = [(f"true {name(t)}<br>" if t is not None else "") + f"float {name(f)} → {name(c)}"
                    for t, f, c in zip(shown["true"], shown["float_pred"], shown["compressed_pred"])]
        st.caption("Under each input: " + ("its true class, then " if data.labeled else "")
                   + "the float model's prediction → the compressed model's.")
        st.plotly_chart(plots.flips_figure(images, captions), key="flips_chart")
        if len(flips) > len(shown):
            st.caption(f"Showing the first {len(shown)} of {len(flips)}" + (" (broken ones first)." if data.labeled
                                                                            else "."))
    table = flips.assign(**{column: flips[column].map(name) for column in ("true", "float_pred", "compressed_pred")})
    with st.expander("All changed predictions as a table", expanded=not (data.x.dim() == 4 and data.x.shape[1] == 1)):
        st.dataframe(table.rename(columns={"index": "sample", "float_pred": "float model",
                                           "compressed_pred": "compressed"}), hide_index=True, width="stretch")
