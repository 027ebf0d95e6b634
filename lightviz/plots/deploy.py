"""The Deploy panel's figures: measured latency per engine and batch, and cost per layer."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from lightviz.plots.style import (
    COMPRESSED_COLOR,
    FLOAT_COLOR,
    FLOAT_MODEL_COLOR,
    FRONT_COLOR,
    layout,
)

ENGINE_COLORS = {"onnxruntime float": FLOAT_COLOR, "onnxruntime plan": COMPRESSED_COLOR,
                 "onnxruntime plan, weights widened at load": FRONT_COLOR, "torch eager float": FLOAT_MODEL_COLOR}


def latency_figure(frame: pd.DataFrame, threads: int, wa: str) -> go.Figure:
    """Milliseconds per input (median, whiskers the middle half of the runs), grouped by batch size.

    Args:
        frame: Benchmark.frame(): engine, batch, median_ms, q1_ms, q3_ms, min_ms, max_ms, runs.
    """
    fig = go.Figure()
    for engine, rows in frame.groupby("engine", sort=False):
        per = rows["batch"].astype(float)
        median = rows["median_ms"] / per
        fig.add_bar(x=[f"batch {b}" for b in rows["batch"]], y=median.tolist(), name=engine,
                    marker_color=ENGINE_COLORS.get(engine, FLOAT_COLOR),
                    error_y=dict(type="data", symmetric=False, array=(rows["q3_ms"] / per - median).tolist(),
                                 arrayminus=(median - rows["q1_ms"] / per).tolist(), thickness=1, width=3),
                    text=[f"{v:.3g} ms" for v in median], textposition="outside", cliponaxis=False,
                    customdata=list(zip(rows["median_ms"], rows["runs"], rows["min_ms"], rows["max_ms"])),
                    hovertemplate=engine + "<br>%{x}: %{y:.4g} ms per input<br>%{customdata[0]:.4g} ms per batch, "
                                           "median of %{customdata[1]} runs<br>fastest %{customdata[2]:.4g} ms, "
                                           "slowest %{customdata[3]:.4g} ms<extra></extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(rangemode="tozero")
    return layout(fig, f"Measured latency per input · {wa} · onnxruntime CPU, {threads} threads "
                       "(whiskers: middle half of the runs)", "", "milliseconds per input", height=330,
                  legend_rows=2)


def cost_figure(costs: pd.DataFrame) -> go.Figure:
    """Bit-operations per layer, float32 against the plan (log scale), MACs in the hover."""
    fig = go.Figure()
    hover = "%{x}<br>%{y:.3s} bit-operations<br>%{customdata[0]:,} MACs, %{customdata[1]} x %{customdata[2]} " \
            "bits<extra>%{fullData.name}</extra>"
    fig.add_bar(x=costs["name"].tolist(), y=costs["float_bit_operations"].tolist(), name="float32 (32 x 32 bits)",
                marker_color=FLOAT_COLOR, customdata=[[m, 32, 32] for m in costs["macs"]], hovertemplate=hover)
    fig.add_bar(x=costs["name"].tolist(), y=costs["bit_operations"].tolist(), name="this plan",
                marker_color=COMPRESSED_COLOR,
                customdata=costs[["macs", "weight_bits", "act_bits"]].values.tolist(), hovertemplate=hover)
    fig.update_layout(barmode="group")
    fig.update_yaxes(type="log")
    return layout(fig, "Bit-operations per layer (MACs x weight bits x activation bits, one input)", "layer",
                  "bit-operations (log scale)", height=300)
