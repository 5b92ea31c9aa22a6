"""Supernodes: the pruned graph's feature nodes grouped automatically by decoder geometry, each group scored by
how well it behaves as one node.

Grouping: kept features of one layer whose decoder rows have cosine ≥ ``threshold`` are joined (connected
components; the same feature at several positions is always one group). Score: in the real model, removing
the whole group changes the top logit by ``Δ_group``; removing each member alone by ``Δ_i``. A group that acts
as one additive node has ``Δ_group / Σ Δ_i = 1``; interactions (saturation, a shared non-linearity) move it away.
"""

from __future__ import annotations

import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from interp.circuits.attribution.attribute import frozen_parameters
from interp.circuits.attribution.graph import AttributionGraph
from interp.circuits.attribution.prune import PruneResult
from interp.circuits.attribution.replacement import check_transcoders, clean_state
from interp.circuits.attribution.verify import real_changes


def group_features(graph: AttributionGraph, pruned: PruneResult, transcoders,
                   threshold: float = 0.6) -> list[list[int]]:
    """Groups (lists of feature nodes, two or more) of the kept features, by layer and decoder cosine."""
    by_layer = dict(enumerate(transcoders)) if isinstance(transcoders, (list, tuple)) else dict(transcoders)
    kept = [n for n in range(graph.n_features) if pruned.node_mask[n]]
    groups = []
    for layer in sorted({int(graph.active_features[n, 0]) for n in kept}):
        nodes = [n for n in kept if int(graph.active_features[n, 0]) == layer]
        rows = by_layer[layer].W_dec[graph.active_features[nodes, 2]].float()
        similar = torch.nn.functional.normalize(rows, dim=-1) @ torch.nn.functional.normalize(rows, dim=-1).T
        _, labels = connected_components(csr_matrix((similar >= threshold).numpy()), directed=False)
        components: dict[int, list[int]] = {}
        for label, node in zip(labels.tolist(), nodes):
            components.setdefault(label, []).append(node)
        groups += [sorted(c) for c in components.values() if len(c) > 1]
    return groups


@torch.no_grad()
def group_scores(model, graph: AttributionGraph, transcoders, groups: list[list[int]]) -> list[dict]:
    """For each group: its members, ``Δ_group`` and ``Σ Δ_i`` on the top logit in the real model, their ratio."""
    by_layer, _ = check_transcoders(model, transcoders)
    state = clean_state(model, graph.tokens.to(model.cfg.device), by_layer)
    logit = graph.logit_index(0)
    rows = list(groups) + [[node] for group in groups for node in group]
    with frozen_parameters(model):
        changes = real_changes(model, graph, state, [(logit, sources) for sources in rows])
    out, cursor = [], len(groups)
    for g, group in enumerate(groups):
        alone = changes[cursor:cursor + len(group)]
        cursor += len(group)
        total = float(alone.sum())
        out.append({"members": [graph.describe(n)["label"] for n in group], "nodes": group,
                    "group_change": float(changes[g]), "sum_of_member_changes": total,
                    "ratio": float(changes[g]) / total if abs(total) > 1e-12 else float("nan")})
    return out
