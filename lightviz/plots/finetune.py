"""Plotly figures of fine-tuning and distillation: data in, go.Figure out (no Streamlit).

>>> import pandas as pd
>>> history = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "test_accuracy": [0.8, 0.9]})
>>> [trace.name for trace in history_figure(history, before=0.3, float_accuracy=0.99).data]
['test accuracy', 'loss']
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lightviz.plots.style import (
    COMPRESSED_COLOR,
    CURRENT_COLOR,
    FLOAT_COLOR,
    FLOAT_MODEL_COLOR,
    FRONT_COLOR,
    log_ticks,
    plain,
)

FINETUNED_COLOR = "#54A24B"  # green: accuracy won back
RUN_COLORS = {"distilled": FINETUNED_COLOR, "baseline": COMPRESSED_COLOR}


def history_figure(history: pd.DataFrame, before: float | None = None, float_accuracy: float | None = None,
                   epochs: int | None = None) -> go.Figure:
    """Test accuracy in % (left axis) and training loss (right axis, dotted) per epoch.

    Args:
        history: rows of epoch, loss, test_accuracy (and `run` for distillation: one pair of
            lines per run).
        before: accuracy before training, drawn as a dashed line (and as epoch 0).
        float_accuracy: the float model's accuracy, drawn as a dotted line.
        epochs: the planned number of epochs, so the x axis does not grow while training.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    runs = list(history.groupby("run", sort=False)) if "run" in history else [("", history)]
    for run, rows in runs:
        color = RUN_COLORS.get(run, FINETUNED_COLOR)
        suffix = f" ({run})" if run else ""
        epochs_x, accuracy = rows["epoch"].tolist(), (rows["test_accuracy"] * 100).tolist()
        if before is not None and not run:
            epochs_x, accuracy = [0] + epochs_x, [before * 100] + accuracy
        fig.add_scatter(x=epochs_x, y=accuracy, name=f"test accuracy{suffix}", mode="lines+markers",
                        line=dict(color=color, width=2.5), marker=dict(size=7),
                        hovertemplate="epoch %{x}: %{y:.2f}%<extra></extra>", secondary_y=False)
        fig.add_scatter(x=rows["epoch"].tolist(), y=rows["loss"].tolist(), name=f"loss{suffix}", mode="lines+markers",
                        line=dict(color=FLOAT_COLOR if not run else color, dash="dot", width=1.5),
                        marker=dict(size=5, symbol="square"), hovertemplate="epoch %{x}: loss %{y:.4f}<extra></extra>",
                        secondary_y=True)
    for value, text, color, dash in ((before, "before", CURRENT_COLOR, "dash"),
                                     (float_accuracy, "float", FLOAT_MODEL_COLOR, "dot")):
        if value is not None:
            fig.add_hline(y=value * 100, line=dict(color=color, dash=dash, width=1.5), secondary_y=False,
                          annotation=dict(text=f"{text} {value:.2%}", font=dict(size=11, color=color)),
                          annotation_position="bottom left" if text == "float" else "top right")
    last = max([int(history["epoch"].max()) if len(history) else 1, epochs or 1])
    fig.update_xaxes(title_text="epoch", range=[-0.3 if before is not None else 0.7, last + 0.3],
                     dtick=max(1, -(-last // 10)))
    fig.update_yaxes(title_text="test accuracy (%)", secondary_y=False, range=[0, 102], tickmode="linear",
                     tick0=0, dtick=20)
    fig.update_yaxes(title_text="training loss (dotted)", secondary_y=True, rangemode="tozero", showgrid=False,
                     tickmode="auto")
    top = 70 + 24 * (len(runs) - 1)  # legend rows: one per run
    fig.update_layout(height=380 + top - 70, margin=dict(l=10, r=10, t=top, b=10),
                      title=dict(text="Test accuracy and training loss per epoch", x=0, xanchor="left", y=1,
                                 yref="container", yanchor="top", pad=dict(t=12)),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    return fig


def add_finetuned_points(fig: go.Figure, rows: pd.DataFrame, y: str = "accuracy") -> go.Figure:
    """Add fine-tuned results to a Trade-offs figure (accuracy % against size); returns `fig`.

    Each row (size_bytes, accuracy_before, `y`, label) becomes a green triangle, with a thin
    arrow from the plan's accuracy before fine-tuning. Points carry customdata ["finetuned",
    row index] so a click can find the row's plan.
    """
    if rows is None or not len(rows):
        return fig
    for row in rows.itertuples():
        fig.add_annotation(x=_log10(row.size_bytes), y=getattr(row, y) * 100, ax=_log10(row.size_bytes),
                           ay=row.accuracy_before * 100, xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=2, arrowwidth=1.5, arrowcolor=FRONT_COLOR, opacity=0.7,
                           standoff=9, startstandoff=10, text="")
    fig.add_scatter(x=rows["size_bytes"].tolist(), y=(rows[y] * 100).tolist(), mode="markers", name="fine-tuned",
                    text=rows["label"].tolist(), customdata=[["finetuned", int(i)] for i in rows.index],
                    marker=dict(size=15, symbol="triangle-up", color=FINETUNED_COLOR,
                                line=dict(width=1, color="white")),
                    hovertemplate="%{text}<br>%{x:,.0f} bytes<br>after fine-tuning: %{y:.2f}%<extra></extra>")
    return fig


def distill_figure(table: pd.DataFrame) -> go.Figure:
    """Accuracy in % against float size for the teacher and the students (DistillResult.table())."""
    colors = {"teacher": FLOAT_MODEL_COLOR, "student, distilled": FINETUNED_COLOR,
              "student, labels only": COMPRESSED_COLOR}
    symbols = {"teacher": "diamond", "student, distilled": "triangle-up", "student, labels only": "circle"}
    fig = go.Figure()
    for row in table.itertuples():
        fig.add_scatter(x=[row.size_bytes], y=[row.accuracy * 100], mode="markers+text", name=f"{row.role}",
                        text=[f"{plain(row.model)}: {row.accuracy:.2%}"],
                        textposition="middle left" if row.role == "teacher" else "middle right",
                        marker=dict(size=16, color=colors.get(row.role, FLOAT_COLOR),
                                    symbol=symbols.get(row.role, "circle")),
                        hovertemplate=f"{plain(row.model)} ({row.role})<br>{row.params:,} parameters<br>"
                                      "%{x:,.0f} bytes<br>%{y:.2f}%<extra></extra>")
    sizes = table["size_bytes"].astype(float)
    ticks = log_ticks(sizes.min() / 2, sizes.max() * 2)
    fig.update_xaxes(type="log", title_text="float32 size (bytes, log scale)", tickvals=ticks,
                     ticktext=[f"{t / 1000:g}k" if t >= 1000 else f"{t:g}" for t in ticks],
                     range=[_log10(sizes.min()) - 0.3, _log10(sizes.max()) + 0.3])  # room for the labels
    low = float(table["accuracy"].min()) * 100
    fig.update_yaxes(title_text="test accuracy (%)", range=[max(0.0, low - 5), 100.5])
    fig.update_layout(height=404, margin=dict(l=10, r=10, t=94, b=10),  # as tall as history_figure of 2 runs
                      title=dict(text="Teacher and student: accuracy against size", x=0, xanchor="left", y=1,
                                 yref="container", yanchor="top", pad=dict(t=12)),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    return fig


def _log10(value: float) -> float:
    """Annotations on a log axis take log10 coordinates."""
    return math.log10(max(value, 1.0))
