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
