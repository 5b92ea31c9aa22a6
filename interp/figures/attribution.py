"""The attribution graph figure: nodes by layer (y: tokens at the bottom, logits at the top) and position (x),
edges as segments coloured by sign and drawn wider with |weight|; supernodes (groups of feature nodes) coloured
by group or collapsed into one node each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

KIND_STYLE = {"token": ("#7f7f7f", "square"), "feature": ("#1f77b4", "circle"), "error": ("#d62728", "diamond"),
              "logit": ("#2ca02c", "star")}


GROUP_COLOURS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939")


def with_supernodes(nodes: pd.DataFrame, groups: list[list[int]]) -> pd.DataFrame:
    """``nodes`` with a ``supernode`` column: the index of the group a node belongs to, -1 for none."""
    member = {node: g for g, group in enumerate(groups) for node in group}
    return nodes.assign(supernode=[member.get(int(n), -1) for n in nodes["node"]])


def collapse_supernodes(nodes: pd.DataFrame, edges: pd.DataFrame,
                        groups: list[list[int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each group's kept members drawn as one node (its first kept member's id, at their mean position, influence
    summed); edges between the same collapsed ends summed, edges inside a group dropped."""
    nodes = with_supernodes(nodes, groups)
    kept = set(nodes["node"].astype(int))
    target_of = {}
    for group in groups:
        present = [n for n in group if n in kept]
        target_of.update({n: present[0] for n in present})
    rep = nodes["node"].map(lambda n: target_of.get(int(n), int(n)))
    merged = nodes.assign(node=rep).groupby("node", as_index=False).agg(
        kind=("kind", "first"), layer=("layer", "first"), pos=("pos", "mean"), feature=("feature", "first"),
        label=("label", "first"), influence=("influence", "sum"), supernode=("supernode", "first"),
        members=("label", "count"))
    grouped = merged["supernode"] >= 0
    merged.loc[grouped, "label"] = [f"supernode {g} ({m} nodes)" for g, m in
                                    zip(merged.loc[grouped, "supernode"], merged.loc[grouped, "members"])]
    moved = edges.assign(source=edges["source"].map(lambda n: target_of.get(int(n), int(n))),
                         target=edges["target"].map(lambda n: target_of.get(int(n), int(n))))
    moved = moved[moved["source"] != moved["target"]]
    return merged, moved.groupby(["target", "source"], as_index=False)["weight"].sum()


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
    """The kept nodes (``kind``, ``layer``, ``pos``, ``label``, ``influence``; optional ``supernode``: features
    of group g >= 0 drawn in group g's colour) and edges (``source``, ``target``, ``weight``); the ``max_edges``
    strongest edges are drawn. Each node's ``customdata`` is its node index."""
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
    group = nodes["supernode"] if "supernode" in nodes else pd.Series(-1, index=nodes.index)
    top_influence = max(float(nodes["influence"].max()), 1e-12) if len(nodes) else 1.0
    styles = [(kind, color, symbol, (nodes["kind"] == kind) & (group < 0))
              for kind, (color, symbol) in KIND_STYLE.items()]
    styles += [(f"supernode {g}", GROUP_COLOURS[g % len(GROUP_COLOURS)], "hexagon", group == g)
               for g in sorted(set(group[group >= 0].astype(int)))]
    for name, color, symbol, mask in styles:
        part = nodes[mask]
        if not len(part):
            continue
        size = 8 + 14 * np.sqrt(part["influence"].clip(lower=0) / top_influence)
        fig.add_trace(go.Scatter(x=part["x"], y=part["y"], mode="markers", name=name, text=part["label"],
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
