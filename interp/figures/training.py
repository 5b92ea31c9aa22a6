"""Plotly figures for training runs: one logged metric over steps, one line per ensemble member."""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go


def metric_curve_figure(metrics: pd.DataFrame, column: str, title: str) -> go.Figure:
    """``column`` of ``metrics.jsonl`` rows over ``step``: the ``member<i>_<column>`` lines when logged per member,
    else the run-level column (gaps bridged: some metrics are logged every few steps only)."""
    members = [c for c in metrics.columns if re.fullmatch(rf"member\d+_{re.escape(column)}", c)]
    traces = [go.Scatter(x=metrics.step, y=metrics[c], mode="lines", name=c.split("_")[0], connectgaps=True)
              for c in members] or [go.Scatter(x=metrics.step, y=metrics[column], mode="lines+markers", name=column,
                                               connectgaps=True)]
    fig = go.Figure(traces)
    return fig.update_layout(title=title, xaxis_title="step", height=260, legend=dict(orientation="h", y=-0.35))
