"""Mutual feature regularization (Marks et al. 2024), as the paper's code defines it.

Matched mean cosine similarity (Hungarian one-to-one matching on detached cosines, gradient through
the matched entries) and the consensus penalty ``C(t) = λ · w(t) · mean_{a<b} (1 − MMCS(W_a, W_b))``
with the cosine warm-up ``w(t)``. The vectors compared are each member's decoder directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.features.matching import cosine_matrix, hungarian, match_features


@dataclass
class Matching:
    """One-to-one matching of rows of A to rows of B and its mean cosine (differentiable)."""

    value: Float[Tensor, ""]
    rows: Int[Tensor, " n"]
    cols: Int[Tensor, " n"]
    similarity: Float[Tensor, "n_a n_b"]


def matched_mean_cosine(A: Float[Tensor, "n_a d"], B: Float[Tensor, "n_b d"]) -> Matching:
    """MMCS as in the MFR code: mean cosine under the optimal matching (min(n_a, n_b) pairs)."""
    similarity = cosine_matrix(A, B)
    rows, cols = hungarian(similarity)
    return Matching(similarity[rows, cols].mean(), rows, cols, similarity)


def mfr_warmup(step: int, warmup_steps: int) -> float:
    """``w(t) = ½ (1 + cos(π (T − t) / T))`` for t < T, else 1; t = 1 at the first batch."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (warmup_steps - step) / warmup_steps))


def member_pairs(n_members: int) -> list[tuple[int, int]]:
    return list(combinations(range(n_members), 2))


def pairwise_matched_cosine(W: Float[Tensor, "K d_sae d_in"],
                            assignments: list[tuple[Tensor, Tensor]] | None = None
                            ) -> tuple[Float[Tensor, " pairs"], list[tuple[Tensor, Tensor]]]:
    """MMCS for every unordered member pair; Hungarian per pair on detached cosines (or reuse ``assignments``).

    The gradient of the MMCS flows only through the matched entries, so it is taken through the ``d_sae``
    matched row pairs alone: the same value and gradient as indexing the full similarity, without the
    ``d_sae^2`` matrix in the autograd graph (2.4 GB and two extra ``d_sae^2 d_in`` matmuls at 24k latents).
    The matching itself is ``interp.features.matching.match_features`` (no gradient; above ``EXACT_MAX`` latents the
    candidate graph, which never forms the full cosine matrix)."""
    pairs = member_pairs(W.shape[0])
    if not pairs:
        return W.new_zeros(0), []
    a, b = (torch.tensor(side, device=W.device) for side in zip(*pairs))
    if assignments is None:
        assignments = []
        for p, q in pairs:
            match = match_features(W[p].detach(), W[q].detach())
            assignments.append((match.rows.to(W.device), match.cols.to(W.device)))
    normed = F.normalize(W, dim=-1)
    rows = torch.stack([r for r, _ in assignments])
    cols = torch.stack([c for _, c in assignments])
    matched = (normed[a.unsqueeze(1), rows] * normed[b.unsqueeze(1), cols]).sum(-1)
    return matched.mean(-1), assignments


def mfr_penalty(W: Float[Tensor, "K d_sae d_in"], coefficient: float, step: int, warmup_steps: int = 100,
                assignments: list[tuple[Tensor, Tensor]] | None = None
                ) -> tuple[Float[Tensor, ""], Float[Tensor, " pairs"], list[tuple[Tensor, Tensor]]]:
    """``C(t)`` and the per-pair MMCS. Zero for a single member. Add ``C`` once to the summed loss:
    each member then gets ``dMSE_i/dθ_i + dC/dθ_i`` exactly as with the paper's per-SAE optimisers."""
    mmcs, assignments = pairwise_matched_cosine(W, assignments)
    if mmcs.numel() == 0:
        return W.new_zeros(()), mmcs, assignments
    return coefficient * mfr_warmup(step, warmup_steps) * (1.0 - mmcs).mean(), mmcs, assignments
