"""Colours and layout shared by every figure.

Colours are explicit and chosen to read on both light and dark backgrounds (the app keeps the
Streamlit theme on, which sets the background and fonts).
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go

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


def plain(text: object) -> str:
    """`text` as Plotly shows it literally. Plotly renders a subset of HTML in every text it
    draws (<b>, <br>, <a href=...>, entities), so a layer, class, file or model name that came
    from a user goes through this first.

    >>> plain('<a href="https://evil.example">x</a> & y')
    '&lt;a href="https://evil.example"&gt;x&lt;/a&gt; &amp; y'
    """
    return html.escape(str(text), quote=False)


def layout(fig: go.Figure, title: str, x: str, y: str, height: int = 360, legend_rows: int = 1) -> go.Figure:
    """Title on top, then a horizontal legend above the plot (room for `legend_rows` rows).

    The title is plain text (it often names a layer): see `plain`.
    """
    top = 48 + 22 * legend_rows
    fig.update_layout(title=dict(text=plain(title), x=0, xanchor="left", y=1, yref="container", yanchor="top",
                                 pad=dict(t=12)),
                      height=height + top, margin=dict(l=10, r=10, t=top, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


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


def short_number(value: float) -> str:
    """10000 -> '10k', 2500000 -> '2.5M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def size_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Log-axis ticks in bytes at 1-2-5 steps of KiB or MiB, labelled as the sidebar writes sizes.

    >>> size_ticks(20_000, 100_000)[1]
    ['10 KiB', '20 KiB', '50 KiB', '100 KiB']
    """
    unit, name = (2**20, "MiB") if hi >= 2**20 else (2**10, "KiB") if hi >= 2**10 else (1, "B")
    ticks = log_ticks(lo / unit, hi / unit) if unit > 1 else log_ticks(lo, hi)
    return [t * unit for t in ticks], [f"{t:g} {name}" for t in ticks]

