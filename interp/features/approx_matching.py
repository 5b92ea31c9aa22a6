"""Feature matching at tens of thousands of latents: an exact assignment on a sparse candidate graph.

The exact Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on the dense ``n x m`` cosine
matrix is ``O(n^3)`` time and ``n x m`` float64 memory: about 2 s at 4,096 latents on one core, and at
24,576 it needs 4.8 GB for the costs alone. Two decoders' matched features are nearly always among each
other's nearest, so the candidates are each row's ``k`` best columns and each column's ``k`` best rows
(a blocked matmul + top-k, memory ``O(block x m + k x (n + m))``), and scipy's sparse LAPJV
(``min_weight_full_bipartite_matching``) solves the assignment restricted to them exactly. Where the
candidates admit no full matching, ``k`` doubles (the graph is dense at worst, so it always ends).

The result is the exact optimum whenever the optimal pairs lie among the candidates; otherwise its total
cosine is a little lower. ``benchmarks/bench_matching.py`` measures the gap to the exact assignment at
4,096 latents; ``tests/interp/test_approx_matching.py`` checks a planted permutation is recovered.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from jaxtyping import Float
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from torch import Tensor

from interp.store.errors import InputError


def unit_rows(W: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    """Rows scaled to unit norm (float32; a zero row stays zero)."""
    return W.float() / W.float().norm(dim=1, keepdim=True).clamp_min(1e-12)


EXACT_MAX = 8192  # above this many latents on either side, match_features uses the candidate graph


def candidate_edges(unit_a: Float[Tensor, "n d"], unit_b: Float[Tensor, "m d"], k: int,
                    block: int = 2048) -> tuple[Tensor, Tensor]:
    """Flat indices ``i * m + j`` (sorted, unique) of each row's ``k`` best columns and each column's ``k`` best
    rows by cosine, and their cosines; one ``block x m`` slab of the cosine matrix at a time."""
    n, m = unit_a.shape[0], unit_b.shape[0]
    k_row, k_col = min(k, m), min(k, n)
    keys, cosines, col_values, col_rows = [], [], [], []
    for start in range(0, n, block):
        cos = unit_a[start:start + block] @ unit_b.T  # [b, m]
        top = cos.topk(k_row, dim=1)
        keys.append((torch.arange(start, start + cos.shape[0], device=cos.device)[:, None] * m + top.indices).flatten())
        cosines.append(top.values.flatten())
        down = cos.T.contiguous().topk(min(k_col, cos.shape[0]), dim=1)  # contiguous: topk along rows is fast
        col_values.append(down.values)
        col_rows.append(down.indices + start)
    values, rows = torch.cat(col_values, dim=1), torch.cat(col_rows, dim=1)  # [m, blocks x k]
    best = values.topk(k_col, dim=1)
    keys.append((rows.gather(1, best.indices) * m + torch.arange(m, device=rows.device)[:, None]).flatten())
    cosines.append(best.values.flatten())
    keys, where = torch.unique(torch.cat(keys), return_inverse=True)
    cos = torch.empty(len(keys), device=keys.device).scatter_(0, where, torch.cat(cosines))  # duplicates agree
    return keys, cos


def assign_on_edges(keys: Tensor, cos: Tensor, n: int, m: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The maximum-total-cosine matching of all ``min(n, m)`` on the smaller side, using only the given
    edges (``keys = i * m + j``); None when these edges admit no such matching."""
    keys, cos = keys.cpu().numpy(), cos.double().cpu().numpy()
    graph = sp.csr_matrix((cos + 2.0, (keys // m, keys % m)), shape=(n, m))  # > 0: a zero is no edge to scipy
    try:
        if n <= m:
            rows, cols = min_weight_full_bipartite_matching(graph, maximize=True)
        else:
            cols, rows = min_weight_full_bipartite_matching(graph.T.tocsr(), maximize=True)
    except ValueError:  # "no full matching exists"
        return None
    return rows, cols


def candidate_assignment(unit_a: Float[Tensor, "n d"], unit_b: Float[Tensor, "m d"], k: int = 16,
                         block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the assignment maximising total cosine among the candidate edges (``k`` doubles
    until a full matching exists)."""
    if k < 1:
        raise InputError(f"candidates per feature must be >= 1, not {k}")
    n, m = unit_a.shape[0], unit_b.shape[0]
    while True:
        found = assign_on_edges(*candidate_edges(unit_a, unit_b, k, block), n, m)
        if found is not None:
            return found
        k *= 2  # at k >= max(n, m) every edge is present and a full matching always exists


def match_by_candidates(W_a: Float[Tensor, "n d"], W_b: Float[Tensor, "m d"], k: int = 16,
                        block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """``interp.features.matching.match_per_row``'s contract (A's match in B or -1, and its cosine or NaN) from the
    candidate-graph assignment."""
    unit_a, unit_b = unit_rows(W_a.detach()), unit_rows(W_b.detach().to(W_a.device))
    rows, cols = candidate_assignment(unit_a, unit_b, k, block)
    match = np.full(unit_a.shape[0], -1)
    match[rows] = cols
    score = np.full(unit_a.shape[0], np.nan)
    idx = torch.as_tensor(rows, device=unit_a.device)
    score[rows] = (unit_a[idx] * unit_b[torch.as_tensor(cols, device=unit_a.device)]).sum(1).double().cpu().numpy()
    return match, score


def assignment_from_similarity(similarity: Float[Tensor, "n m"], k: int = 16,
                               block: int = 2048) -> tuple[Tensor, Tensor]:
    """Rows and columns (on the similarity's device) of the candidate-graph assignment of a dense similarity
    already in memory (MFR's per-step cosines): ``interp.features.matching.hungarian``'s contract."""
    sim = similarity.detach()
    n, m = sim.shape
    while True:
        rows_top = sim.topk(min(k, m), dim=1).indices
        # each column's best rows, a block of columns at a time made contiguous (a strided topk is slow on a CPU)
        cols_top = torch.cat([sim[:, start:start + block].T.contiguous().topk(min(k, n), dim=1).indices
                              for start in range(0, m, block)])  # [m, k]
        keys = torch.unique(torch.cat([(torch.arange(n, device=sim.device)[:, None] * m + rows_top).flatten(),
                                       (cols_top * m + torch.arange(m, device=sim.device)[:, None]).flatten()]))
        found = assign_on_edges(keys, sim.flatten()[keys], n, m)
        if found is not None:
            rows, cols = found
            return (torch.as_tensor(rows, device=sim.device, dtype=torch.long),
                    torch.as_tensor(cols, device=sim.device, dtype=torch.long))
        k *= 2
