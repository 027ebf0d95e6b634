"""Plotly figure builders: data in, go.Figure out (no Streamlit, no computation of results).

Colors are explicit and chosen to read on both light and dark backgrounds (the app keeps the
Streamlit theme on, which sets the background and fonts). Histograms arrive pre-binned.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lightviz.analysis import SIZE_PARTS, WeightHistogram

FLOAT_COLOR = "#4C78A8"  # blue
COMPRESSED_COLOR = "#F58518"  # orange
PRUNED_COLOR = "#E45756"  # red
LEVEL_COLOR = "rgba(140, 140, 140, 0.75)"
SPAN_COLOR = "rgba(84, 162, 75, 0.14)"
FRONT_COLOR = "#54A24B"  # green
CURRENT_COLOR = "#E45756"
FLOAT_MODEL_COLOR = "#B279A2"  # purple
HISTORY_COLOR = "#9D755D"  # brown
PART_COLORS = ["#4C78A8", "#F58518", "#B279A2", "#72B7B2"]
SERIES_COLORS = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D",
                 "#FF9DA6", "#BAB0AC"]


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 360, legend_rows: int = 1) -> go.Figure:
    """Title on top, then a horizontal legend above the plot (room for `legend_rows` rows)."""
    top = 48 + 22 * legend_rows
    fig.update_layout(title=dict(text=title, x=0, xanchor="left", y=1, yref="container", yanchor="top",
                                 pad=dict(t=12)),
                      height=height + top, margin=dict(l=10, r=10, t=top, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


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
        xs = np.repeat(hist.levels, 3).astype(object)
        xs[2::3] = None
        ys = np.tile(np.array([0.0, top, None], dtype=object), len(hist.levels))
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=LEVEL_COLOR, width=1, dash="dot"),
                        name=f"quantization levels ({len(hist.levels)})", hoverinfo="skip")
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_yaxes(range=[0, top])
    return _layout(fig, f"{layer} · {hist.scope}", "weight value", "count (weights per bin)", height=340,
                   legend_rows=2)


def _bar_opacity(names: list[str], selected: str | None) -> list[float]:
    return [1.0 if selected in (None, name) else 0.55 for name in names]


def layer_sqnr_figure(table: pd.DataFrame, selected: str | None = None) -> go.Figure:
    """Weight SQNR per layer; exact layers (infinite SQNR) drawn at the top, labeled 'exact'."""
    names = table["name"].tolist()
    sqnr = table["sqnr_db"].astype(float).to_numpy()
    finite = sqnr[np.isfinite(sqnr)]
    cap = (finite.max() * 1.1 if finite.size and finite.max() > 0 else 60.0)
    shown = np.where(np.isposinf(sqnr), cap, np.where(np.isneginf(sqnr), 0.0, sqnr))
    text = ["exact" if math.isinf(v) and v > 0 else f"{v:.1f}" for v in sqnr]
    exact = np.isposinf(sqnr)
    marker = dict(color=FLOAT_COLOR, opacity=_bar_opacity(names, selected))
    if exact.any():
        marker["pattern"] = dict(shape=["/" if e else "" for e in exact])
    fig = go.Figure(go.Bar(
        x=names, y=shown, customdata=names, marker=marker, name="SQNR",
        hovertemplate=[f"{n}: exact (no error)<extra></extra>" if e else f"{n}: {v:.2f} dB<extra></extra>"
                       for n, e, v in zip(names, exact, sqnr)]))
    if len(names) <= 16:  # value labels as annotations: bar `text` stops Streamlit's click selection
        fig.update_layout(annotations=[dict(x=n, y=y, text=t, showarrow=False, yanchor="bottom", font=dict(size=11))
                                       for n, y, t in zip(names, shown, text)])
    fig.update_xaxes(type="category")
    return _layout(fig, "Weight error per layer (higher is better) · click a bar", "layer", "SQNR (dB)")


def layer_size_figure(table: pd.DataFrame, selected: str | None = None) -> go.Figure:
    """Storage per layer stacked by part, with each layer's float32 size marked."""
    names = table["name"].tolist()
    fig = go.Figure()
    for (column, part), color in zip(SIZE_PARTS.items(), PART_COLORS):
        fig.add_bar(x=names, y=table[column], name=part, customdata=names,
                    marker=dict(color=color, opacity=_bar_opacity(names, selected)),
                    hovertemplate=f"%{{x}}<br>{part}: %{{y:,.0f}} bytes<extra></extra>")
    fig.add_scatter(x=names, y=table["float_size_bytes"], mode="markers", name="float32 size", customdata=names,
                    marker=dict(symbol="line-ew", size=max(6, min(24, 240 // max(len(names), 1))),
                                line=dict(width=3, color=PRUNED_COLOR)),
                    hovertemplate="%{x}<br>float32: %{y:,.0f} bytes<extra></extra>")
    fig.update_layout(barmode="stack", legend_traceorder="normal")
    fig.update_xaxes(type="category")
    return _layout(fig, "Storage per layer by part · click a bar", "layer", "size (bytes)", legend_rows=2)


def tradeoff_figure(sweep: pd.DataFrame | None, y: str, front: pd.DataFrame | None,
                    float_point: tuple[float, float], current: tuple[float, float, str] | None,
                    history: pd.DataFrame | None) -> go.Figure:
    """Accuracy (or agreement) in % against size in bytes (log x), one trace per scheme/granularity.

    Points carry customdata [source, row] ("sweep" or "history") so a click finds its plan.
    """
    y_title = "top-1 accuracy (%)" if y == "accuracy" else "agreement with float (%)"
    fig = go.Figure()
    hover = "%{text}<br>%{x:,.0f} bytes<br>" + y_title + ": %{y:.2f}<extra></extra>"
    if sweep is not None and len(sweep):
        groups = sweep.assign(_group=sweep["scheme"].str[:4] + "/" + sweep["granularity"])
        for i, (group, rows) in enumerate(groups.groupby("_group", sort=True)):
            fig.add_scatter(x=rows["size_bytes"].tolist(), y=(rows[y] * 100).tolist(), mode="markers",
                            name=f"sweep {group}", text=rows["label"].tolist(), customdata=[["sweep", int(r)] for r in rows.index],
                            marker=dict(size=10, color=SERIES_COLORS[i % len(SERIES_COLORS)], opacity=0.85),
                            hovertemplate=hover)
    if front is not None and len(front):
        fig.add_scatter(x=front["size_bytes"].tolist(), y=(front[y] * 100).tolist(), mode="lines", name="Pareto frontier",
                        line=dict(color=FRONT_COLOR, width=2, shape="hv"), hoverinfo="skip")
    if history is not None and len(history):
        fig.add_scatter(x=history["size_bytes"].tolist(), y=(history[y] * 100).tolist(), mode="markers",
                        name="tried this session", text=history["label"].tolist(), customdata=[["history", int(r)] for r in history.index],
                        marker=dict(size=11, symbol="circle-open", color=HISTORY_COLOR, line=dict(width=2)),
                        hovertemplate=hover)
    fig.add_scatter(x=[float_point[0]], y=[float_point[1] * 100], mode="markers", name="float model",
                    text=["float32 model"], marker=dict(size=15, symbol="diamond", color=FLOAT_MODEL_COLOR),
                    hovertemplate=hover)
    if current is not None:
        fig.add_scatter(x=[current[0]], y=[current[1] * 100], mode="markers", name="current plan",
                        text=[current[2]], marker=dict(size=18, symbol="star", color=CURRENT_COLOR,
                                                       line=dict(width=1, color="white")),
                        hovertemplate=hover)
    sizes = [float_point[0]] + ([current[0]] if current else [])
    for frame in (sweep, history):
        if frame is not None and len(frame):
            sizes += frame["size_bytes"].tolist()
    ticks = log_ticks(min(sizes), max(sizes))
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[_short(t) for t in ticks])
    return _layout(fig, f"{y_title.split(' (')[0].capitalize()} against size · click a point to make it current",
                   "model size (bytes, log scale)", y_title, height=440, legend_rows=2)


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks covering [lo, hi] for a log axis.

    >>> log_ticks(6000, 97000)
    [5000.0, 10000.0, 20000.0, 50000.0, 100000.0]
    """
    lo, hi = max(lo, 1.0), max(hi, 1.0)
    ticks = [m * 10.0 ** e for e in range(int(math.floor(math.log10(lo))) - 1, int(math.ceil(math.log10(hi))) + 1)
             for m in (1, 2, 5)]
    below = [t for t in ticks if t <= lo]
    above = [t for t in ticks if t >= hi]
    return [t for t in ticks if (below[-1] if below else ticks[0]) <= t <= (above[0] if above else ticks[-1])]


def _short(value: float) -> str:
    """10000 -> '10k', 2500000 -> '2.5M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def sqnr_bits_figure(curves: pd.DataFrame, subtitle: str) -> go.Figure:
    """Weight SQNR against bits, one line per layer."""
    fig = go.Figure()
    for i, (layer, rows) in enumerate(curves.groupby("layer", sort=False)):
        fig.add_scatter(x=rows["bits"], y=rows["sqnr_db"], mode="lines+markers", name=layer,
                        line=dict(color=SERIES_COLORS[i % len(SERIES_COLORS)]),
                        hovertemplate=f"{layer}<br>%{{x}} bits: %{{y:.1f}} dB<extra></extra>")
    fig.update_xaxes(dtick=1)
    return _layout(fig, f"Weight error against bits, per layer · {subtitle}", "bits per weight", "SQNR (dB)",
                   height=380, legend_rows=2)


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
    """Grey thumbnails (ink dark) of 1-channel images, a caption under each, in one heatmap."""
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
