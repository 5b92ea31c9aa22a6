"""One-to-one feature matching (Hungarian on decoder cosine): the one place ``linear_sum_assignment`` runs
(above ``interp.features.approx_matching.EXACT_MAX`` latents: scipy's sparse LAPJV on a candidate graph).

MFR's penalty (differentiable, through ``cosine_matrix``), evaluation's cross-member and ground-truth
MMCS, the dashboards' matched-features table and the Compare step all match through ``hungarian`` here,
so they agree on ties, precision and orientation. The exact assignment is ``O(n^3)``: seconds at a few
thousand features; above ``EXACT_MAX`` (8,192) the candidate graph takes over (MMCS within 6e-7 of exact
at 4,096 in ``benchmarks/bench_matching.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from interp.features import approx_matching
from interp.features.approx_matching import unit_rows


class FeatureMatch(NamedTuple):
    """Matched pairs (row ``rows[i]`` of A with row ``cols[i]`` of B) and their cosines; ``min(n, m)`` pairs."""

    rows: Int[Tensor, " k"]
    cols: Int[Tensor, " k"]
    cos: Float[Tensor, " k"]


def cosine_matrix(A: Float[Tensor, "n_a d"], B: Float[Tensor, "n_b d"]) -> Float[Tensor, "n_a n_b"]:
    """Cosine of every row of A with every row of B (differentiable)."""
    return F.normalize(A, dim=-1) @ F.normalize(B, dim=-1).T


def hungarian(similarity: Float[Tensor, "n_a n_b"]) -> tuple[Int[Tensor, " k"], Int[Tensor, " k"]]:
    """Rows and columns of the one-to-one matching that maximises total similarity (on ``similarity``'s device).
    Above ``approx_matching.EXACT_MAX`` latents: exact on each latent's 16 best candidates both ways
    (``interp/features/approx_matching.py``), since the dense assignment is O(n^3) with n^2 float64 costs."""
    if max(similarity.shape) > approx_matching.EXACT_MAX:
        return approx_matching.assignment_from_similarity(similarity)
    cost = 1.0 - similarity.detach().float().cpu().numpy().astype(np.float64)
    rows, cols = linear_sum_assignment(cost)
    device = similarity.device
    return torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)


def match_features(W_a: Float[Tensor, "n d"], W_b: Float[Tensor, "m d"]) -> FeatureMatch:
    """Hungarian matching of A's decoder directions to B's by cosine (no gradient; tensors on CPU). Above
    ``approx_matching.EXACT_MAX`` latents the cosines are never formed whole: the candidate-graph assignment."""
    if max(W_a.shape[0], W_b.shape[0]) > approx_matching.EXACT_MAX:
        other, score = approx_matching.match_by_candidates(W_a, W_b)
        rows = np.flatnonzero(other >= 0)
        return FeatureMatch(torch.as_tensor(rows), torch.as_tensor(other[rows]), torch.as_tensor(score[rows]).float())
    cos = unit_rows(W_a.detach()) @ unit_rows(W_b.detach()).T
    rows, cols = hungarian(cos)
    return FeatureMatch(rows.cpu(), cols.cpu(), cos[rows, cols].cpu())


def match_per_row(match: FeatureMatch, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of A's ``n`` rows its matched row of B (-1 when unmatched) and the cosine (NaN when unmatched)."""
    other, score = np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
    other[match.rows.numpy()] = match.cols.numpy()
    score[match.rows.numpy()] = match.cos.double().numpy()
    return other, score


def matched_features_table(W_decs: list[Tensor]) -> pd.DataFrame:
    """For each member of an ensemble, each feature's Hungarian match in every other member."""
    frames = []
    for a, W_a in enumerate(W_decs):
        for b, W_b in enumerate(W_decs):
            if a != b:
                match, score = match_per_row(match_features(W_a, W_b), W_a.shape[0])
                frames.append(pd.DataFrame({"member": a, "feature": np.arange(len(match)), "other_member": b,
                                            "other_feature": match, "cosine": score}))
    return pd.concat(frames, ignore_index=True)
