"""The Trade-offs page's figures: accuracy against size with the Pareto front and history, and
weight error against bits per layer."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from lightviz.plots.style import (
    CURRENT_COLOR,
    FLOAT_MODEL_COLOR,
    FRONT_COLOR,
    HISTORY_COLOR,
    SERIES_COLORS,
    layout,
    log_ticks,
    size_ticks,
)


def tradeoff_figure(sweep: pd.DataFrame | None, y: str, front: pd.DataFrame | None,
                    float_point: tuple[float, float], current: tuple[float, float, str] | None,
                    history: pd.DataFrame | None, x: str = "size_bytes") -> go.Figure:
    """Accuracy (or agreement) in % against size in bytes (log x), one trace per scheme/granularity;
    a language model's perplexity (log y, lower is better) as it is.

    Points carry customdata [source, row] ("sweep" or "history") so a click finds its plan.
    With x="latency_ms" the x axis is measured latency (frames carry that column; the float and
    current points give theirs in place of a size).
    """
    lm = y == "perplexity"
    scale = 1 if lm else 100
    y_title = ("perplexity (log, lower is better)" if lm else
               "top-1 accuracy (%)" if y == "accuracy" else "agreement with float (%)")
    fig = go.Figure()
    x_hover = "%{x:,.0f} bytes" if x == "size_bytes" else "%{x:.4g} ms"
    y_hover = "%{y:.4g}" if lm else "%{y:.2f}"
    hover = "%{text}<br>" + x_hover + "<br>" + y_title.split(" (")[0] + ": " + y_hover + "<extra></extra>"
    if sweep is not None and len(sweep):
        groups = sweep.assign(_group=sweep["scheme"].str[:4] + "/" + sweep["granularity"])
        for i, (group, rows) in enumerate(groups.groupby("_group", sort=True)):
            fig.add_scatter(x=rows[x].tolist(), y=(rows[y] * scale).tolist(), mode="markers",
                            name=f"sweep {group}", text=rows["label"].tolist(), customdata=[["sweep", int(r)] for r in rows.index],
                            marker=dict(size=10, color=SERIES_COLORS[i % len(SERIES_COLORS)], opacity=0.85),
                            hovertemplate=hover)
    if front is not None and len(front):
        fig.add_scatter(x=front[x].tolist(), y=(front[y] * scale).tolist(), mode="lines", name="Pareto frontier",
                        line=dict(color=FRONT_COLOR, width=2, shape="hv"), hoverinfo="skip")
    if history is not None and len(history):
        fig.add_scatter(x=history[x].tolist(), y=(history[y] * scale).tolist(), mode="markers",
                        name="tried this session", text=history["label"].tolist(), customdata=[["history", int(r)] for r in history.index],
                        marker=dict(size=11, symbol="circle-open", color=HISTORY_COLOR, line=dict(width=2)),
                        hovertemplate=hover)
    fig.add_scatter(x=[float_point[0]], y=[float_point[1] * scale], mode="markers", name="float model",
                    text=["float32 model"], marker=dict(size=15, symbol="diamond", color=FLOAT_MODEL_COLOR),
                    hovertemplate=hover)
    if current is not None:
        fig.add_scatter(x=[current[0]], y=[current[1] * scale], mode="markers", name="current plan",
                        text=[current[2]], marker=dict(size=18, symbol="star", color=CURRENT_COLOR,
                                                       line=dict(width=1, color="white")),
                        hovertemplate=hover)
    if x != "size_bytes":
        fig.update_xaxes(rangemode="tozero")
        return layout(fig, f"{y_title.split(' (')[0].capitalize()} against measured latency · click a point to make "
                           "it current", "onnxruntime CPU latency, batch 1 (ms, median)", y_title, height=440,
                      legend_rows=2)
    sizes = [float_point[0]] + ([current[0]] if current else [])
    for frame in (sweep, history):
        if frame is not None and len(frame):
            sizes += frame["size_bytes"].tolist()
    ticks, labels = size_ticks(min(sizes), max(sizes))
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=labels)
    if lm:  # 1-2-5 ticks in plain numbers (Plotly's own log ticks read "2, 3, 5" for 20, 30, 50)
        values = [v for frame in (sweep, history) if frame is not None and len(frame) for v in frame[y].dropna()]
        values += [float_point[1]] + ([current[1]] if current else [])
        y_ticks = log_ticks(min(values), max(values))
        fig.update_yaxes(type="log", tickvals=y_ticks, ticktext=[f"{t:g}" for t in y_ticks])
    return layout(fig, f"{y_title.split(' (')[0].capitalize()} against size · click a point to make it current",
                   "model size (log scale; exact bytes on hover)", y_title, height=440, legend_rows=2)


def sqnr_bits_figure(curves: pd.DataFrame, subtitle: str) -> go.Figure:
    """Weight SQNR against bits, one line per layer."""
    fig = go.Figure()
    for i, (layer, rows) in enumerate(curves.groupby("layer", sort=False)):
        fig.add_scatter(x=rows["bits"], y=rows["sqnr_db"], mode="lines+markers", name=layer,
                        line=dict(color=SERIES_COLORS[i % len(SERIES_COLORS)]),
                        hovertemplate=f"{layer}<br>%{{x}} bits: %{{y:.1f}} dB<extra></extra>")
    fig.update_xaxes(dtick=1)
    n_layers = curves["layer"].nunique()
    return layout(fig, f"Weight SQNR against bits, per layer (higher = less error) · {subtitle}", "bits per weight",
                  "SQNR (dB)", height=380, legend_rows=max(2, -(-n_layers // 4)))
