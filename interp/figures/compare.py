"""Plotly figures for comparing SAEs: matched-cosine histograms (live features matched among live ones)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def matched_cosine_figure(a_to_b: pd.DataFrame, b_to_a: pd.DataFrame, threshold: float | None = None,
                          column: str = "cosine") -> go.Figure:
    """Histograms of each side's matched cosine (``matches`` rows, ``column``: ``cosine`` over all latents or
    ``live_cosine`` over live ones), overlaid, with the presence threshold."""
    fig = go.Figure(
        [
            go.Histogram(x=a_to_b[column], xbins=dict(start=0, end=1.0001, size=0.025), name="A→B", opacity=0.7),
            go.Histogram(x=b_to_a[column], xbins=dict(start=0, end=1.0001, size=0.025), name="B→A", opacity=0.7),
        ]
    )
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"threshold {threshold:.2f}")
    what = "live features matched among live features" if column == "live_cosine" else "all latents, dead included"
    return fig.update_layout(
        title=f"Matched decoder cosine ({what})",
        xaxis_title="cosine with the Hungarian match",
        yaxis_title="features",
        barmode="overlay",
        xaxis_range=[0, 1.0],
        legend=dict(orientation="h", y=-0.25),
    )


def live_cosine_histogram(matches: pd.DataFrame, title: str, thresholds: tuple[float, ...] = (0.7, 0.9)) -> go.Figure:
    """One side's live matched cosines (``live_cosine`` of its live features) with the share thresholds marked."""
    live = matches[matches.alive.astype(bool)]
    fig = go.Figure(
        go.Histogram(
            x=live.live_cosine,
            xbins=dict(start=0, end=1.0001, size=0.025),
            name="live features",
            marker_color="#1f77b4",
        )
    )
    for t in thresholds:
        fig.add_vline(x=t, line_dash="dash", line_color="grey", annotation_text=f"{t}", annotation_position="top")
    return fig.update_layout(
        title=title,
        xaxis_title="cosine with its match among the other member's live features",
        yaxis_title="live features",
        xaxis_range=[0, 1.0],
        showlegend=False,
        height=300,
    )


def explanation_score_figure(scores: dict[str, pd.DataFrame], score: str = "detection") -> go.Figure:
    """Per SAE, the histogram of one explanation score over its explained features, and its random baseline's."""
    traces = []
    for name, table in scores.items():
        traces.append(go.Histogram(x=table[score], nbinsx=30, name=f"{name}", opacity=0.7))
        traces.append(go.Histogram(x=table[f"baseline_{score}"], nbinsx=30, name=f"{name}: random baseline",
                                   opacity=0.4))
    return go.Figure(traces).update_layout(title=f"Explanation {score} on held-out windows, against the baseline",
                                           xaxis_title=score, yaxis_title="features", barmode="overlay",
                                           legend=dict(orientation="h", y=-0.25))  # below: clear of the toolbar
