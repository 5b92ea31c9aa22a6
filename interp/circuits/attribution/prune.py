"""Pruning and scores as circuit-tracer's ``graph.py`` computes them.

Influence: the row-normalised absolute adjacency ``Â`` (each target's incoming weights sum to 1) summed over
paths, ``w (Â + Â² + …)``, from the logits weighted by their probabilities ``w``. ``prune_graph`` keeps the
nodes carrying ``node_threshold`` of the influence and then the edges carrying ``edge_threshold`` of the edge
influence (tokens and logits always kept; features and errors left without a kept outgoing edge, and
features left without a kept incoming one, are dropped until nothing changes). Replacement score: the share of
the tokens' and errors' influence that is the tokens'; completeness score: each node's incoming weight not
from error nodes, averaged with its influence (plus its own logit weight) as weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.circuits.attribution.graph import AttributionGraph
from interp.store.errors import InputError


def normalize_matrix(matrix: Float[Tensor, "n n"]) -> Float[Tensor, "n n"]:
    normalized = matrix.abs()
    return normalized / normalized.sum(dim=1, keepdim=True).clamp(min=1e-10)


def compute_influence(A: Float[Tensor, "n n"], logit_weights: Float[Tensor, " n"], max_iter: int = 1000) -> Tensor:
    """``w (A + A² + …)`` by repeated products (the graph is acyclic, so the powers vanish)."""
    current = logit_weights @ A
    influence = current.clone()
    for _ in range(max_iter):
        if not current.any():
            return influence
        current = current @ A
        influence += current
    raise RuntimeError(f"influence did not converge in {max_iter} iterations (is the adjacency acyclic?)")


def logit_weights(graph: AttributionGraph) -> Float[Tensor, " n"]:
    weights = torch.zeros(graph.n_nodes)
    weights[graph.logit_start:] = graph.logit_probabilities.float()
    return weights


def node_influence(graph: AttributionGraph) -> Float[Tensor, " n"]:
    return compute_influence(normalize_matrix(graph.adjacency), logit_weights(graph))


def edge_influence(pruned: Float[Tensor, "n n"], weights: Float[Tensor, " n"]) -> Float[Tensor, "n n"]:
    normalized = normalize_matrix(pruned)
    influence = compute_influence(normalized, weights) + weights
    return normalized * influence[:, None]


def find_threshold(scores: Float[Tensor, " m"], threshold: float) -> Tensor:
    """The score above which ``threshold`` of the total score lies (descending cumulative share)."""
    ordered = torch.sort(scores, descending=True).values
    cumulative = torch.cumsum(ordered, dim=0) / ordered.sum().clamp(min=1e-30)
    index = min(int(torch.searchsorted(cumulative, torch.tensor(threshold, dtype=cumulative.dtype))),
                len(cumulative) - 1)
    return ordered[index]


@dataclass
class PruneResult:
    node_mask: Bool[Tensor, " n"]
    edge_mask: Bool[Tensor, "n n"]
    cumulative_scores: Float[Tensor, " n"]  # each node's place in the cumulative influence (0 = most influential)
    influence: Float[Tensor, " n"]


def prune_graph(graph: AttributionGraph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PruneResult:
    """circuit-tracer's ``prune_graph`` on our graph (same thresholds by default)."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{name} must be between 0 and 1, got {value}")
    n_tokens, n_logits, n_features = graph.n_pos, graph.n_logits, graph.n_features
    weights = logit_weights(graph)
    influence = node_influence(graph)
    node_mask = influence >= find_threshold(influence, node_threshold)
    node_mask[-n_logits - n_tokens:] = True
    pruned = graph.adjacency.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    scores = edge_influence(pruned, weights)
    edge_mask = scores >= find_threshold(scores.flatten(), edge_threshold)
    inner = slice(0, graph.n_nodes - n_logits - n_tokens)  # features and errors
    previous = None
    while previous is None or not torch.equal(node_mask, previous):
        previous = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[inner] &= edge_mask[:, inner].any(0)  # a kept outgoing edge
        node_mask[:n_features] &= edge_mask[:n_features].any(1)  # a kept incoming edge
    ordered, order = torch.sort(influence, descending=True)
    cumulative = torch.zeros_like(influence)
    cumulative[order] = torch.cumsum(ordered, dim=0) / ordered.sum().clamp(min=1e-30)
    return PruneResult(node_mask, edge_mask, cumulative, influence)


def graph_scores(graph: AttributionGraph) -> tuple[float, float]:
    """``(replacement_score, completeness_score)`` as circuit-tracer's ``compute_graph_scores``."""
    weights = logit_weights(graph)
    normalized = normalize_matrix(graph.adjacency)
    influence = compute_influence(normalized, weights)
    errors = slice(graph.error_start, graph.token_start)
    token_influence = influence[graph.token_start:graph.logit_start].sum()
    error_influence = influence[errors].sum()
    replacement = token_influence / (token_influence + error_influence).clamp(min=1e-30)
    non_error = 1 - normalized[:, errors].sum(dim=-1)
    output_influence = influence + weights
    completeness = (non_error * output_influence).sum() / output_influence.sum()
    return float(replacement), float(completeness)
