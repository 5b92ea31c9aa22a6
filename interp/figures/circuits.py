"""Plotly figures for the circuit analyses: attention patterns, head scores, composition, DLA, logit lens, SVD tracing,
patching, feature circuits. A figure with several heat maps gives them one shared colour axis (one colour bar)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from interp.store.errors import InputError


def _heatmap(values, x, y, title: str, colorscale: str = "RdBu", zmid: float | None = 0.0) -> go.Heatmap:
    return go.Heatmap(z=values, x=x, y=y, colorscale=colorscale, zmid=zmid, name=title)


def attention_pattern_figure(pattern: Sequence[Sequence[float]] | np.ndarray, tokens: Sequence[str], layer: int,
                             head: int) -> go.Figure:
    """One head's attention pattern ``[query, key]`` over a prompt's ``tokens`` (rows: queries, top to bottom),
    each axis labelled ``{position}:{token!r}`` so repeated tokens stay apart."""
    values = np.asarray(pattern, dtype=float)
    if values.shape != (len(tokens), len(tokens)):
        raise InputError(f"attention pattern of shape {values.shape} does not match {len(tokens)} tokens: "
                         "pass one head's [query, key] pattern of this prompt")
    labels = [f"{i}:{t!r}" for i, t in enumerate(tokens)]
    fig = go.Figure(_heatmap(values, labels, labels, "attention", "Blues", None).update(
        zmin=0, zmax=1, colorbar=dict(title="attention")))
    fig.update_layout(title=f"L{layer}H{head} attention ({len(tokens)} tokens)", height=480,
                      xaxis_title="key (attended to)", yaxis_title="query")
    return fig.update_yaxes(autorange="reversed")


def head_scores_figure(frame: pd.DataFrame) -> go.Figure:
    """One layer x head heat map per score column of ``head_scores_frame``."""
    scores = [c for c in frame.columns if c not in ("layer", "head")]
    fig = make_subplots(1, len(scores), subplot_titles=scores)
    for i, score in enumerate(scores):
        table = frame.pivot(index="layer", columns="head", values=score)
        fig.add_trace(_heatmap(table.values, table.columns, table.index, score, "Blues", None).update(
            coloraxis="coloraxis"), 1, i + 1)
    # one colour bar for all panels: every score is an attention weight in [0, 1]
    fig.update_layout(title="Head scores on repeated random tokens", height=320,
                      coloraxis=dict(colorscale="Blues", cmin=0, cmax=1,
                                     colorbar=dict(title="score", len=0.75, y=0.4, yanchor="middle")))
    return fig.update_xaxes(title="head", dtick=1).update_yaxes(title="layer", autorange="reversed", dtick=1)


def composition_figure(scores: dict[str, Tensor]) -> go.Figure:
    """Q/K/V composition as ``(layer_a, head_a) x (layer_b, head_b)`` heat maps."""
    n_layers, n_heads = scores["K"].shape[:2]
    labels = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]
    fig = make_subplots(1, 3, subplot_titles=[f"{m}-composition" for m in "QKV"])
    for i, mode in enumerate("QKV"):
        values = scores[mode].reshape(n_layers * n_heads, n_layers * n_heads).numpy()
        fig.add_trace(_heatmap(values, labels, labels, mode, "Blues", None).update(coloraxis="coloraxis"), 1, i + 1)
    fig.update_layout(title="Composition scores (rows: earlier head A, columns: later head B)", height=380,
                      coloraxis=dict(colorscale="Blues", colorbar=dict(title="score")))  # one shared colour bar
    return fig.update_yaxes(autorange="reversed")


def dla_figure(frame: pd.DataFrame) -> go.Figure:
    """Direct logit attribution per head (mean over positions) from ``dla_frame``."""
    table = frame.groupby(["layer", "head"]).dla.mean().unstack()
    return go.Figure(_heatmap(table.values, table.columns, table.index, "DLA")).update_layout(
        title="Direct logit attribution to the next token", xaxis_title="head", yaxis_title="layer")


def logit_lens_figure(log_probs: Tensor) -> go.Figure:
    """Mean log-probability of the next token read off the residual before each layer and at the end."""
    means = log_probs.mean(dim=1)
    fig = go.Figure()
    for layer, row in enumerate(means):
        fig.add_trace(
            go.Scatter(y=row.numpy(), mode="lines", name=f"before L{layer}" if layer < len(means) - 1 else "final")
        )
    return fig.update_layout(title="Logit lens", xaxis_title="position", yaxis_title="log p(next token)")


def dimensionality_figure(frame: pd.DataFrame) -> go.Figure:
    """Histogram of ``|S|`` (singular components carrying the score) per head."""
    fig = go.Figure()
    for (layer, head), group in frame.groupby(["layer", "head"]):
        fig.add_trace(go.Histogram(x=group["size"], name=f"L{layer}H{head}", opacity=0.6))
    return fig.update_layout(
        barmode="overlay", title="Signal dimensionality |S| per head", xaxis_title="|S|", yaxis_title="destinations"
    )


def dimensionality_box_figure(frame: pd.DataFrame) -> go.Figure:
    """One box of ``|S|`` (singular components of ``W_QK`` carrying the score) per head, from the
    ``signal_dimensionality`` table (columns ``layer``, ``head``, ``size``), heads in (layer, head) order."""
    fig = go.Figure(
        [go.Box(y=group["size"], name=f"L{layer}H{head}") for (layer, head), group in frame.groupby(["layer", "head"])]
    )
    return fig.update_layout(
        title="Signal dimensionality |S|: singular components of W_QK carrying each score", yaxis_title="|S|"
    )


def edge_graph_figure(edges: list[dict] | pd.DataFrame, weight: str = "contribution") -> go.Figure:
    """Sankey diagram of head-to-head (or feature) edges with ``source``, ``target`` and a weight column."""
    rows = edges.to_dict("records") if isinstance(edges, pd.DataFrame) else edges
    names = sorted({r["source"] for r in rows} | {r["target"] for r in rows})
    index = {name: i for i, name in enumerate(names)}
    link = dict(
        source=[index[r["source"]] for r in rows],
        target=[index[r["target"]] for r in rows],
        value=[abs(r[weight]) for r in rows],
        label=[f"{r.get('side', '')} {r[weight]:.3g}" for r in rows],
        color=["rgba(31,119,180,0.5)" if r[weight] >= 0 else "rgba(214,39,40,0.5)" for r in rows],
    )
    return go.Figure(go.Sankey(node=dict(label=names, pad=12), link=link)).update_layout(title="Communication graph")


def head_edges_from_svd(edges: pd.DataFrame, side: str = "key", min_fraction: float = 0.05) -> list[dict]:
    """Head-to-head rows of ``trace_head_edges`` as Sankey edges (targets named ``L{layer}H{head}``)."""
    heads = edges[(edges.source_layer >= 0) & (edges.side == side) & (edges.fraction.abs() >= min_fraction)]
    return [
        {"source": r.source, "target": f"L{r.layer}H{r.head}", "side": side, "contribution": r.contribution}
        for r in heads.itertuples()
    ]


def patching_figure(values: Tensor, x_title: str, y_title: str, title: str) -> go.Figure:
    """Heat map of patching effects (e.g. residual ``[layer, pos]`` or heads ``[layer, head]``)."""
    return _effect_map(
        values.numpy(), list(range(values.shape[1])), list(range(values.shape[0])), x_title, y_title, title
    )


def patching_table_figure(
    frame: pd.DataFrame, columns: str, title: str, index: str = "layer", value: str = "effect"
) -> go.Figure:
    """Heat map of a stored patching table (``grid_frame`` rows: e.g. ``patch_residual`` with ``layer, pos, effect``
    or ``patch_heads`` with ``layer, head, effect``): ``index`` down, ``columns`` across."""
    table = frame.pivot(index=index, columns=columns, values=value)
    return _effect_map(table.values, list(table.columns), list(table.index), columns, index, title, value)


def _effect_map(values, x, y, x_title: str, y_title: str, title: str, value: str = "effect") -> go.Figure:
    """A signed heat map centred on zero, first row on top; integer axes tick every integer."""
    fig = go.Figure(_heatmap(values, x, y, title).update(colorbar=dict(title=value, len=0.75, y=0.4, yanchor="middle")))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title).update_yaxes(autorange="reversed", dtick=1)
    return fig.update_xaxes(dtick=1) if x_title in ("head", "layer") else fig


def agreement_figure(exact: Tensor, approx: Tensor, title: str) -> go.Figure:
    """Scatter of attribution patching against exact patching."""
    fig = go.Figure(go.Scatter(x=exact.flatten().numpy(), y=approx.flatten().numpy(), mode="markers"))
    return fig.update_layout(title=title, xaxis_title="exact patching", yaxis_title="attribution patching")


def feature_circuit_figure(graph: dict) -> go.Figure:
    """Sankey of a ``feature_circuit`` graph (features and error nodes into the metric)."""
    return edge_graph_figure(graph["edges"], weight="weight").update_layout(
        title=f"Feature circuit ({graph['method']})"
    )


def faithfulness_figure(
    curve: pd.DataFrame, title: str = "Feature circuit: faithfulness and completeness"
) -> go.Figure:
    """The paper's curves: faithfulness of the top-n nodes and of their complement against circuit size."""
    fig = go.Figure(
        [
            go.Scatter(x=curve.n_nodes, y=curve.faithfulness, mode="lines+markers", name="faithfulness (C)"),
            go.Scatter(x=curve.n_nodes, y=curve.completeness, mode="lines+markers", name="completeness (M \\ C)"),
        ]
    )
    fig.add_hline(y=1.0, line_dash="dot").add_hline(y=0.0, line_dash="dot")
    return fig.update_layout(
        title=title, xaxis_title="nodes in the circuit", yaxis_title="(m(·) - m(∅)) / (m(M) - m(∅))", xaxis_type="log"
    )
