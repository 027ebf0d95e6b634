"""Plotly figures of the deeper analyses: sensitivity heatmap, mixed against uniform, range
methods compared, value histograms. Data in, go.Figure out (no Streamlit, no computation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lightviz.analysis.ranges import ValueHistogram
from lightviz.analysis.sensitivity import pivot
from lightviz.plots.style import (
    COMPRESSED_COLOR,
    CURRENT_COLOR,
    FLOAT_COLOR,
    FLOAT_MODEL_COLOR,
    FRONT_COLOR,
    LEVEL_COLOR,
    SERIES_COLORS,
    SPAN_COLOR,
    layout,
    plain,
    size_ticks,
)

METHOD_COLORS = {"minmax": "#4C78A8", "percentile": "#F58518", "mse": "#54A24B", "entropy": "#B279A2"}
ZOOM_POINTS = 12  # the mixed chart shows this many points below the mixed plan and the float model
HEAT_SCALE = [[0.0, "#f7fbff"], [0.15, "#fdd49e"], [0.5, "#fc8d59"], [1.0, "#b30000"]]


def sensitivity_heatmap(df: pd.DataFrame, value: str = "accuracy_drop") -> go.Figure:
    """Layers (rows, model order top-down) x settings; color = accuracy drop (points) or KL.

    Hover: accuracy ± standard error, drop, KL, agreement, the layer's size. A language model's
    table (value "perplexity_increase") shows the relative perplexity increase in percent.
    """
    lm = value == "perplexity_increase"
    percent = value in ("accuracy_drop", "perplexity_increase")
    z = pivot(df, value) * (100 if percent else 1)
    cells = df.set_index(["layer", "setting"])
    text, hover = [], []
    for layer in z.index:
        row_text, row_hover = [], []
        for setting in z.columns:
            r = cells.loc[(layer, setting)]
            row_text.append(f"{z.loc[layer, setting]:.1f}" if percent else f"{z.loc[layer, setting]:.2g}")
            if "perplexity" in r:
                acc = f"{r['perplexity']:.4g} (float {r['float_perplexity']:.4g}, {r['perplexity_increase']:+.2%})"
            else:
                acc = ("n/a" if pd.isna(r["accuracy"]) else
                       f"{r['accuracy']:.2%} ± {r['accuracy_se']:.2%} (drop {r['accuracy_drop'] * 100:+.2f} pts)")
            metric = "perplexity" if "perplexity" in r else "accuracy"
            row_hover.append(f"<b>{plain(layer)}</b> · {setting}<br>{metric} {acc}<br>KL {r['kl']:.3g} nats · "
                             f"agreement {r['agreement']:.2%}<br>layer {int(r['layer_size_bytes']):,} B "
                             f"(float {int(r['layer_float_size_bytes']):,} B)")
        text.append(row_text)
        hover.append(row_hover)
    values = z.to_numpy(dtype=float)
    top = np.nanmax(values) if np.isfinite(values).any() else 1.0
    cells_z = [[float(v) if np.isfinite(v) else None for v in row] for row in values]  # plain JSON lists
    fig = go.Figure(go.Heatmap(
        z=cells_z, x=list(z.columns), y=[plain(layer) for layer in z.index], text=text, texttemplate="%{text}",
        customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", colorscale=HEAT_SCALE, zmin=min(0.0, np.nanmin(values)),
        zmax=max(top, 1.0 if percent else 1e-3), xgap=2, ygap=2,
        colorbar=dict(title=dict(text="increase (%)" if lm else "drop (pts)" if percent else "KL (nats)",
                                 side="right"), thickness=14)))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="top")
    unit = "block" if (df["type"].astype(str).str.startswith("block")).any() else "layer"
    title = (f"Perplexity increase (%) with only that {unit} compressed" if lm
             else f"Accuracy drop (points) with only that {unit} compressed" if percent
             else f"KL(p_float || p) with only that {unit} compressed")
    fig = layout(fig, title, "", "", height=max(220, 34 * len(z.index)), legend_rows=0)
    fig.update_layout(margin=dict(t=80))
    return fig


def mixed_figure(uniform: pd.DataFrame, mixed: tuple[float, float, str], float_point: tuple[float, float],
                 y: str = "accuracy") -> go.Figure:
    """Accuracy (or agreement) against size: uniform plans as a line, the mixed plan as a star.

    The y axis zooms on the region near the float model and the mixed plan; uniform plans far
    below (e.g. 2 bits) leave the chart downward (hover still shows them).

    Args:
        uniform: rows with size_bytes, `y` and label (e.g. from sweep.run_sweep).
        mixed: (size_bytes, y value, label).
        float_point: (size_bytes, y value) of the float model.
    """
    lm = y == "perplexity"
    scale = 1 if lm else 100
    y_title = "perplexity (lower is better)" if lm else "top-1 accuracy (%)" if y == "accuracy" else \
        "agreement with float (%)"
    hover = "%{text}<br>%{x:,.0f} bytes<br>" + y_title + ": %{y:.4g}<extra></extra>"
    rows = uniform.sort_values("size_bytes")
    fig = go.Figure()
    fig.add_scatter(x=rows["size_bytes"].tolist(), y=(rows[y] * scale).tolist(), mode="lines+markers",
                    name="uniform bits", text=rows["label"].tolist(), line=dict(color=FRONT_COLOR, width=2),
                    marker=dict(size=9), hovertemplate=hover)
    fig.add_scatter(x=[float_point[0]], y=[float_point[1] * scale], mode="markers", name="float model",
                    text=["float32 model"], marker=dict(size=14, symbol="diamond", color=FLOAT_MODEL_COLOR),
                    hovertemplate=hover)
    fig.add_scatter(x=[mixed[0]], y=[mixed[1] * scale], mode="markers", name="mixed precision", text=[mixed[2]],
                    marker=dict(size=18, symbol="star", color=CURRENT_COLOR, line=dict(width=1, color="white")),
                    hovertemplate=hover)
    sizes = rows["size_bytes"].tolist() + [float_point[0], mixed[0]]
    ticks, labels = size_ticks(min(sizes), max(sizes))
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=labels)
    if lm:  # worse is up: zoom from the float model to a little above the mixed plan
        low, high = min(mixed[1], float_point[1]), max(mixed[1], float_point[1])
        fig.update_yaxes(range=[low * 0.98, max(high * 1.15, low * 1.3)])
    else:
        top = max([mixed[1], float_point[1]] + rows[y].tolist()) * 100
        fig.update_yaxes(range=[max(0.0, min(mixed[1], float_point[1]) * 100 - ZOOM_POINTS), top + 1.5])
    return layout(fig, "Mixed precision against uniform bit-widths", "model size (log scale; exact bytes on hover)", y_title,
                   height=340)


def range_methods_figure(hist: ValueHistogram, table: pd.DataFrame, what: str, log_y: bool = False) -> go.Figure:
    """The values' histogram on top; below it, each method's clip range as a bar on the same x axis."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], vertical_spacing=0.04)
    fig.add_bar(x=hist.centers, y=hist.float_counts, width=hist.edges[1] - hist.edges[0], name=plain(what),
                marker=dict(color=FLOAT_COLOR, line_width=0), opacity=0.7, showlegend=False,
                hovertemplate="%{x:.4g}: %{y} values<extra></extra>", row=1, col=1)
    for row in table.itertuples():
        color = METHOD_COLORS.get(row.method, SERIES_COLORS[0])
        fig.add_scatter(x=[row.lo, row.hi], y=[row.method, row.method], mode="lines+markers", showlegend=False,
                        line=dict(color=color, width=6), marker=dict(size=11, symbol="line-ns-open", color=color,
                                                                      line=dict(width=3, color=color)),
                        hovertemplate=(f"{row.method}: [{row.lo:.4g}, {row.hi:.4g}], "
                                       f"{row.clipped_fraction:.2%} clipped<extra></extra>"), row=2, col=1)
        for x in (row.lo, row.hi):
            fig.add_vline(x=x, line=dict(color=color, width=1, dash="dot"), row=1, col=1)
    fig.update_yaxes(type="log" if log_y else "linear", dtick=1 if log_y else None,  # log: 1, 10, 100, ...
                     title_text="count" + (" (log)" if log_y else ""), row=1, col=1)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(table["method"])[::-1],
                     row=2, col=1)
    fig.update_xaxes(title_text="value", row=2, col=1)
    fig.update_layout(bargap=0)
    return layout(fig, f"Clip range each method picks · {what}", "", "", height=380, legend_rows=0)


def range_error_figure(table: pd.DataFrame) -> go.Figure:
    """Mean squared error per method, stacked: clipping (outside the range) and rounding; totals on top."""
    fig = go.Figure()
    fig.add_bar(x=table["method"], y=table["clip_mse"], name="clipping error", marker_color="#E45756",
                hovertemplate="%{x}: clipping MSE %{y:.3g}<extra></extra>")
    fig.add_bar(x=table["method"], y=table["round_mse"], name="rounding error", marker_color="#72B7B2",
                text=[f"{v:.3g}" for v in table["mse"]], textposition="outside", cliponaxis=False,
                hovertemplate="%{x}: rounding MSE %{y:.3g}<extra></extra>")
    best = table.loc[table["mse"].idxmin(), "method"]
    fig.update_layout(barmode="stack")
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, float(table["mse"].max()) * 1.18 or 1.0])
    return layout(fig, f"Quantization error per method (lowest: {best})", "range method", "mean squared error",
                   height=330)


def value_histogram_figure(hist: ValueHistogram, title: str, label: str, log_y: bool = False) -> go.Figure:
    """Float values (outline) and quantized ones (filled) over shared bins, the grid's span shaded.

    log_y suits activations after a ReLU, which pile up at zero.
    """
    fig = go.Figure()
    width = hist.edges[1] - hist.edges[0]
    fig.add_bar(x=hist.centers, y=hist.quantized_counts, width=width, name=f"quantized ({label})",
                marker=dict(color=COMPRESSED_COLOR, line_width=0), opacity=0.8,
                hovertemplate="quantized<br>%{x:.4g}: %{y} values<extra></extra>")
    fig.add_bar(x=hist.centers, y=hist.float_counts, width=width, name=f"float ({hist.n_values:,} values)",
                marker=dict(color="rgba(0,0,0,0)", line=dict(color=FLOAT_COLOR, width=1.5)),
                hovertemplate="float<br>%{x:.4g}: %{y} values<extra></extra>")
    fig.add_vrect(x0=hist.lo, x1=hist.hi, fillcolor=SPAN_COLOR, line_width=0, layer="below")
    if hist.levels is not None:
        top = max(int(hist.float_counts.max(initial=1)), int(hist.quantized_counts.max(initial=1))) * 1.1
        xs = np.repeat(hist.levels, 3).astype(object)
        xs[2::3] = None
        ys = np.tile(np.array([1 if log_y else 0, top, None], dtype=object), len(hist.levels))
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=LEVEL_COLOR, width=1, dash="dot"),
                        name=f"levels ({len(hist.levels)})", hoverinfo="skip")
    fig.update_yaxes(type="log" if log_y else "linear", dtick=1 if log_y else None)
    fig.update_layout(barmode="overlay", bargap=0)
    return layout(fig, title, "value", "count" + (" (log)" if log_y else ""), height=320, legend_rows=2)
