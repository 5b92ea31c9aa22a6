"""Plotly figures for the Probe page: a feature's activation along a text, steering's effect on the next
token, the KL from the default along a continuation, and dose-response curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

METRICS = {"probability": "probability of the target token", "activation": "the feature's own activation",
           "kl": "KL from the default (nats)"}


def activation_along_text(tokens: list[str], acts: np.ndarray, feature: int, others: dict[str, np.ndarray] | None = None
                          ) -> go.Figure:
    """One feature's activation on every token (and, for an ensemble, each member's matched feature)."""
    x = list(range(len(tokens)))
    fig = go.Figure(go.Bar(x=x, y=acts, name=f"feature {feature}", hovertext=[repr(t) for t in tokens]))
    for name, values in (others or {}).items():
        fig.add_trace(go.Scatter(x=x, y=values, mode="lines+markers", name=name))
    return fig.update_layout(title=f"Activation of feature {feature} on each token", xaxis_title="token",
                             yaxis_title="activation", height=260, legend=dict(orientation="h", y=-0.3))


def logit_change_bars(changes: pd.DataFrame) -> go.Figure:
    """The next-token logits the edit raised most and lowered most (steered minus default)."""
    fig = go.Figure(go.Bar(y=[repr(t) for t in changes.token], x=changes.change, orientation="h",
                           marker_color=np.where(changes.change >= 0, "#2ca02c", "#d62728"),
                           customdata=np.stack([changes.default_prob, changes.steered_prob], -1),
                           hovertemplate="%{y}: %{x:+.2f} (p %{customdata[0]:.3g} → %{customdata[1]:.3g})"))
    return fig.update_layout(title="Next-token logit changes after the prompt", xaxis_title="steered − default logit",
                             yaxis=dict(autorange="reversed", tickmode="linear"), height=420)


def kl_along_text(kl: np.ndarray, tokens: list[str], prompt_length: int) -> go.Figure:
    """KL(default || steered) of the next-token distribution at each position of prompt + default text."""
    fig = go.Figure(go.Bar(x=list(range(len(kl))), y=kl, hovertext=[repr(t) for t in tokens]))
    fig.add_vline(x=prompt_length - 0.5, line_dash="dot", annotation_text="continuation")
    return fig.update_layout(title="KL from the default at each position", xaxis_title="position",
                             yaxis_title="nats", height=260)


def dose_response_figure(curve: pd.DataFrame, metric: str = "probability") -> go.Figure:
    """A metric of the edited run against the edit's coefficient (add) or value (clamp)."""
    fig = go.Figure(go.Scatter(x=curve.value, y=curve[metric], mode="lines+markers", name="steered"))
    if metric == "probability":
        fig.add_hline(y=float(curve.default_probability.iloc[0]), line_dash="dot", annotation_text="default")
    title = METRICS[metric] + (f" {curve.target_token.iloc[0]!r}" if metric == "probability" else "")
    return fig.update_layout(title=f"Dose-response: {title}", height=300, yaxis_title=metric,
                             xaxis_title="coefficient c" if curve.kind.iloc[0] == "add" else "clamped value v")
