"""Language-model figures: activation outliers per input channel (one block's layers, and every
layer's outlier ratio). Data in (lightviz.analysis.outliers), go.Figure out."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import torch

from lightviz.analysis.outliers import INT8_THRESHOLD
from lightviz.plots.style import PRUNED_COLOR, SERIES_COLORS, layout


def block_outliers_figure(absmax: dict[str, torch.Tensor], layers: list[str], block: str) -> go.Figure:
    """Max |input| per input channel of each layer of one block (log y), LLM.int8's 6.0 marked.

    A few channels far above the rest, in every layer that reads the same residual stream, are
    the outliers that stretch a per-tensor activation scale.
    """
    fig = go.Figure()
    widest = max((absmax[name].numel() for name in layers), default=1)
    for i, name in enumerate(layers):
        values = absmax[name].tolist()
        short = name[len(block) + 1:] if block and name.startswith(block + ".") else name
        fig.add_scatter(x=list(range(len(values))), y=values, mode="lines", name=f"{short} ({len(values)} channels)",
                        line=dict(color=SERIES_COLORS[i % len(SERIES_COLORS)], width=1.5),
                        hovertemplate=f"{short}<br>channel %{{x}}: max |x| %{{y:.4g}}<extra></extra>")
    # a trace, not add_hline: shapes on a log axis take log10 coordinates
    fig.add_scatter(x=[0, widest - 1], y=[INT8_THRESHOLD, INT8_THRESHOLD], mode="lines", hoverinfo="skip",
                    name=f"LLM.int8 outlier threshold ({INT8_THRESHOLD:g})",
                    line=dict(color=PRUNED_COLOR, width=1.5, dash="dash"))
    values = [float(v) for name in layers for v in (absmax[name].min(), absmax[name].max())] + [INT8_THRESHOLD]
    _log_y(fig, min(values), max(values))
    return layout(fig, f"Input activations of {block or 'the model'}: max |x| per input channel over the calibration "
                       "text", "input channel", "max |x| (log)", height=360, legend_rows=2)


def _log_y(fig: go.Figure, lo: float, hi: float) -> None:
    """A log y axis with 1-2-5 ticks written as plain numbers (Plotly's own read '2, 3, 5' for 20, 30, 50)."""
    lo, hi = max(lo, 1e-6), max(hi, 1e-6)
    ticks = [round(m * 10.0 ** e, 12) for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5)]
    below = [t for t in ticks if t <= lo]
    above = [t for t in ticks if t >= hi]
    ticks = [t for t in ticks if (below[-1] if below else ticks[0]) <= t <= (above[0] if above else ticks[-1])]
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def outlier_ratio_figure(table: pd.DataFrame) -> go.Figure:
    """Per layer, largest channel absmax / median channel absmax (log): how far a per-tensor
    scale is stretched by its outlier channels."""
    fig = go.Figure(go.Bar(
        x=table["layer"].tolist(), y=table["ratio"].tolist(), marker_color=SERIES_COLORS[0],
        customdata=table[["max_absmax", "median_absmax", "above_6", "top_channel"]].values.tolist(),
        hovertemplate=("%{x}<br>max / median channel: %{y:.1f}x<br>largest %{customdata[0]:.4g}, median "
                       "%{customdata[1]:.4g}<br>%{customdata[2]} channels above 6 · top channel %{customdata[3]}"
                       "<extra></extra>")))
    ratios = [r for r in table["ratio"].tolist() if 0 < r < float("inf")] or [1.0]
    _log_y(fig, min(min(ratios), 1.0), max(ratios))
    fig.update_xaxes(type="category", tickangle=-45)
    return layout(fig, "Outlier ratio per layer: largest input channel's max |x| over the median channel's",
                  "layer", "ratio (log)", height=320, legend_rows=0)


def history_figure(history: pd.DataFrame, before: float | None = None, float_perplexity: float | None = None,
                   epochs: int | None = None) -> go.Figure:
    """Test perplexity (left axis, lower is better) and training loss (right, dotted) per epoch."""
    from plotly.subplots import make_subplots

    from lightviz.plots.style import CURRENT_COLOR, FLOAT_COLOR, FLOAT_MODEL_COLOR, FRONT_COLOR

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x, y = history["epoch"].tolist(), history["test_perplexity"].tolist()
    if before is not None:
        x, y = [0] + x, [before] + y
    fig.add_scatter(x=x, y=y, name="test perplexity", mode="lines+markers", line=dict(color=FRONT_COLOR, width=2.5),
                    hovertemplate="epoch %{x}: perplexity %{y:.4f}<extra></extra>", secondary_y=False)
    fig.add_scatter(x=history["epoch"].tolist(), y=history["loss"].tolist(), name="loss", mode="lines+markers",
                    line=dict(color=FLOAT_COLOR, dash="dot", width=1.5), marker=dict(size=5, symbol="square"),
                    hovertemplate="epoch %{x}: loss %{y:.4f}<extra></extra>", secondary_y=True)
    for value, text, color, dash in ((before, "before", CURRENT_COLOR, "dash"),
                                     (float_perplexity, "float", FLOAT_MODEL_COLOR, "dot")):
        if value is not None:
            fig.add_hline(y=value, line=dict(color=color, dash=dash, width=1.5), secondary_y=False,
                          annotation=dict(text=f"{text} {value:.3f}", font=dict(size=11, color=color)))
    last = max([int(history["epoch"].max()) if len(history) else 1, epochs or 1])
    fig = layout(fig, "Test perplexity and training loss per epoch", "epoch", "", height=360)
    fig.update_xaxes(range=[-0.3, last + 0.3], dtick=max(1, -(-last // 10)))
    fig.update_yaxes(title_text="test perplexity (lower is better)", secondary_y=False)
    fig.update_yaxes(title_text="training loss (dotted)", secondary_y=True, showgrid=False)
    return fig
