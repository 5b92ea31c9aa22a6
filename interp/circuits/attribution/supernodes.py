"""Supernodes: the pruned graph's feature nodes grouped automatically by decoder geometry and co-activation,
each group scored by how well it behaves as one node.

Grouping: two kept features of one layer are joined when they are alike by the chosen geometry (``by``) and the
positions where they fire on the prompt overlap with Jaccard ≥ ``coactivation_threshold`` (they fire together);
groups are the connected components with two or more nodes (the same feature at several positions is one group).
Alike: ``decoder``, decoder rows with cosine ≥ ``decoder_threshold`` (they write the same direction); ``lobes``,
the same co-occurrence lobe in the transcoder's stored geometry analysis (``geometry_lobe_labels``); ``crystals``,
members of one crystal (the ``cluster`` of the stored ``geometry_crystals`` quadruples they appear in).

Score (the same for every grouping): in the real model, removing the whole group changes the top logit by
``Δ_group``; removing each member alone by ``Δ_i``. A group that acts as one additive node has
``Δ_group / Σ Δ_i = 1``; interactions (saturation, a shared non-linearity) move it away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
GROUPINGS = ("decoder", "lobes", "crystals")


@dataclass
class FeatureGeometry:
    """One transcoder's stored geometry, as grouping reads it: each feature's lobe and the crystals' members."""

    lobes: dict[int, int] = field(default_factory=dict)  # feature -> lobe (features left out have none)
    crystals: list[set[int]] = field(default_factory=list)  # each crystal's features


def alike(by: str, features: Int[Tensor, " m"], W_dec: Float[Tensor, "d_sae d"], geometry: FeatureGeometry | None,
          decoder_threshold: float = DECODER_THRESHOLD) -> torch.Tensor:
    """``[m, m]`` bool: which pairs of these features the grouping ``by`` calls alike (a feature is always alike
    itself, so its several positions group together)."""
    same = features[:, None] == features[None, :]
    if by == "decoder":
        return same | (decoder_cosine(W_dec[features].cpu()) >= decoder_threshold)
    if by not in GROUPINGS:
        raise ValueError(f"unknown supernode grouping '{by}'; use one of {', '.join(GROUPINGS)}")
    if geometry is None:
        return same
    if by == "lobes":
        lobe = torch.tensor([geometry.lobes.get(int(f), -1) for f in features])
        return same | ((lobe[:, None] == lobe[None, :]) & (lobe[:, None] >= 0))
    member = torch.tensor([[int(f) in crystal for crystal in geometry.crystals] for f in features],
                          dtype=torch.float).reshape(len(features), len(geometry.crystals))
    return same | ((member @ member.T) > 0)


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
                   coactivation_threshold: float = COACTIVATION_THRESHOLD, by: str = "decoder",
                   geometry: dict[int, FeatureGeometry] | None = None) -> list[list[int]]:
    """Groups (sorted lists of feature nodes, two or more) of the kept features, by layer; ``geometry`` by layer
    for ``lobes`` / ``crystals`` (a layer without one gets no groups by them)."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown supernode grouping '{by}'; use one of {', '.join(GROUPINGS)}")
    by_layer = dict(enumerate(transcoders)) if isinstance(transcoders, (list, tuple)) else dict(transcoders)
    kept = [n for n in range(graph.n_features) if pruned.node_mask[n]]
    groups = []
    for layer in sorted({int(graph.active_features[n, 0]) for n in kept}):
        if by != "decoder" and layer not in (geometry or {}):
            continue
        nodes = [n for n in kept if int(graph.active_features[n, 0]) == layer]
        features = graph.active_features[nodes, 2]
        similar = alike(by, features, by_layer[layer].W_dec, (geometry or {}).get(layer), decoder_threshold)
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
               coactivation_threshold: float = COACTIVATION_THRESHOLD, by: str = "decoder",
               geometry: dict[int, FeatureGeometry] | None = None) -> list[dict]:
    """The kept features' groups with their scores (``group_features`` then ``group_scores``)."""
    groups = group_features(graph, pruned, transcoders, decoder_threshold, coactivation_threshold, by, geometry)
    return group_scores(model, graph, transcoders, groups)
