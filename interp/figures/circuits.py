"""Plotly figures for the circuit analyses: attention patterns, head scores, composition, DLA, logit lens, SVD tracing,
patching, feature circuits. A figure with several heat maps gives them one shared colour axis (one colour bar)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.store.errors import InputError

if TYPE_CHECKING:  # the Circuits page draws stored tables without importing torch
    from torch import Tensor


def _colorbar(title: str) -> dict:
    """A colour bar whose title runs along it (clear of the vertical toolbar), three quarters of the plot high."""
    return dict(title=dict(text=title, side="right"), len=0.75, y=0.4, yanchor="middle")


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
        zmin=0, zmax=1, colorbar=_colorbar("attention weight")))
    fig.update_layout(title=f"L{layer}H{head} attention ({len(tokens)} tokens)", height=480,
                      xaxis_title="key (attended to)", yaxis_title="query")
    return fig.update_yaxes(autorange="reversed")


def position_labels(tokens: Sequence[str]) -> list[str]:
    """``{position}:{token!r}`` for each token, so repeated tokens stay apart on an axis."""
    return [f"{i}:{t!r}" for i, t in enumerate(tokens)]


def attention_grid_figure(patterns: Sequence | np.ndarray, tokens: Sequence[str],
                          marked: dict[tuple[int, int], str] | None = None) -> go.Figure:
    """Every head's attention pattern of one prompt as small multiples (``patterns``: ``[layer, head, query, key]``;
    rows: layers, columns: heads), one colour bar for all; the heads in ``marked`` (``{(layer, head): role}``)
    are framed in red and titled with their role."""
    values = np.asarray(patterns, dtype=float)
    if values.ndim != 4 or values.shape[2:] != (len(tokens), len(tokens)):
        raise InputError(f"attention patterns of shape {values.shape} do not match {len(tokens)} tokens: "
                         "pass [layer, head, query, key] patterns of this prompt")
    n_layers, n_heads = values.shape[:2]
    marked = marked or {}
    titles = [f"<b>L{l}H{h} · {marked[(l, h)]}</b>" if (l, h) in marked else f"L{l}H{h}"
              for l in range(n_layers) for h in range(n_heads)]
    fig = make_subplots(n_layers, n_heads, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=min(0.3 / max(n_layers - 1, 1), 0.12))
    labels = position_labels(tokens)
    for l in range(n_layers):
        for h in range(n_heads):
            fig.add_trace(go.Heatmap(z=values[l, h], x=labels, y=labels, coloraxis="coloraxis", name=f"L{l}H{h}",
                                     hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.2f}<extra>%{fullData.name}"
                                                   "</extra>"), l + 1, h + 1)
    for l, h in marked:
        if 0 <= l < n_layers and 0 <= h < n_heads:
            axis = "" if l * n_heads + h == 0 else str(l * n_heads + h + 1)
            fig.add_shape(type="rect", xref=f"x{axis} domain", yref=f"y{axis} domain", x0=0, x1=1, y0=0, y1=1,
                          line=dict(color="#d62728", width=3))
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False, autorange="reversed")
    for h in range(n_heads):
        fig.update_xaxes(title_text="key", row=n_layers, col=h + 1)
    for l in range(n_layers):
        fig.update_yaxes(title_text="query", row=l + 1, col=1)
    return fig.update_layout(
        title=f"Attention of every head ({len(tokens)} tokens; rows: layers, columns: heads)",
        height=90 + 190 * n_layers, margin=dict(r=90),
        coloraxis=dict(colorscale="Blues", cmin=0, cmax=1,
                       colorbar=_colorbar("attention weight")))


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
                                     colorbar=_colorbar("score (0–1)")))
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


def head_pair_figure(frame: pd.DataFrame, panels: dict[str, str], title: str, value: str, signed: bool = True,
                     baseline: float | None = None) -> go.Figure:
    """One heat map per column of ``frame`` named in ``panels`` (``{column: panel title}``) over head pairs:
    rows the earlier (sender) head A of ``layer_a, head_a``, columns the later (receiver) head B of ``layer_b,
    head_b``; one shared colour bar titled ``value``; a pair the frame lacks is blank. ``baseline`` (chance
    level) is written into the title."""
    frame = frame.assign(a=[f"L{l}H{h}" for l, h in zip(frame.layer_a, frame.head_a)],
                         b=[f"L{l}H{h}" for l, h in zip(frame.layer_b, frame.head_b)])
    order = lambda side: frame.sort_values([f"layer_{side}", f"head_{side}"])[side].unique().tolist()  # noqa: E731
    rows, cols = order("a"), order("b")
    fig = make_subplots(1, len(panels), subplot_titles=list(panels.values()), horizontal_spacing=0.08)
    for i, column in enumerate(panels):
        table = frame.pivot(index="a", columns="b", values=column).reindex(index=rows, columns=cols)
        fig.add_trace(go.Heatmap(z=table.values, x=cols, y=rows, coloraxis="coloraxis", name=panels[column],
                                 hovertemplate="A %{y} → B %{x}<br>%{z:.3g}<extra></extra>"), 1, i + 1)
    colours = dict(colorscale="RdBu", cmid=0) if signed else dict(colorscale="Blues")
    chance = f" (chance level {baseline:.3f})" if baseline is not None else ""
    fig.update_layout(title=title + chance, height=300 + 14 * len(rows),
                      coloraxis=dict(**colours, colorbar=_colorbar(value)))
    return fig.update_xaxes(title="receiver head B", tickangle=-45).update_yaxes(autorange="reversed").update_yaxes(
        title="sender head A", col=1)


def composition_table_figure(frame: pd.DataFrame, baseline: float | None = None) -> go.Figure:
    """Q/K/V composition scores of the stored ``composition`` table (``composition_frame``)."""
    return head_pair_figure(frame, {m: f"{m.upper()}-composition" for m in "qkv"},
                            "Composition scores ‖W_A W_B‖ / (‖W_A‖ ‖W_B‖)", "score (0–1)", signed=False,
                            baseline=baseline)


def path_patching_figure(frame: pd.DataFrame, unit: str = "") -> go.Figure:
    """The stored ``path_patch`` table (``side, layer_a, head_a, layer_b, head_b, effect``): the effect of A's
    corrupted output reaching B only through B's query, key or value, one panel per side (pairs with B in a
    later layer than A: no other path exists)."""
    frame = frame[frame.layer_b > frame.layer_a]
    wide = frame.pivot_table(index=["layer_a", "head_a", "layer_b", "head_b"], columns="side", values="effect",
                             aggfunc="first").reset_index()
    sides = [s for s in ("q", "k", "v") if s in wide]
    return head_pair_figure(wide, {s: f"through B's {dict(q='query', k='key', v='value')[s]}" for s in sides},
                            "Path patching: sender A → receiver B", f"effect ({unit})" if unit else "effect")


def dla_positions_figure(frame: pd.DataFrame, tokens: Sequence[str] | None = None, unit: str = "logit") -> go.Figure:
    """Direct logit attribution of each head (rows ``L{layer}H{head}``) at each position (columns; labelled with
    ``tokens`` when given) to the next token's logit, from the stored ``dla`` table (mean over prompts). The last
    position is left out: it has no next token in the prompt (the table's target there is the token itself)."""
    frame = frame[frame.pos < frame.pos.max()]
    frame = frame.assign(head_name=[f"L{l}H{h}" for l, h in zip(frame.layer, frame["head"])])
    table = frame.pivot(index="head_name", columns="pos", values="dla")
    table = table.reindex(frame.sort_values(["layer", "head"]).head_name.unique())
    x = _positions(list(table.columns), tokens)
    fig = go.Figure(_heatmap(table.values, x, list(table.index), "DLA").update(
        colorbar=_colorbar(f"DLA ({unit})")))
    return fig.update_layout(
        title="Direct logit attribution of each head to the next token", height=260 + 22 * len(table.index),
        xaxis_title=_position_title(tokens), yaxis_title="head").update_yaxes(autorange="reversed")


def logit_lens_table_figure(frame: pd.DataFrame, tokens: Sequence[str] | None = None) -> go.Figure:
    """The stored ``logit_lens`` table (``layer, pos, log_prob``; layer ``n_layers``: the final residual): one
    line per residual read-out, mean log-probability of the next token at each position (the last position,
    which has no next token in the prompt, left out)."""
    frame = frame[frame.pos < frame.pos.max()]
    last = int(frame.layer.max())
    fig = go.Figure()
    for layer, rows in frame.sort_values(["layer", "pos"]).groupby("layer"):
        fig.add_trace(go.Scatter(x=_positions(rows.pos.tolist(), tokens), y=rows.log_prob, mode="lines+markers",
                                 name="final residual" if layer == last else f"residual before L{layer}"))
    fig.update_layout(title="Logit lens: the next token read off the residual stream",
                      xaxis_title=_position_title(tokens), yaxis_title="log p(next token) (nats)", height=420,
                      legend=dict(title="read-out", orientation="h", x=0, y=1.0, yanchor="bottom"))
    return fig.update_xaxes(tickangle=-60, dtick=1) if tokens is not None else fig


def atp_agreement_figure(frame: pd.DataFrame) -> go.Figure:
    """The stored ``atp_agreement`` table (``scale, method, pearson, ...``): each estimate's Pearson correlation
    with exact head patching, one bar group per corruption scale."""
    fig = go.Figure([
        go.Bar(x=rows.method, y=rows.pearson, name=f"{scale:g} of the way to corrupt",
               text=[f"{v:.2f}" for v in rows.pearson], textposition="outside")
        for scale, rows in frame.groupby("scale")
    ])
    fig.add_hline(y=1.0, line_dash="dot")
    return fig.update_layout(title="Attribution patching against exact head patching", barmode="group",
                             xaxis_title="estimate", yaxis_title="Pearson r with exact patching",
                             yaxis_range=[min(0.0, float(frame.pearson.min()) - 0.1), 1.15],
                             legend=dict(title="head outputs moved", orientation="h", x=0, y=1.0, yanchor="bottom"))


def atp_scatter_figure(exact: pd.DataFrame, estimate: pd.DataFrame, unit: str = "") -> go.Figure:
    """Each head's exact patching effect (``patch_heads``) against its attribution-patching estimate
    (``attribution_heads``), one labelled point per head, with the diagonal."""
    both = exact.merge(estimate, on=["layer", "head"], suffixes=("_exact", "_atp"))
    labels = [f"L{l}H{h}" for l, h in zip(both.layer, both["head"])]
    fig = go.Figure(go.Scatter(x=both.effect_exact, y=both.effect_atp, mode="markers+text", text=labels,
                               textposition="top center", name="head"))
    ends = [float(min(both.effect_exact.min(), both.effect_atp.min())),
            float(max(both.effect_exact.max(), both.effect_atp.max()))]
    fig.add_trace(go.Scatter(x=ends, y=ends, mode="lines", line=dict(dash="dot", color="grey"), name="equal"))
    units = f" ({unit})" if unit else ""
    return fig.update_layout(title="Each head: attribution patching against exact patching (dotted: equal)",
                             xaxis_title=f"exact patching effect{units}", yaxis_title=f"AtP estimate{units}",
                             showlegend=False)


def _positions(positions: list[int], tokens: Sequence[str] | None) -> list:
    """Position axis values: ``{pos}:{token!r}`` where tokens are known, else the positions."""
    if tokens is None or len(tokens) < len(positions):
        return positions
    labels = position_labels(tokens)
    return [labels[p] for p in positions]


def _position_title(tokens: Sequence[str] | None) -> str:
    return "position: token of the first prompt" if tokens is not None else "position in the prompt"


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
    frame: pd.DataFrame, columns: str, title: str, index: str = "layer", value: str = "effect",
    tokens: Sequence[str] | None = None, unit: str = ""
) -> go.Figure:
    """Heat map of a stored patching table (``grid_frame`` rows: e.g. ``patch_residual`` with ``layer, pos, effect``
    or ``patch_heads`` with ``layer, head, effect``): ``index`` down, ``columns`` across; a ``pos`` axis is
    labelled with ``tokens`` when given; ``unit`` goes into the colour bar's title."""
    table = frame.pivot(index=index, columns=columns, values=value)
    x, x_title = list(table.columns), columns
    if columns == "pos" and tokens is not None:
        x, x_title = _positions(x, tokens), _position_title(tokens)
    fig = _effect_map(table.values, x, list(table.index), x_title, index, title, f"{value} ({unit})" if unit else value)
    return fig.update_xaxes(tickangle=-60) if columns == "pos" and tokens is not None else fig


def _effect_map(values, x, y, x_title: str, y_title: str, title: str, value: str = "effect") -> go.Figure:
    """A signed heat map centred on zero, first row on top; integer axes tick every integer."""
    fig = go.Figure(_heatmap(values, x, y, title).update(colorbar=_colorbar(value)))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title).update_yaxes(autorange="reversed", dtick=1)
    return fig.update_xaxes(dtick=1) if x_title in ("head", "layer", "pos") or x_title.startswith("position") else fig


def agreement_figure(exact: Tensor, approx: Tensor, title: str) -> go.Figure:
    """Scatter of attribution patching against exact patching."""
    fig = go.Figure(go.Scatter(x=exact.flatten().numpy(), y=approx.flatten().numpy(), mode="markers"))
    return fig.update_layout(title=title, xaxis_title="exact patching", yaxis_title="attribution patching")


def feature_circuit_figure(graph: dict, labels: dict[str, str] | None = None) -> go.Figure:
    """Sankey of a ``feature_circuit`` graph (features and error nodes into the metric); ``labels`` names nodes
    by id (e.g. site, feature id and label), the rest keep their ids."""
    fig = edge_graph_figure(graph["edges"], weight="weight").update_layout(
        title=f"Feature circuit ({graph['method']}): node width = |effect|, blue positive, red negative"
    )
    sankey = fig.data[0]
    if labels:
        sankey.node.label = [labels.get(name, name) for name in sankey.node.label]
    sankey.textfont = dict(size=10)
    return fig.update_layout(height=int(min(1600, max(420, 16 * len(sankey.node.label)))))  # a line per node


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
