"""Figures of the Learn page: data from `lightviz.analysis.learn` in, go.Figure out.

Colors are explicit and read on light and dark backgrounds (the Streamlit theme sets the
background and fonts). Histograms arrive pre-binned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lightviz.analysis.learn import LayerSteps, QuantSteps, grid_levels, is_binary
from lightviz.plots.style import plain

W_COLOR = "#4C78A8"  # blue: float values
W_HAT_COLOR = "#F58518"  # orange: dequantized values
LEVEL_COLOR = "rgba(140, 140, 140, 0.8)"
RANGE_COLOR = "rgba(84, 162, 75, 0.16)"  # green band: what the codes cover
CLIP_COLOR = "rgba(228, 87, 86, 0.13)"  # red band: what saturates
CLIP_LINE = "#E45756"
ROUND_COLOR = "#4C78A8"
TOTAL_COLOR = "#54A24B"
METHOD_COLORS = {"minmax": "#B279A2", "percentile": "#F58518", "mse": "#54A24B", "entropy": "#9D755D"}
MAX_LEVEL_LINES = 64  # draw each level as a line up to this many; beyond, a rug of ticks
MAX_CODE_LABELS = 16


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    """Title on top; the legend on its own row at the bottom of the figure, so it overlaps
    neither the title nor a subplot's title."""
    fig.update_layout(title=dict(text=plain(title), x=0, xanchor="left", y=1, yref="container", yanchor="top",
                                 pad=dict(t=12)),
                      height=height, margin=dict(l=10, r=10, t=64, b=64),
                      legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"))
    return fig


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def number_line(steps: list[QuantSteps]) -> go.Figure:
    """One row per scheme: the grid of levels on the real axis, each w and the level it lands on.

    Each value w sits on the upper line; an arrow takes it to its dequantized value s(q - z)
    on the grid below. The green band is what the codes cover.
    """
    titles = [f"{st.spec.scheme}, {st.spec.bits} bit{'s' if st.spec.bits > 1 else ''}: "
              f"s = {_fmt(st.scale)}, z = {st.zero_point}, codes {st.qmin}..{st.qmax}" for st in steps]
    fig = make_subplots(rows=len(steps), cols=1, shared_xaxes=True, subplot_titles=titles,
                        vertical_spacing=0.16 if len(steps) > 1 else 0.0)
    for row, st in enumerate(steps, start=1):
        levels = grid_levels(st)
        first = row == 1
        xref, yref = ("x", "y") if row == 1 else (f"x{row}", f"y{row}")
        fig.add_shape(type="rect", x0=levels[0], x1=levels[-1], y0=-0.12, y1=0.12, xref=xref, yref=yref,
                      fillcolor=RANGE_COLOR, line_width=0, layer="below")
        fig.add_trace(go.Scatter(
            x=levels, y=np.zeros_like(levels), mode="markers", name="grid level s(q − z)", legendgroup="grid",
            showlegend=first, marker=dict(symbol="line-ns-open", size=16 if len(levels) <= MAX_LEVEL_LINES else 9,
                                          color=LEVEL_COLOR, line_width=1.5 if len(levels) <= MAX_LEVEL_LINES else 1),
            hovertemplate="level %{x:.5g}<extra></extra>"), row=row, col=1)
        if len(levels) <= MAX_CODE_LABELS:
            codes = np.arange(st.qmin, st.qmax + 1) if not st.binary else np.array([-1, 1])
            fig.add_trace(go.Scatter(x=levels, y=np.full_like(levels, -0.32), mode="text", showlegend=False,
                                     text=[f"q={c}" for c in codes], textfont=dict(size=10, color=LEVEL_COLOR),
                                     hoverinfo="skip"), row=row, col=1)
        table = st.table
        hover = [f"w = {w:.5g}<br>q = {q}<br>ŵ = {wh:.5g}<br>error = {e:+.3g}"
                 for w, q, wh, e in zip(table["w"], table["q"], table["w_hat"], table["error"])]
        fig.add_trace(go.Scatter(x=table["w"], y=np.ones(len(table)), mode="markers", name="w (float)",
                                 legendgroup="w", showlegend=first, text=hover, hovertemplate="%{text}<extra></extra>",
                                 marker=dict(color=W_COLOR, size=10)), row=row, col=1)
        fig.add_trace(go.Scatter(x=table["w_hat"], y=np.zeros(len(table)), mode="markers",
                                 name="ŵ = s(q − z) (dequantized)", legendgroup="w_hat", showlegend=first,
                                 text=hover, hovertemplate="%{text}<extra></extra>",
                                 marker=dict(color=W_HAT_COLOR, size=10, symbol="diamond")), row=row, col=1)
        for w, w_hat in zip(table["w"], table["w_hat"]):
            fig.add_annotation(x=w_hat, y=0.1, ax=w, ay=0.9, xref=xref, yref=yref, axref=xref, ayref=yref,
                               showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1.2, arrowcolor=W_HAT_COLOR,
                               opacity=0.8, text="")
        fig.update_yaxes(row=row, col=1, range=[-0.5, 1.35], tickvals=[0, 1], ticktext=["grid ŵ", "w"],
                         showgrid=False, zeroline=False, fixedrange=True)
    fig.update_xaxes(title_text="real value (same units as w)", row=len(steps), col=1)
    fig.update_xaxes(zeroline=True)
    return _layout(fig, "Where each value lands: w → nearest level", height=230 + 190 * len(steps))


def layer_histogram(steps: LayerSteps, layer: str) -> go.Figure:
    """The layer's weights as pre-binned bars, the per-tensor grid levels and its clip range."""
    counts, edges = steps.counts, steps.edges
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    top = max(int(counts.max(initial=0)), 1) * 1.08
    fig = go.Figure()
    fig.add_bar(x=centers, y=counts, width=widths, name=f"weights ({steps.n_weights:,})",
                marker=dict(color=W_COLOR, line_width=0), opacity=0.8,
                hovertemplate="%{x:.4g}: %{y} weights<extra></extra>")
    levels = steps.levels
    if len(levels) <= MAX_LEVEL_LINES:
        xs = np.repeat(levels, 3).astype(object)
        ys = np.tile(np.array([0.0, top, None], dtype=object), len(levels))
        xs[2::3] = None
        fig.add_scatter(x=xs, y=ys, mode="lines", name=f"{len(levels)} grid levels",
                        line=dict(color=LEVEL_COLOR, width=1), hoverinfo="skip")
    else:
        fig.add_scatter(x=levels, y=np.zeros_like(levels), mode="markers", name=f"{len(levels)} grid levels (ticks)",
                        marker=dict(symbol="line-ns-open", size=10, color=LEVEL_COLOR), hoverinfo="skip")
    x0, x1 = float(edges[0]), float(edges[-1])
    span = x1 - x0
    if not is_binary(steps.spec):  # binarization has two levels, no clip range
        for a, b in ((min(x0, steps.lo) - 0.02 * span, steps.lo), (steps.hi, max(x1, steps.hi) + 0.02 * span)):
            if b > a:
                fig.add_vrect(x0=a, x1=b, fillcolor=CLIP_COLOR, line_width=0, layer="below")
        for x in (steps.lo, steps.hi):
            fig.add_vline(x=x, line=dict(color=CLIP_LINE, width=1.5, dash="dash"))
        fig.add_annotation(x=(steps.lo + steps.hi) / 2, y=1, yref="paper", yanchor="bottom", showarrow=False,
                           text=f"clip range [{_fmt(steps.lo)}, {_fmt(steps.hi)}] (dashed); outside saturates",
                           font=dict(color=CLIP_LINE))
    fig.update_xaxes(title_text="weight value w", range=[min(x0, steps.lo) - 0.03 * span,
                                                        max(x1, steps.hi) + 0.03 * span])
    fig.update_yaxes(title_text="weights per bin (count)", range=[0, top])
    fig.update_layout(bargap=0)
    return _layout(fig, f"{layer}: weights, per-tensor grid ({steps.spec.label}, {steps.spec.range_method})",
                   height=380)


def clip_chart(sweep: pd.DataFrame, methods: pd.DataFrame, current: dict, ratio: float) -> go.Figure:
    """Clipping, rounding and total MSE against the clip ratio; the current ratio and the
    ratios the range methods pick marked. Log y: the three curves span decades."""
    fig = go.Figure()
    series = (("clip_mse", "clipping error (outside the range)", CLIP_LINE, "dash"),
              ("round_mse", "rounding error (inside the range)", ROUND_COLOR, "dot"),
              ("mse", "total MSE", TOTAL_COLOR, "solid"))
    for column, name, color, dash in series:
        y = sweep[column].where(sweep[column] > 0)  # log axis: exact zeros drop out
        fig.add_scatter(x=sweep["ratio"], y=y, mode="lines", name=name, line=dict(color=color, dash=dash, width=2.5),
                        hovertemplate="ratio %{x:.2f}: %{y:.3g}<extra>" + name + "</extra>")
    fig.add_vline(x=ratio, line=dict(color="rgba(128,128,128,0.9)", width=1.5, dash="dot"))
    fig.add_scatter(x=[ratio], y=[current["mse"]], mode="markers", name=f"slider: ratio {ratio:.2f}",
                    marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(color=TOTAL_COLOR, width=3)),
                    hovertemplate=f"ratio {ratio:.2f}: total MSE {current['mse']:.3g}<extra></extra>")
    ordered = methods.sort_values("ratio", kind="stable")
    positions = ["top center" if i % 2 == 0 else "bottom center" for i in range(len(ordered))]  # labels apart
    for row, position in zip(ordered.itertuples(), positions):
        fig.add_scatter(x=[row.ratio], y=[row.mse], mode="markers+text", name=f"{row.method}: ratio {row.ratio:.2f}",
                        text=[row.method], textposition=position, cliponaxis=False,
                        marker=dict(size=11, symbol="diamond", color=METHOD_COLORS.get(row.method, W_COLOR),
                                    line=dict(color="white", width=1)),
                        textfont=dict(color=METHOD_COLORS.get(row.method, W_COLOR)),
                        hovertemplate=f"{row.method}: range [{row.lo:.4g}, {row.hi:.4g}], "
                                      f"ratio {row.ratio:.3f}, MSE {row.mse:.3g}<extra></extra>")
    fig.update_xaxes(title_text="clip ratio (clip range ÷ full min/max range)", range=[0, 1.03])
    fig.update_yaxes(title_text="mean squared error (weight units², log)", type="log", exponentformat="power")
    _layout(fig, "Clipping against rounding: shrink the range, the step gets finer", height=540)
    fig.update_layout(margin=dict(b=110))  # two rows of legend: curves, then the methods' picks
    return fig


def mistakes_chart(table: pd.DataFrame, bits: int) -> go.Figure:
    """Codes from the wrong `round(w * 2^k)` and the correct symmetric codes, with the signed
    b-bit range shaded: everything outside it overflows."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    fig = go.Figure()
    fig.add_hrect(y0=lo, y1=hi, fillcolor=RANGE_COLOR, line_width=0, layer="below")
    fig.add_annotation(x=0, xref="paper", y=hi, yanchor="bottom", xanchor="left", showarrow=False,
                       text=f"{bits}-bit signed range [{lo}, {hi}]", font=dict(color=TOTAL_COLOR))
    fig.add_scatter(x=table["w"], y=table["wrong_q"], mode="markers", name="wrong: round(w · 2^k)",
                    marker=dict(symbol="x", size=12, color=CLIP_LINE),
                    hovertemplate="w = %{x:.4g}: round(w·2^k) = %{y}<extra></extra>")
    fig.add_scatter(x=table["w"], y=table["q"], mode="markers", name="correct: round(w · 1/s)",
                    marker=dict(size=10, color=TOTAL_COLOR),
                    hovertemplate="w = %{x:.4g}: q = %{y}<extra></extra>")
    fig.update_xaxes(title_text="w (toy tensor value)")
    fig.update_yaxes(title_text="integer code")
    return _layout(fig, f"Codes at k = {bits}: the wrong formula leaves the {bits}-bit range", height=380)
