"""Plotly figures for comparing two SAEs: the matched-cosine histograms both ways."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def matched_cosine_figure(a_to_b: pd.DataFrame, b_to_a: pd.DataFrame, threshold: float | None = None) -> go.Figure:
    """Histograms of each side's matched cosine (``matches`` rows), overlaid, with the presence threshold."""
    fig = go.Figure([go.Histogram(x=a_to_b.cosine, nbinsx=40, name="A→B", opacity=0.7),
                     go.Histogram(x=b_to_a.cosine, nbinsx=40, name="B→A", opacity=0.7)])
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash")
    return fig.update_layout(title="Matched cosine (Hungarian matching on decoder directions)", xaxis_title="cosine",
                             yaxis_title="features", barmode="overlay")


def explanation_score_figure(scores: dict[str, pd.DataFrame], score: str = "detection") -> go.Figure:
    """Per SAE, the histogram of one explanation score over its explained features, and its random baseline's."""
    traces = []
    for name, table in scores.items():
        traces.append(go.Histogram(x=table[score], nbinsx=30, name=f"{name}", opacity=0.7))
        traces.append(go.Histogram(x=table[f"baseline_{score}"], nbinsx=30, name=f"{name}: random baseline",
                                   opacity=0.4))
    return go.Figure(traces).update_layout(title=f"Explanation {score} on held-out windows, against the baseline",
                                           xaxis_title=score, yaxis_title="features", barmode="overlay")
