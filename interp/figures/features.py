"""Plotly figures for feature dashboards, built from the rows ``interp.store.tables`` returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def frequency_histogram(features: pd.DataFrame, bins: int = 60) -> go.Figure:
    """Distribution of log10 firing frequency over features (dead features left out)."""
    alive = features[features.n_fires > 0]
    fig = go.Figure(go.Histogram(x=np.log10(alive.frequency), nbinsx=bins))
    return fig.update_layout(title=f"Feature density ({len(features) - len(alive)} dead)",
                             xaxis_title="log10 firing frequency", yaxis_title="features")


def activation_histogram(histogram: pd.DataFrame, feature: int | None = None) -> go.Figure:
    """One feature's activation histogram (log-spaced bins, bars at their geometric centres)."""
    centre = np.sqrt(histogram.bin_left * histogram.bin_right)
    fig = go.Figure(go.Bar(x=centre, y=histogram["count"], width=histogram.bin_right - histogram.bin_left))
    title = "Activation histogram" + (f" of feature {feature}" if feature is not None else "")
    # decades alone label a range under two decades once or not at all: then 1, 2 and 5 of each decade too
    span = np.log10(histogram.bin_right.max() / histogram.bin_left.min()) if len(histogram) else 0.0
    ticks = 1 if span >= 2 else "D2"
    return fig.update_layout(title=title, xaxis=dict(type="log", dtick=ticks, exponentformat="power"),
                             xaxis_title="activation (log scale)", yaxis_title="tokens", height=280)


def logit_bars(logits: pd.DataFrame) -> go.Figure:
    """Top promoted (positive) and suppressed (negative) tokens of ``W_dec @ W_U``, in the table's rank order."""
    pos, neg = logits[logits.sign == "positive"], logits[logits.sign == "negative"]
    names = [f"{i}. {t!r}" for i, t in enumerate(list(pos.token) + list(neg.token), 1)]  # unique: every bar named
    fig = go.Figure([go.Bar(y=names[:len(pos)], x=pos.logit, orientation="h", name="promotes"),
                     go.Bar(y=names[len(pos):], x=neg.logit, orientation="h", name="suppresses")])
    return fig.update_layout(title="Logit effects (decoder direction · W_U)", height=max(320, 22 * len(names) + 120),
                             barmode="overlay", xaxis_title="logit change per unit activation",
                             yaxis=dict(autorange="reversed", tickmode="array", tickvals=names, ticktext=names),
                             legend=dict(orientation="h", y=-0.15))


def example_heatmap(examples: pd.DataFrame, max_rows: int = 20) -> go.Figure:
    """Top examples as rows of context tokens coloured by this feature's activation."""
    rows = examples.head(max_rows)
    width = max((len(c) for c in rows.context_tokens), default=0)
    z = np.full((len(rows), width), np.nan)
    text = np.full((len(rows), width), "", dtype=object)
    for i, (tokens, acts) in enumerate(zip(rows.context_tokens, rows.context_acts)):
        z[i, :len(acts)] = acts
        text[i, :len(tokens)] = tokens
    fig = go.Figure(go.Heatmap(z=z, text=text, texttemplate="%{text}", colorscale="Oranges", showscale=True))
    return fig.update_layout(title="Top activating contexts", yaxis_autorange="reversed",
                             xaxis_visible=False, yaxis_title="example")
