"""Mutual feature regularization (Marks et al. 2024), as the paper's code defines it.

Matched mean cosine similarity (Hungarian one-to-one matching on detached cosines, gradient through
the matched entries) and the consensus penalty ``C(t) = λ · w(t) · mean_{a<b} (1 − MMCS(W_a, W_b))``
with the cosine warm-up ``w(t)``. The vectors compared are each member's decoder directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor


@dataclass
class Matching:
    """One-to-one matching of rows of A to rows of B and its mean cosine (differentiable)."""

    value: Float[Tensor, ""]
    rows: Int[Tensor, " n"]
    cols: Int[Tensor, " n"]
    similarity: Float[Tensor, "n_a n_b"]


def cosine_matrix(A: Float[Tensor, "n_a d"], B: Float[Tensor, "n_b d"]) -> Float[Tensor, "n_a n_b"]:
    return F.normalize(A, dim=-1) @ F.normalize(B, dim=-1).T


def hungarian(similarity: Float[Tensor, "n_a n_b"]) -> tuple[Tensor, Tensor]:
    """Rows and columns of the one-to-one matching that maximises total similarity (above
    ``interp.approx_matching.EXACT_MAX`` latents: exact on each latent's 16 best candidates both ways, since
    the dense assignment is O(n^3) with n^2 float64 costs; see ``interp/approx_matching.py``)."""
    from interp.approx_matching import EXACT_MAX, assignment_from_similarity

    if max(similarity.shape) > EXACT_MAX:
        return assignment_from_similarity(similarity)
    cost = 1.0 - similarity.detach().float().cpu().numpy().astype(np.float64)
    rows, cols = linear_sum_assignment(cost)
    device = similarity.device
    return torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)


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
    """MMCS for every unordered member pair; cosines batched, Hungarian per pair (or reuse ``assignments``)."""
    pairs = member_pairs(W.shape[0])
    if not pairs:
        return W.new_zeros(0), []
    a, b = (torch.tensor(side, device=W.device) for side in zip(*pairs))
    normed = F.normalize(W, dim=-1)
    similarity = torch.einsum("psd,ptd->pst", normed[a], normed[b])
    if assignments is None:
        assignments = [hungarian(similarity[p]) for p in range(len(pairs))]
    rows = torch.stack([r for r, _ in assignments])
    cols = torch.stack([c for _, c in assignments])
    pair_index = torch.arange(len(pairs), device=W.device).unsqueeze(1)
    return similarity[pair_index, rows, cols].mean(-1), assignments


def mfr_penalty(W: Float[Tensor, "K d_sae d_in"], coefficient: float, step: int, warmup_steps: int = 100,
                assignments: list[tuple[Tensor, Tensor]] | None = None
                ) -> tuple[Float[Tensor, ""], Float[Tensor, " pairs"], list[tuple[Tensor, Tensor]]]:
    """``C(t)`` and the per-pair MMCS. Zero for a single member. Add ``C`` once to the summed loss:
    each member then gets ``dMSE_i/dθ_i + dC/dθ_i`` exactly as with the paper's per-SAE optimisers."""
    mmcs, assignments = pairwise_matched_cosine(W, assignments)
    if mmcs.numel() == 0:
        return W.new_zeros(()), mmcs, assignments
    return coefficient * mfr_warmup(step, warmup_steps) * (1.0 - mmcs).mean(), mmcs, assignments
