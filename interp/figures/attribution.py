"""The attribution graph figure: nodes by layer (y: tokens at the bottom, logits at the top) and position (x),
edges as segments coloured by sign and drawn wider with |weight|."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

KIND_STYLE = {"token": ("#7f7f7f", "square"), "feature": ("#1f77b4", "circle"), "error": ("#d62728", "diamond"),
              "logit": ("#2ca02c", "star")}


def node_positions(nodes: pd.DataFrame) -> pd.DataFrame:
    """x = position (spread within a (layer, position) cell), y = layer + 1 (tokens 0, logits n_layers + 1)."""
    nodes = nodes.copy()
    nodes["y"] = nodes["layer"] + 1.0
    rank = nodes.groupby(["layer", "pos"]).cumcount()
    size = nodes.groupby(["layer", "pos"])["node"].transform("count")
    nodes["x"] = nodes["pos"] + np.where(size > 1, (rank + 0.5) / size - 0.5, 0.0) * 0.8
    return nodes


def attribution_graph_figure(nodes: pd.DataFrame, edges: pd.DataFrame, token_strings: list[str],
                             max_edges: int = 400) -> go.Figure:
    """The kept nodes (``kind``, ``layer``, ``pos``, ``label``, ``influence``) and edges (``source``, ``target``,
    ``weight``); the ``max_edges`` strongest edges are drawn. Each node's ``customdata`` is its node index."""
    nodes = node_positions(nodes)
    where = nodes.set_index("node")[["x", "y"]]
    strongest = edges.reindex(edges["weight"].abs().sort_values(ascending=False).index).head(max_edges)
    fig = go.Figure()
    top = float(strongest["weight"].abs().max()) if len(strongest) else 1.0
    for sign, color in ((1, "rgba(31,119,180,0.45)"), (-1, "rgba(214,39,40,0.45)")):
        part = strongest[np.sign(strongest["weight"]) == sign]
        for width in (1, 2, 4):  # three widths by |weight| (one trace each keeps the figure light)
            band = part[np.ceil(3 * part["weight"].abs() / top).clip(1, 3) == [1, 2, 4].index(width) + 1]
            if not len(band):
                continue
            xs, ys = [], []
            for source, target in zip(band["source"], band["target"]):
                if source in where.index and target in where.index:
                    xs += [where.at[source, "x"], where.at[target, "x"], None]
                    ys += [where.at[source, "y"], where.at[target, "y"], None]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": color, "width": width},
                                     hoverinfo="skip", showlegend=False))
    for kind, (color, symbol) in KIND_STYLE.items():
        part = nodes[nodes["kind"] == kind]
        if not len(part):
            continue
        size = 8 + 14 * np.sqrt(part["influence"].clip(lower=0) / max(float(nodes["influence"].max()), 1e-12))
        fig.add_trace(go.Scatter(x=part["x"], y=part["y"], mode="markers", name=kind, text=part["label"],
                                 customdata=part["node"], hovertemplate="%{text}<extra></extra>",
                                 marker={"color": color, "symbol": symbol, "size": size,
                                         "line": {"width": 1, "color": "white"}}))
    n_layers = int(nodes["layer"].max()) if len(nodes) else 0
    fig.update_layout(height=560, title=f"Attribution graph: {len(nodes)} nodes, {len(edges)} edges",
                      xaxis={"tickmode": "array", "tickvals": list(range(len(token_strings))),
                             "ticktext": [f"{i}:{t!r}" for i, t in enumerate(token_strings)], "tickangle": -60},
                      yaxis={"tickmode": "array", "tickvals": list(range(n_layers + 2)),
                             "ticktext": ["tokens"] + [f"L{layer}" for layer in range(n_layers)] + ["logits"]},
                      legend={"orientation": "h", "y": 1.08})
    return fig
