"""Figures of the Methods page: what each PTQ method buys at each bit-width, and where.

Data in (analysis.methods.MethodsComparison's tables), go.Figure out.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from lightviz.plots.style import FLOAT_MODEL_COLOR, LEVEL_COLOR, SERIES_COLORS, layout

NEAREST_COLOR = LEVEL_COLOR


def method_colors(methods: list[str]) -> dict[str, str]:
    """nearest in grey (the baseline), the others in the series colours, in order."""
    others = [m for m in methods if m != "nearest"]
    colors = {m: SERIES_COLORS[i % len(SERIES_COLORS)] for i, m in enumerate(others)}
    return {"nearest": NEAREST_COLOR, **colors}


def score_column(rows: pd.DataFrame) -> str:
    """"accuracy" when the data has labels, else "agreement"."""
    return "accuracy" if rows["accuracy"].notna().all() else "agreement"


def methods_accuracy_figure(rows: pd.DataFrame, float_accuracy: float | None) -> go.Figure:
    """Grouped bars: accuracy (or agreement) per setting (x) and method (colour), the float model
    as a dashed line; the hover gives the change against round-to-nearest."""
    column = score_column(rows)
    methods = list(dict.fromkeys(rows["method"]))
    colors = method_colors(methods)
    nearest = rows[rows["method"] == "nearest"].set_index("setting")[column]
    fig = go.Figure()
    for method in methods:
        mine = rows[rows["method"] == method]
        deltas = [(value - nearest.get(setting, math.nan)) * 100 for setting, value in zip(mine["setting"], mine[column])]
        fig.add_bar(x=mine["setting"].tolist(), y=(mine[column] * 100).tolist(), name=method,
                    marker_color=colors[method], customdata=[[d, s] for d, s in zip(deltas, mine["size_bytes"])],
                    text=[f"{v * 100:.1f}" for v in mine[column]], textposition="inside", insidetextanchor="end",
                    hovertemplate=f"<b>{method}</b> at %{{x}}<br>{column} %{{y:.2f}}%<br>"
                                  "vs nearest %{customdata[0]:+.2f} pts<br>%{customdata[1]:,} bytes<extra></extra>")
    if float_accuracy is not None and column == "accuracy":
        fig.add_hline(y=float_accuracy * 100, line=dict(color=FLOAT_MODEL_COLOR, dash="dash"),
                      annotation_text=f"float {float_accuracy:.2%}", annotation_position="bottom right",
                      annotation_font=dict(color=FLOAT_MODEL_COLOR))
    low = float((rows[column] * 100).min())
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_yaxes(range=[max(0.0, low - 8), 104])
    title = "Top-1 accuracy" if column == "accuracy" else "Agreement with the float model"
    return layout(fig, f"{title} per method", "setting", f"{column} (%)", height=360, legend_rows=2)


def methods_tradeoff_figure(rows: pd.DataFrame, float_accuracy: float | None, float_size: int) -> go.Figure:
    """Accuracy (or agreement) against size, one line per method across settings (log x)."""
    column = score_column(rows)
    methods = list(dict.fromkeys(rows["method"]))
    colors = method_colors(methods)
    fig = go.Figure()
    for method in methods:
        mine = rows[rows["method"] == method].sort_values("size_bytes")
        fig.add_scatter(x=mine["size_bytes"].tolist(), y=(mine[column] * 100).tolist(), mode="lines+markers",
                        name=method, text=mine["setting"].tolist(), line=dict(color=colors[method], width=2),
                        marker=dict(size=9), hovertemplate=f"<b>{method}</b> %{{text}}<br>%{{x:,}} bytes<br>"
                                                           f"{column} %{{y:.2f}}%<extra></extra>")
    if float_accuracy is not None and column == "accuracy":
        fig.add_scatter(x=[float_size], y=[float_accuracy * 100], mode="markers", name="float model",
                        marker=dict(symbol="star", size=14, color=FLOAT_MODEL_COLOR),
                        hovertemplate="float model<br>%{x:,} bytes<br>accuracy %{y:.2f}%<extra></extra>")
    fig.update_xaxes(type="log")
    return layout(fig, "Accuracy against size", "size (bytes, log scale)", f"{column} (%)", height=360, legend_rows=2)


def methods_layer_figure(layers: pd.DataFrame, setting: str, value: str = "output_sqnr_db") -> go.Figure:
    """Per-layer SQNR (dB) of each method at one setting, grouped bars (higher is better)."""
    mine = layers[layers["setting"] == setting]
    methods = list(dict.fromkeys(mine["method"]))
    colors = method_colors(methods)
    fig = go.Figure()
    for method in methods:
        rows = mine[mine["method"] == method]
        shown = [None if not math.isfinite(v) else v for v in rows[value]]
        fig.add_bar(x=rows["layer"].tolist(), y=shown, name=method, marker_color=colors[method],
                    customdata=rows["method_note"].tolist(),
                    hovertemplate=f"<b>{method}</b> · %{{x}}<br>%{{y:.2f}} dB<br>%{{customdata}}<extra></extra>")
    what = "output" if value == "output_sqnr_db" else "weight"
    fig.update_layout(barmode="group", bargap=0.2)
    return layout(fig, f"Per-layer {what} SQNR at {setting} (higher is better)", "layer", f"{what} SQNR (dB)",
                  height=340, legend_rows=2)
