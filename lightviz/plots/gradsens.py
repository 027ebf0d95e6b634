"""Figures of gradient-scored sensitivity next to the measured one (analysis.gradsens)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lightviz.analysis.sensitivity import pivot
from lightviz.plots.style import FLOAT_COLOR, LEVEL_COLOR, layout

HEAT_SCALE = [[0.0, "#f7fbff"], [0.15, "#c6dbef"], [0.5, "#6baed6"], [1.0, "#08306b"]]


def gradient_heatmap(df: pd.DataFrame) -> go.Figure:
    """Layers (rows) x settings: the predicted KL from the diagonal Fisher, log-coloured."""
    z = pivot(df, "score")
    values = z.to_numpy(dtype=float)
    logged = np.log10(np.clip(values, 1e-12, None))
    text = [[f"{v:.2g}" for v in row] for row in values]
    fig = go.Figure(go.Heatmap(
        z=[[float(v) for v in row] for row in logged], x=list(z.columns), y=list(z.index), text=text,
        texttemplate="%{text}", customdata=text, colorscale=HEAT_SCALE, xgap=2, ygap=2,
        hovertemplate="<b>%{y}</b> · %{x}<br>predicted KL %{customdata} nats<extra></extra>",
        colorbar=dict(title=dict(text="log10 KL", side="right"), thickness=14)))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="top")
    fig = layout(fig, "Predicted KL from gradients (½ Σ F·Δw²)", "", "", height=max(220, 34 * len(z.index)),
                 legend_rows=0)
    fig.update_layout(margin=dict(t=80))
    return fig


def gradient_scatter(pairs: pd.DataFrame, rho: float, value: str = "kl") -> go.Figure:
    """Measured KL against the predicted one, log-log, one point per layer x setting; y = x dashed."""
    shown = pairs[(pairs[value] > 0) & (pairs["score"] > 0)]
    fig = go.Figure()
    fig.add_scatter(x=shown["score"].tolist(), y=shown[value].tolist(), mode="markers",
                    text=(shown["layer"] + " · " + shown["setting"]).tolist(),
                    marker=dict(size=9, color=FLOAT_COLOR, opacity=0.8), name="layer × setting",
                    hovertemplate="%{text}<br>predicted %{x:.3g}<br>measured %{y:.3g}<extra></extra>")
    if len(shown):
        lo = float(min(shown["score"].min(), shown[value].min()))
        hi = float(max(shown["score"].max(), shown[value].max()))
        fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color=LEVEL_COLOR, dash="dash"),
                        name="predicted = measured", hoverinfo="skip")
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    rho_text = "n/a" if math.isnan(rho) else f"{rho:.3f}"
    return layout(fig, f"Measured against predicted KL (Spearman ρ = {rho_text})", "predicted KL (nats, gradients)",
                  "measured KL (nats, one layer at a time)", height=340)
