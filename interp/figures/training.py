"""Plotly figures for training runs: one logged metric over steps, per ensemble member or per run (overlaid)."""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go

FRACTIONS = ("dead_fraction", "mmcs")  # bounded in [0, 1]: drawn on that range, never autoscaled around a constant
# the chart's title names the metric in full; its y axis carries the short name (a long one outgrows a small chart)
AXIS_TITLES = {"loss": "loss (MSE + penalties)", "fvu": "FVU (variance unexplained)", "l0": "L0 (latents per token)",
               "dead_fraction": "dead fraction of latents", "mfr_penalty": "MFR penalty",
               "mmcs": "MMCS (members' mean max cosine)"}
SHORT_TITLES = {"loss": "loss", "fvu": "FVU", "l0": "L0 (latents)", "dead_fraction": "dead fraction",
                "mfr_penalty": "MFR penalty", "mmcs": "MMCS"}
# the title starts over the plot area (never over the y axis' title), and the right margin keeps the last x tick
# clear of the vertical toolbar
TITLE = dict(x=0, xref="paper", xanchor="left")
SMALL_MARGIN = dict(l=55, r=45, t=40, b=40)


def _axes(fig: go.Figure, column: str) -> go.Figure:
    """Step on x; the metric's short name (and for fractions the fixed range [0, 1]) on y."""
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text=SHORT_TITLES.get(column, column))
    if column in FRACTIONS:
        fig.update_yaxes(range=[0, 1])
    return fig


def metric_curve_figure(metrics: pd.DataFrame, column: str, title: str) -> go.Figure:
    """``column`` of ``metrics.jsonl`` rows over ``step``: the ``member<i>_<column>`` lines when logged per member,
    else the run-level column (gaps bridged: some metrics are logged every few steps only). Titled with the
    metric's full name (``title`` for a column without one), its short name on the y axis."""
    members = [c for c in metrics.columns if re.fullmatch(rf"member\d+_{re.escape(column)}", c)]
    traces = [go.Scatter(x=metrics.step, y=metrics[c], mode="lines", name=c.split("_")[0], connectgaps=True)
              for c in members] or [go.Scatter(x=metrics.step, y=metrics[column], mode="lines+markers", name=column,
                                               connectgaps=True)]
    fig = go.Figure(traces)
    fig.update_layout(title=dict(text=AXIS_TITLES.get(column, title), **TITLE), height=280, margin=SMALL_MARGIN,
                      legend=dict(orientation="h", y=-0.4))
    return _axes(fig, column)


def runs_overlay_figure(runs: dict[str, pd.DataFrame], column: str, title: str) -> go.Figure:
    """One line per run: its run-level ``column`` (the members' mean for per-member metrics) over ``step``; a run
    that never logged ``column`` is left out of the chart and named in the title."""
    fig, missing = go.Figure(), []
    for run_id, metrics in runs.items():
        if column not in metrics or metrics[column].isna().all():
            missing.append(run_id)
            continue
        logged = metrics[["step", column]].dropna()
        fig.add_trace(go.Scatter(x=logged.step, y=logged[column], mode="lines+markers", marker=dict(size=4),
                                 name=run_id))
    note = f" ({', '.join(missing)}: not logged)" if missing else ""
    fig.update_layout(title=dict(text=title + note, **TITLE), height=360, margin=dict(r=45),
                      legend=dict(orientation="h", y=-0.25))
    return _axes(fig, column)
