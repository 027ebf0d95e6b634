"""Figures of plan A against plan B: per-layer error and size side by side (layers whose
setting differs shaded), one layer's weights under both overlaid, A and B on the trade-off chart.

>>> import pandas as pd
>>> diff = pd.DataFrame({"name": ["a", "b"], "differs": [False, True], "sqnr_db_a": [40.0, 30.0],
...                      "sqnr_db_b": [40.0, float("inf")], "size_bytes_a": [10, 20], "size_bytes_b": [10, 40]})
>>> [trace.name for trace in ab_layers_figure(diff, "sqnr").data]
['A', 'B']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lightviz.analysis.compare import OverlaidHistogram
from lightviz.plots.style import FLOAT_COLOR, layout, log_ticks, short_number

A_COLOR = "#72B7B2"  # teal: the pinned plan
B_COLOR = "#F58518"  # orange: the current plan, as compressed weights are drawn everywhere
CHANGED_FILL = "rgba(238, 202, 59, 0.22)"  # yellow band behind layers whose setting differs


def ab_layers_figure(diff: pd.DataFrame, what: str = "sqnr", label_a: str = "A", label_b: str = "B") -> go.Figure:
    """Per-layer SQNR (dB) or storage (bytes) of A and B as grouped bars; changed layers shaded.

    Args:
        diff: analysis.compare.layer_differences rows.
        what: "sqnr" or "size".
        label_a, label_b: legend names of the two plans.
    """
    if what not in ("sqnr", "size"):
        raise ValueError(f"what must be 'sqnr' or 'size'; got {what!r}")
    names = diff["name"].tolist()
    column = "sqnr_db" if what == "sqnr" else "size_bytes"
    values = {side: diff[f"{column}_{side}"].astype(float).to_numpy() for side in ("a", "b")}
    if what == "sqnr":  # exact layers (infinite SQNR) drawn a little above the best finite bar
        finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
        cap = finite.max() * 1.1 if finite.size and finite.max() > 0 else 60.0
        values = {side: np.where(np.isposinf(v), cap, np.where(np.isneginf(v), 0.0, v)) for side, v in values.items()}
    fig = go.Figure()
    for side, label, color in (("a", label_a, A_COLOR), ("b", label_b, B_COLOR)):
        raw = diff[f"{column}_{side}"].astype(float)
        hover = [f"{name}: exact (no error)" if what == "sqnr" and np.isposinf(v) else
                 (f"{name}: {v:.2f} dB" if what == "sqnr" else f"{name}: {v:,.0f} bytes")
                 for name, v in zip(names, raw)]
        fig.add_bar(x=names, y=values[side].tolist(), name=label, marker_color=color, customdata=hover,
                    hovertemplate=f"{side.upper()} · %{{customdata}}<extra></extra>")
    for i, changed in enumerate(diff["differs"].tolist()):
        if changed:
            fig.add_vrect(x0=i - 0.5, x1=i + 0.5, fillcolor=CHANGED_FILL, line_width=0, layer="below")
    n_changed = int(diff["differs"].sum())
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category")
    title = "SQNR per layer, A and B" if what == "sqnr" else "Storage per layer, A and B"
    note = f" · {n_changed} changed (shaded)" if n_changed else ""
    return layout(fig, title + note, "layer", "SQNR (dB, higher is better)" if what == "sqnr" else "size (bytes)")


def ab_histogram_figure(hist: OverlaidHistogram, layer: str, label_a: str, label_b: str) -> go.Figure:
    """One layer's float weights (outline) with A's and B's kept weights overlaid (filled)."""
    fig = go.Figure()
    for counts, label, color, pruned, levels in (
            (hist.a_counts, label_a, A_COLOR, hist.pruned_a, hist.levels_a),
            (hist.b_counts, label_b, B_COLOR, hist.pruned_b, hist.levels_b)):
        extra = f", {pruned:,} pruned" if pruned else ""
        fig.add_bar(x=hist.centers, y=counts, width=hist.width, name=f"{label} ({levels:,} distinct values{extra})",
                    marker=dict(color=color, line_width=0), opacity=0.6,
                    hovertemplate=f"{label}<br>%{{x:.4g}}: %{{y}} weights<extra></extra>")
    fig.add_bar(x=hist.centers, y=hist.float_counts, width=hist.width, name=f"float ({hist.n_weights:,} weights)",
                marker=dict(color="rgba(0,0,0,0)", line=dict(color=FLOAT_COLOR, width=1.5)),
                hovertemplate="float<br>%{x:.4g}: %{y} weights<extra></extra>")
    fig.update_layout(barmode="overlay", bargap=0)
    return layout(fig, f"{layer}: weights under A and B", "weight value", "count (weights per bin)", height=340,
                  legend_rows=2)


def add_ab_points(fig: go.Figure, a: tuple[float, float, str] | None, b: tuple[float, float, str] | None,
                  y: str = "accuracy") -> go.Figure:
    """Mark plan A and plan B on a trade-off figure of column `y`; returns `fig`.

    Each point is (size_bytes, value, label): accuracy or agreement as a fraction (drawn in %),
    or a language model's perplexity as it is.
    """
    scale, unit = (1, "") if y == "perplexity" else (100, "%")
    for point, letter, color, symbol in ((a, "A", A_COLOR, "square"), (b, "B", B_COLOR, "circle")):
        if point is None:
            continue
        fig.add_scatter(x=[point[0]], y=[point[1] * scale], mode="markers+text", name=f"plan {letter}",
                        text=[letter], textposition="top center", textfont=dict(size=14, color=color),
                        customdata=[point[2]], marker=dict(size=15, symbol=symbol, color=color,
                                                           line=dict(width=1.5, color="white")),
                        hovertemplate=f"plan {letter}: %{{customdata}}<br>%{{x:,.0f}} bytes<br>%{{y:.4g}}{unit}"
                                      "<extra></extra>")
    sizes = [float(x) for trace in fig.data if trace.type == "scatter" and trace.x is not None
             for x in trace.x if x is not None]
    if sizes and fig.layout.xaxis.type == "log":  # ticks that cover the new points too
        ticks = log_ticks(min(sizes), max(sizes))
        fig.update_xaxes(tickvals=ticks, ticktext=[short_number(t) for t in ticks])
    return fig
