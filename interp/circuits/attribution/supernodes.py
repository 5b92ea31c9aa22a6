"""Supernodes: the pruned graph's feature nodes grouped automatically by decoder geometry and co-activation,
each group scored by how well it behaves as one node.

Grouping: two kept features of one layer are joined when their decoder rows have cosine ≥ ``decoder_threshold``
(they write the same direction) and the positions where they fire on the prompt overlap with Jaccard ≥
``coactivation_threshold`` (they fire together); groups are the connected components with two or more nodes
(the same feature at several positions is one group: cosine and Jaccard 1). Score: in the real model, removing
the whole group changes the top logit by ``Δ_group``; removing each member alone by ``Δ_i``. A group that acts
as one additive node has ``Δ_group / Σ Δ_i = 1``; interactions (saturation, a shared non-linearity) move it away.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from interp.circuits.attribution.attribute import frozen_parameters
from interp.circuits.attribution.graph import AttributionGraph
from interp.circuits.attribution.prune import PruneResult
from interp.circuits.attribution.replacement import check_transcoders, clean_state
from interp.circuits.attribution.verify import real_changes

DECODER_THRESHOLD, COACTIVATION_THRESHOLD = 0.8, 0.5


def decoder_cosine(rows: Float[Tensor, "m d"]) -> Float[Tensor, "m m"]:
    unit = torch.nn.functional.normalize(rows.float(), dim=-1)
    return unit @ unit.T


def position_jaccard(graph: AttributionGraph, layer: int, features: Int[Tensor, " m"]) -> Float[Tensor, "m m"]:
    """Jaccard overlap of the sets of positions where each feature fires on the prompt (all active nodes, kept
    or not)."""
    at_layer = graph.active_features[graph.active_features[:, 0] == layer]
    fires = (at_layer[:, 2][None, :] == features[:, None]).float()  # [m, active at the layer]
    by_pos = torch.zeros(len(features), graph.n_pos)
    by_pos.index_add_(1, at_layer[:, 1], fires)
    by_pos = (by_pos > 0).float()
    both = by_pos @ by_pos.T
    either = by_pos.sum(1)[:, None] + by_pos.sum(1)[None, :] - both
    return both / either.clamp(min=1)


def group_features(graph: AttributionGraph, pruned: PruneResult, transcoders,
                   decoder_threshold: float = DECODER_THRESHOLD,
                   coactivation_threshold: float = COACTIVATION_THRESHOLD) -> list[list[int]]:
    """Groups (sorted lists of feature nodes, two or more) of the kept features, by layer."""
    by_layer = dict(enumerate(transcoders)) if isinstance(transcoders, (list, tuple)) else dict(transcoders)
    kept = [n for n in range(graph.n_features) if pruned.node_mask[n]]
    groups = []
    for layer in sorted({int(graph.active_features[n, 0]) for n in kept}):
        nodes = [n for n in kept if int(graph.active_features[n, 0]) == layer]
        features = graph.active_features[nodes, 2]
        similar = decoder_cosine(by_layer[layer].W_dec[features].cpu()) >= decoder_threshold
        together = position_jaccard(graph, layer, features) >= coactivation_threshold
        _, labels = connected_components(csr_matrix((similar & together).numpy()), directed=False)
        components: dict[int, list[int]] = {}
        for label, node in zip(labels.tolist(), nodes):
            components.setdefault(label, []).append(node)
        groups += [sorted(c) for c in components.values() if len(c) > 1]
    return groups


@torch.no_grad()
def group_scores(model, graph: AttributionGraph, transcoders, groups: list[list[int]]) -> list[dict]:
    """For each group: its members, ``Δ_group`` and ``Σ Δ_i`` on the top logit in the real model, their ratio."""
    if not groups:
        return []
    by_layer, _ = check_transcoders(model, transcoders)
    by_layer = {layer: tc.to(device=model.cfg.device) for layer, tc in by_layer.items()}
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
        out.append({"group": g, "layer": int(graph.active_features[group[0], 0]),
                    "members": [graph.describe(n)["label"] for n in group], "nodes": group,
                    "group_change": float(changes[g]), "sum_of_member_changes": total,
                    "ratio": float(changes[g]) / total if abs(total) > 1e-12 else None})
    return out


def supernodes(model, graph: AttributionGraph, pruned: PruneResult, transcoders,
               decoder_threshold: float = DECODER_THRESHOLD,
               coactivation_threshold: float = COACTIVATION_THRESHOLD) -> list[dict]:
    """The kept features' groups with their scores (``group_features`` then ``group_scores``)."""
    groups = group_features(graph, pruned, transcoders, decoder_threshold, coactivation_threshold)
    return group_scores(model, graph, transcoders, groups)
