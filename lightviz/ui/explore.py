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
from lightviz.core.task import LM_FLOAT_ROLES
from lightviz.plots import explore as plots
from lightviz.plots.style import plain as plotly_plain
from lightviz.ui import charts, method_controls, state
from lightviz.ui.format import bytes_text, human_bytes
from lightviz.ui.text import plain

MAX_THUMBNAILS = 32
READ_ONLY = ["layer", "type", "shape", "params", "override", "pinned", "storage", "method_note"]
SHOWN = ["layer", "type", "shape", "bits", "scheme", "granularity", "sparsity", "keep_float", "pinned", "storage"]
ADVANCED = ["number_format", "method", "method_note"]  # shown when the plan uses them, or on request
STORAGE_HELP = ("How the layer is stored, the cheapest that applies: dense, bitmask (1 bit per weight + kept "
                "values), n:m (kept values + log2(m)-bit indices), filters removed (nothing stored for them).")


def layer_editor(engine: Engine) -> pd.DataFrame:
    """The per-layer table: an edit overrides that one field of that layer only.

    Returns the engine's layer table of the current plan (for the charts below it).
    """
    names = [layer.name for layer in engine.layers]
    plan = state.current_plan()
    table = state.current_layer_table(plan)
    frame = editing.layer_editor_frame(engine, plan, table)
    generation = st.session_state.editor_generation
    # A new index gives the table a new identity after its edits were absorbed (state.py).
    frame.index = pd.RangeIndex(generation * len(frame), (generation + 1) * len(frame))
    used = plan.uses_methods or plan.uses_formats
    advanced = used or not state.current_task().is_lm and st.toggle(
        "Format and method columns", key="editor_advanced",
        help="Per-layer number formats and PTQ methods (always shown while the plan uses them).")
    st.data_editor(
        frame, key=state.LAYER_EDITOR_KEY, hide_index=True, disabled=READ_ONLY, width="stretch",
        on_change=state.absorb_layer_edits, args=(names,), column_order=SHOWN + (ADVANCED if advanced else []),
        column_config={  # compact: the table fits a 1280-pixel screen beside the sidebar without scrolling
            "layer": st.column_config.TextColumn("layer", pinned=True),
            "type": st.column_config.TextColumn("role", help="conv, depthwise / pointwise / grouped conv, linear, "
                                                             "..."),
            "shape": st.column_config.TextColumn("shape", help="weight shape (output channels first)"),
            "bits": st.column_config.SelectboxColumn("bits", options=editing.BITS_CHOICES, required=True,
                                                     help="bits per weight, or float"),
            "scheme": st.column_config.SelectboxColumn("scheme", options=list(SCHEMES), required=True,
                                                       format_func=lambda s: {"symmetric": "sym"}.get(s, "asym"),
                                                       help="sym: symmetric (zero-point 0), asym: asymmetric"),
            "granularity": st.column_config.SelectboxColumn("per", options=list(GRANULARITIES), required=True,
                                                            help="granularity: one scale per tensor, per output "
                                                                 "channel or per group of weights"),
            "sparsity": st.column_config.NumberColumn("sparsity", min_value=0.0, max_value=1.0, step=0.05,
                                                      format="%.2f",
                                                      help="fraction of weights zeroed, 0 to 1 (n:m: as achieved)"),
            "keep_float": st.column_config.CheckboxColumn("float", help="keep this layer float: neither quantize "
                                                                        "nor prune"),
            "pinned": st.column_config.TextColumn("pinned", help="the fields this layer overrides; every other "
                                                                 "field follows the global settings"),
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
    if state.current_plan() != plan:  # edits seeded without a callback (AppTest)
        plan, table = state.current_plan(), state.current_layer_table()
    overrides = plan.overrides
    button, note = st.columns([1, 5], vertical_alignment="center")
    button.button("Reset overrides", on_click=state.reset_overrides, disabled=not overrides)
    note.caption(plain("; ".join(f"{name}: {', '.join(path.split('.')[-1] for path in plan.pins_for(name))}"
                                 for name, _ in overrides)) + " — overridden; every other field follows the global "
                 "settings." if overrides else
                 "Edit bits, scheme, granularity, sparsity, float, format or method to override that one field of "
                 "one layer; its other fields keep following the global settings.")
    return table


def _on_chart_select(key: str) -> None:
    points = (st.session_state.get(key) or {}).get("selection", {}).get("points", [])
    if points:
        point = points[0]
        state.select_layer(point.get("customdata") or point.get("x"))


def selected_layer(names: list[str], roles: list[str] | None = None) -> str:
    """The layer the charts highlight: the user's pick, else the first one (past a language model's
    embeddings, which usually stay float)."""
    selected = st.session_state.selected_layer
    if selected in names:
        return selected
    return next((n for n, r in zip(names, roles or []) if r not in LM_FLOAT_ROLES), names[0])


def layer_charts(table: pd.DataFrame) -> None:
    """SQNR and storage per layer, side by side; clicking a bar selects that layer."""
    selected = selected_layer(table["name"].tolist(), table["role"].tolist())
    st.caption("Click a bar to pick that layer for the histogram below.")
    left, right = st.columns(2)
    with left:
        charts.show(plots.layer_sqnr_figure(table, selected), key="sqnr_chart", selection_mode="points",
                        on_select=partial(_on_chart_select, "sqnr_chart"))
    with right:
        charts.show(plots.layer_size_figure(table, selected), key="size_chart", selection_mode="points",
                        on_select=partial(_on_chart_select, "size_chart"))


def _clamp(key: str, upper: int) -> None:
    if not 0 <= st.session_state.get(key, 0) <= upper:
        st.session_state[key] = 0


def histogram_section(engine: Engine, plan: Plan, table: pd.DataFrame) -> None:
    """Float and compressed weights of the selected layer (or one of its channels / groups)."""
    names = table["name"].tolist()
    chosen = selected_layer(names, table["role"].tolist())
    if st.session_state.get("hist_layer") != chosen:  # written only when it differs
        st.session_state.hist_layer = chosen
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
    chart, details = st.columns([2.6, 1.4])
    charts.show(where=chart, fig=plots.weight_histogram_figure(hist, name, label), key="histogram")
    notes = [hist.note] if hist.note else []
    if hist.saturated:
        notes.append(f"{hist.saturated:,} weights lie outside the clip range and saturate")
    if hist.pruned:
        notes.append(f"{hist.pruned:,} of {hist.n_weights:,} weights pruned to exactly 0 (red bar)")
    chart.caption(". ".join(notes) + ("." if notes else ""))
    row = table.set_index("name").loc[name]
    details.markdown(
        f"| **{plain(name)}** | {plain(row['type'])} {row['shape'].replace('x', '×')} |\n|---|---|\n"
        f"| setting | {plain(label)} |\n| storage | {row['format']} |\n"
        f"| size | {_size(row['size_bytes'])} |\n| float size | {_size(row['float_size_bytes'])} |\n"
        f"| bits / weight | {row['bits_per_weight']:.2f} |\n| SQNR | {_db(row['sqnr_db'])} |\n"
        f"| MSE | {row['mse']:.3g} |\n| max abs error | {row['max_abs_error']:.3g} |\n"
        f"| cosine | {row['cosine']:.6f} |\n| zeros | {row['achieved_sparsity']:.1%} |\n"
        f"| BN folded | {'yes' if row['bn_folded'] else 'no'} |")


def _size(n: int) -> str:
    """'9.3 KiB (9,476 B)'; '272 B' alone when that is all."""
    human, exact = human_bytes(n), bytes_text(n)
    return human if human == exact else f"{human} ({exact})"


def _db(value: float) -> str:
    return "exact (∞)" if value == float("inf") else f"{value:.2f} dB"


def flips_section(engine: Engine, plan: Plan, data: EvalData, class_names: tuple[str, ...]) -> None:
    """The evaluation inputs whose top-1 class changed, as thumbnails (1-channel images) or a table."""
    flips = analysis.flipped_samples(state.reference_logits(), engine.logits(plan, data), data.y)
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
    shown_name = dict(enumerate(map(plotly_plain, class_names))).get  # Plotly text: no HTML from class names
    if data.x.dim() == 4 and data.x.shape[1] == 1:
        shown = flips.head(MAX_THUMBNAILS)
        images = data.x[shown["index"].tolist(), 0].numpy()
        captions = [(f"true {shown_name(t)}<br>" if t is not None else "") + f"float {shown_name(f)} → {shown_name(c)}"
                    for t, f, c in zip(shown["true"], shown["float_pred"], shown["compressed_pred"])]
        st.caption("Under each input: " + ("its true class, then " if data.labeled else "")
                   + "the float model's prediction → the compressed model's.")
        charts.show(plots.flips_figure(images, captions), key="flips_chart")
        if len(flips) > len(shown):
            st.caption(f"Showing the first {len(shown)} of {len(flips)}" + (" (broken ones first)." if data.labeled
                                                                            else "."))
    table = flips.assign(**{column: flips[column].map(name) for column in ("true", "float_pred", "compressed_pred")})
    with st.expander("All changed predictions as a table", expanded=not (data.x.dim() == 4 and data.x.shape[1] == 1)):
        st.dataframe(table.rename(columns={"index": "sample", "float_pred": "float model",
                                           "compressed_pred": "compressed"}), hide_index=True, width="stretch")


def reuse_caption(engine: Engine, plan: Plan, data: EvalData) -> None:
    """What the last evaluation of `plan` recomputed and the activations kept for the next change."""
    info = engine.run_info(plan, data)
    if info is not None:
        st.caption(f"This evaluation {info.describe()}.",
                   help="A change to one layer leaves everything computed before it as it was: the engine keeps "
                        "the activations at each layer (within the limit, latest layers first) and recomputes "
                        "only what follows the first layer you changed. Numbers are bit-identical to a full run.")

