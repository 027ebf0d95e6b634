"""Figures of number formats on the Learn page: grids against a tensor's values, the step each
grid has at each magnitude, and the relative error that follows (analysis.learn_formats)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lightviz.analysis.learn_formats import GridComparison, step_profile
from lightviz.plots.style import FLOAT_COLOR, SERIES_COLORS, layout

GRID_COLORS = [SERIES_COLORS[1], SERIES_COLORS[2], SERIES_COLORS[3]]
BINS = 90


def grid_colors(names: list[str]) -> dict[str, str]:
    return {name: GRID_COLORS[i % len(GRID_COLORS)] for i, name in enumerate(names)}


def grids_figure(comparison: GridComparison, title: str) -> go.Figure:
    """The weights' histogram on top; under it, one row of level ticks per grid on the same axis."""
    names = list(comparison.levels)
    colors = grid_colors(names)
    fig = make_subplots(rows=1 + len(names), cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[0.52] + [0.48 / len(names)] * len(names))
    counts, edges = np.histogram(comparison.weight, BINS)
    centers = (edges[:-1] + edges[1:]) / 2
    fig.add_bar(x=centers.tolist(), y=counts.tolist(), width=float(edges[1] - edges[0]), name="weights",
                marker=dict(color=FLOAT_COLOR, line_width=0), opacity=0.75,
                hovertemplate="%{x:.4g}: %{y} weights<extra></extra>", row=1, col=1)
    for row, name in enumerate(names, start=2):
        levels = comparison.levels[name]
        fig.add_scatter(x=levels.tolist(), y=[name] * len(levels), mode="markers", name=f"{name} ({len(levels)} levels)",
                        marker=dict(symbol="line-ns-open", size=18, color=colors[name], line=dict(width=1.5)),
                        hovertemplate=f"{name} level %{{x:.4g}}<extra></extra>", row=row, col=1)
        fig.update_yaxes(showticklabels=True, row=row, col=1)
    fig.update_yaxes(title_text="weights", row=1, col=1)
    fig.update_xaxes(title_text="weight value", row=len(names) + 1, col=1)
    fig.update_layout(bargap=0)
    return layout(fig, title, "", "", height=200 + 70 * len(names), legend_rows=1)


def step_figure(comparison: GridComparison) -> go.Figure:
    """The grid step at each |w| (log-log): flat for the uniform grid, halving per binade for FP."""
    amax = float(np.abs(comparison.weight).max())
    colors = grid_colors(list(comparison.levels))
    fig = go.Figure()
    for name, levels in comparison.levels.items():
        xs, steps = step_profile(levels, amax)
        fig.add_scatter(x=xs.tolist(), y=steps.tolist(), mode="lines", name=name, line=dict(color=colors[name],
                        width=2, shape="hv"), hovertemplate=f"{name}<br>|w| %{{x:.3g}}: step %{{y:.3g}}<extra></extra>")
    fig.add_vrect(x0=amax / 1000, x1=comparison.small, fillcolor="rgba(76,120,168,0.10)", line_width=0, layer="below",
                  annotation_text="half of the weights", annotation_position="top left")
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return layout(fig, "Grid step at each magnitude (rounding error ≤ step / 2)", "|w| (log)", "step (log)",
                  height=330)


def relative_error_figure(profile: pd.DataFrame) -> go.Figure:
    """Mean relative error |w − ŵ| / |w| against |w|, per grid (log x)."""
    colors = grid_colors(list(dict.fromkeys(profile["grid"])))
    fig = go.Figure()
    for name, rows in profile.groupby("grid", sort=False):
        fig.add_scatter(x=rows["abs_w"].tolist(), y=(rows["rel_error"] * 100).tolist(), mode="lines+markers",
                        name=name, line=dict(color=colors[name], width=2), customdata=rows["count"].tolist(),
                        hovertemplate=f"{name}<br>|w| ≈ %{{x:.3g}}: %{{y:.1f}}% "
                                      "(%{customdata} weights)<extra></extra>")
    fig.update_xaxes(type="log")
    return layout(fig, "Relative error by magnitude", "|w| (log)", "mean |w − ŵ| / |w| (%)", height=330)
