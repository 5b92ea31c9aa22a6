"""Which active features become graph nodes when a graph is capped (``max_feature_nodes``): the ones with the
most influence on the logits, estimated from the target rows computed so far (circuit-tracer's
``compute_partial_influences`` in its attribution loop).

The rows live in a buffer of ``max_feature_nodes + n_logits`` rows over **every** node (all active features,
errors, tokens, logits), so memory grows with the number of active features times the cap, not with its square.
Influence is ``w (Â + Â² + …)`` over the rows known so far (``Â``: each row's absolute weights over its sum, ``w``:
the logit probabilities on the logit rows). Only nodes that have a row pass influence on, so the powers run on
the rows-by-row-nodes block ``S`` (kept up to date as rows arrive, ``(cap + n_logits)²`` floats) and one pass
over the whole buffer spreads the summed row weights onto every column.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

CHUNK_FLOATS = 1 << 23  # scratch per chunked pass over the buffer (32 MiB)


class PartialInfluence:
    """Rows of the attribution buffer, added batch by batch, and the influence they imply on every node."""

    def __init__(self, n_rows: int, n_nodes: int, logit_nodes: Int[Tensor, " n_logits"],
                 logit_probabilities: Float[Tensor, " n_logits"]):
        self.rows = torch.zeros(n_rows, n_nodes)  # [row, source node]; filled in the order computed
        self.row_nodes = torch.full((n_rows,), -1, dtype=torch.long)  # the target node of each filled row
        self.norms = torch.zeros(n_rows)  # Σ |row|: the row normalisation of Â
        self.block = torch.zeros(n_rows, n_rows)  # |rows[i, row_nodes[j]]|: the part of Â that passes influence on
        self.filled = 0
        self.start_weights = torch.zeros(n_rows)
        self.logit_nodes, self.logit_probabilities = logit_nodes, logit_probabilities.float()

    def add(self, rows: Float[Tensor, "b n_nodes"], nodes: Int[Tensor, " b"]) -> None:
        """Store a batch of target rows (``nodes``: their target nodes) and extend ``block`` by their row and
        column."""
        begin, end = self.filled, self.filled + len(nodes)
        self.rows[begin:end] = rows
        self.row_nodes[begin:end] = nodes
        self.norms[begin:end] = rows.abs().sum(1)
        self.block[begin:end, :end] = rows[:, self.row_nodes[:end]].abs()
        self.block[:begin, begin:end] = self.rows[:begin][:, nodes].abs()
        match = (nodes[:, None] == self.logit_nodes[None]).float()  # [b, n_logits]
        self.start_weights[begin:end] = match @ self.logit_probabilities
        self.filled = end

    def influence(self, max_iter: int = 128) -> Float[Tensor, " n_nodes"]:
        """Each node's influence on the logits through the rows filled so far (0 for nodes no row reads)."""
        r = self.filled
        scale = 1.0 / self.norms[:r].clamp(min=1e-8)
        block = self.block[:r, :r]
        current = self.start_weights[:r]  # the weight on each row's target node, path length 0
        total = torch.zeros(r)
        for _ in range(max_iter):
            if not current.any():
                break
            weighted = current * scale
            total += weighted
            current = weighted @ block
        else:
            raise RuntimeError(f"partial influence did not converge in {max_iter} iterations (is the graph acyclic?)")
        return chunked_abs_product(total, self.rows[:r])


def chunked_abs_product(weights: Float[Tensor, " r"], rows: Float[Tensor, "r n"]) -> Float[Tensor, " n"]:
    """``weights @ |rows|`` without a second buffer-sized tensor."""
    out = torch.zeros(rows.shape[1])
    step = max(1, CHUNK_FLOATS // max(1, rows.shape[1]))
    for begin in range(0, rows.shape[0], step):
        out += weights[begin : begin + step] @ rows[begin : begin + step].abs()
    return out


def next_features(influence: Float[Tensor, " n_nodes"], visited: torch.BoolTensor, n: int) -> Int[Tensor, " m"]:
    """The ``n`` unvisited features (the first ``len(visited)`` nodes) with the most influence, most first."""
    scores = influence[: len(visited)].clone()
    order = torch.argsort(scores, descending=True, stable=True)
    return order[~visited[order]][:n]
