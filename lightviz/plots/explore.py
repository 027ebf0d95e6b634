"""The Explore page's figures: a layer's weight histogram with its grid, per-layer error and
size, and the test images whose prediction flipped. Histograms arrive pre-binned
(lightviz.analysis.explore).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lightviz.analysis.explore import SIZE_PARTS, WeightHistogram
from lightviz.plots.style import (
    COMPRESSED_COLOR,
    FLOAT_COLOR,
    LEVEL_COLOR,
    PART_COLORS,
    PRUNED_COLOR,
    SPAN_COLOR,
    layout,
    plain,
)


LEVEL_LINES = 64  # more levels than this are drawn as a rug of ticks at the bottom
RUG_HEIGHT = 0.1
RUG_COLOR = "rgba(70, 70, 70, 0.85)"


def weight_histogram_figure(hist: WeightHistogram, layer: str, spec_label: str) -> go.Figure:
    """Float and compressed weights overlaid as bars, grid levels as lines, the grid's span shaded."""
    fig = go.Figure()
    centers, width = hist.centers, hist.width
    kept = hist.n_weights - hist.pruned
    fig.add_bar(x=centers, y=hist.compressed_counts, width=width, name=f"{spec_label} ({kept:,} kept)",
                marker=dict(color=COMPRESSED_COLOR, line_width=0), opacity=0.8,
                hovertemplate="compressed<br>%{x:.4g}: %{y} weights<extra></extra>")
    fig.add_bar(x=centers, y=hist.float_counts, width=width, name=f"float ({hist.n_weights:,} weights)",
                marker=dict(color="rgba(0,0,0,0)", line=dict(color=FLOAT_COLOR, width=1.5)),
                hovertemplate="float<br>%{x:.4g}: %{y} weights<extra></extra>")
    top = max(int(hist.float_counts.max(initial=0)), int(hist.compressed_counts.max(initial=0)), 1) * 1.15
    if hist.pruned:
        fig.add_bar(x=[0.0], y=[min(hist.pruned, top)], width=width * 0.5, name=f"pruned to 0 ({hist.pruned:,})",
                    marker=dict(color=PRUNED_COLOR, line_width=0),
                    hovertemplate=f"pruned to exactly 0: {hist.pruned:,} weights<extra></extra>")
        if hist.pruned > top:  # the bar is cut at the top of the axis: say how tall it is
            fig.add_annotation(x=0.0, y=top, text=f"{hist.pruned:,} pruned ↑", showarrow=False, xanchor="left",
                               yanchor="top", xshift=6, font=dict(size=11, color=PRUNED_COLOR))
    if hist.span is not None:
        lo, hi = hist.span
        fig.add_vrect(x0=lo, x1=hi, fillcolor=SPAN_COLOR, line_width=0, layer="below")
        fig.add_annotation(x=hi, y=1, yref="paper", text=f"clip range [{lo:.3g}, {hi:.3g}]", showarrow=False,
                           xanchor="right", yanchor="top", font=dict(size=11))
    if hist.levels is not None:
        rug = len(hist.levels) > LEVEL_LINES  # many levels (FP8): short ticks along the axis show their density
        xs = np.repeat(hist.levels, 3).astype(object)
        xs[2::3] = None
        ys = np.tile(np.array([0.0, top * (RUG_HEIGHT if rug else 1.0), None], dtype=object), len(hist.levels))
        color = RUG_COLOR if rug else LEVEL_COLOR
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=1, dash="solid" if rug else "dot"),
                        name=f"quantization levels ({len(hist.levels)}{', ticks' if rug else ''})", hoverinfo="skip")
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_yaxes(range=[0, top])
    return layout(fig, f"{layer} · {hist.scope}", "weight value", "count (weights per bin)", height=340,
                   legend_rows=2)


def _bar_opacity(names: list[str], selected: str | None) -> list[float]:
    return [1.0 if selected in (None, name) else 0.55 for name in names]


def layer_sqnr_figure(table: pd.DataFrame, selected: str | None = None) -> go.Figure:
    """Weight SQNR per layer; exact layers (infinite SQNR) drawn at the top, labeled 'exact'."""
    layers = table["name"].tolist()  # raw names travel as customdata (click selection)
    names = [plain(name) for name in layers]
    sqnr = table["sqnr_db"].astype(float).to_numpy()
    finite = sqnr[np.isfinite(sqnr)]
    cap = (finite.max() * 1.1 if finite.size and finite.max() > 0 else 60.0)
    shown = np.where(np.isposinf(sqnr), cap, np.where(np.isneginf(sqnr), 0.0, sqnr))
    text = ["exact" if math.isinf(v) and v > 0 else f"{v:.1f}" for v in sqnr]
    exact = np.isposinf(sqnr)
    marker = dict(color=FLOAT_COLOR, opacity=_bar_opacity(layers, selected))
    if exact.any():
        marker["pattern"] = dict(shape=["/" if e else "" for e in exact])
    fig = go.Figure(go.Bar(
        x=names, y=shown, customdata=layers, marker=marker, name="SQNR",
        hovertemplate=[f"{n}: exact (no error)<extra></extra>" if e else f"{n}: {v:.2f} dB<extra></extra>"
                       for n, e, v in zip(names, exact, sqnr)]))
    if len(names) <= 16:  # value labels as annotations: bar `text` stops Streamlit's click selection
        fig.update_layout(annotations=[dict(x=n, y=y, text=t, showarrow=False, yanchor="bottom", font=dict(size=11))
                                       for n, y, t in zip(names, shown, text)])
    fig.update_xaxes(type="category")
    return layout(fig, "Weight SQNR per layer (higher = less error)", "layer", "SQNR (dB)")


def layer_size_figure(table: pd.DataFrame, selected: str | None = None) -> go.Figure:
    """Storage per layer stacked by part, with each layer's float32 size marked."""
    layers = table["name"].tolist()  # raw names travel as customdata (click selection)
    names = [plain(name) for name in layers]
    fig = go.Figure()
    for (column, part), color in zip(SIZE_PARTS.items(), PART_COLORS):  # KiB on the axis, bytes on hover
        fig.add_bar(x=names, y=table[column] / 1024, name=part, customdata=layers,
                    hovertext=[f"{value:,.0f} bytes" for value in table[column]],
                    marker=dict(color=color, opacity=_bar_opacity(layers, selected)),
                    hovertemplate=f"%{{x}}<br>{part}: %{{y:,.2f}} KiB (%{{hovertext}})<extra></extra>")
    fig.add_scatter(x=names, y=table["float_size_bytes"] / 1024, mode="markers", name="float32 size", customdata=layers,
                    hovertext=[f"{value:,.0f} bytes" for value in table["float_size_bytes"]],
                    marker=dict(symbol="line-ew", size=max(6, min(24, 240 // max(len(names), 1))),
                                line=dict(width=3, color=PRUNED_COLOR)),
                    hovertemplate="%{x}<br>float32: %{y:,.2f} KiB (%{hovertext})<extra></extra>")
    fig.update_layout(barmode="stack", legend_traceorder="normal")
    fig.update_xaxes(type="category")
    return layout(fig, "Storage per layer by part", "layer", "size (KiB)", legend_rows=2)


def mosaic(images: np.ndarray, cols: int, pad_x: int = 1, pad_y: int = 1) -> np.ndarray:
    """Tile (N, H, W) images into one array, NaN around tiles (pad_y rows below every row of tiles).

    >>> mosaic(np.ones((3, 2, 2)), cols=2).shape
    (6, 5)
    """
    n, h, w = images.shape
    rows = max(1, -(-n // cols))
    out = np.full((rows * (h + pad_y), cols * (w + pad_x) - pad_x), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad_y):r * (h + pad_y) + h, c * (w + pad_x):c * (w + pad_x) + w] = images[i]
    return out


def flips_figure(images: np.ndarray, captions: list[str], cols: int = 8) -> go.Figure:
    """Grey thumbnails (ink dark) of 1-channel images, a caption under each, in one heatmap.

    Captions are Plotly text: a class name from a user's data goes through `plain` first.
    """
    n, h, w = images.shape
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    pad_x, pad_y = max(1, w // 4), max(3, h * 3 // 8)  # pad_y leaves room for two caption lines
    tiled = mosaic(images, cols, pad_x=pad_x, pad_y=pad_y)
    fig = go.Figure(go.Heatmap(z=tiled, colorscale="Greys", showscale=False, hoverinfo="skip",
                               zmin=float(np.nanmin(images)), zmax=float(np.nanmax(images))))
    spots = [divmod(i, cols) for i in range(len(captions))]
    fig.add_scatter(x=[c * (w + pad_x) + (w - 1) / 2 for _, c in spots], y=[r * (h + pad_y) + h - 0.2 for r, _ in spots],
                    text=captions, mode="text", textposition="bottom center", textfont=dict(size=11),
                    hoverinfo="skip", showlegend=False)
    fig.update_xaxes(visible=False, range=[-0.5, tiled.shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[tiled.shape[0] - 0.5, -0.5], scaleanchor="x")
    fig.update_layout(height=40 + rows * 130, margin=dict(l=0, r=0, t=10, b=0))
    return fig
