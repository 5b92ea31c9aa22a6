"""Candidate-graph matching: recovers a planted permutation, equals the exact assignment where the optimal
pairs are candidates, never beats it, handles unequal sizes, and widens its candidates when they admit no
full matching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from interp.features.approx_matching import (
    assign_on_edges,
    assignment_from_similarity,
    candidate_edges,
    match_by_candidates,
)
from interp.features.matching import match_features, match_per_row, unit_rows
from interp.store.errors import InputError


def per_row(W_a, W_b):
    """``match_features`` as A's partner per row (-1 if none) and its cosine."""
    return match_per_row(match_features(W_a, W_b), W_a.shape[0])


def planted(n: int, d: int, noise: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    W_a = torch.randn(n, d, generator=gen)
    perm = torch.randperm(n, generator=gen)
    return W_a, W_a[perm] + noise * torch.randn(n, d, generator=gen), perm.numpy()


@pytest.mark.parametrize("block", [7, 64, 4096])
def test_a_planted_permutation_is_recovered(block):
    W_a, W_b, perm = planted(300, 32, noise=0.3)
    match, score = match_by_candidates(W_a, W_b, k=4, block=block)
    assert np.array_equal(match[perm], np.arange(300))  # B's row i is A's row perm[i]
    assert np.allclose(score, (unit_rows(W_a) * unit_rows(W_b)[torch.as_tensor(match)]).sum(1).numpy(), atol=1e-5)


def test_candidate_edges_hold_each_rows_and_each_columns_best():
    W_a, W_b, _ = planted(50, 8, noise=1.0, seed=1)
    a, b = unit_rows(W_a), unit_rows(W_b)
    keys, cos = candidate_edges(a, b, k=3, block=16)
    dense = a @ b.T
    assert torch.equal(keys, torch.unique(keys))
    assert torch.allclose(cos, dense.flatten()[keys], atol=1e-6)
    expected = {(i, j) for i in range(50) for j in dense[i].topk(3).indices.tolist()}
    expected |= {(i, j) for j in range(50) for i in dense[:, j].topk(3).indices.tolist()}
    assert {(int(key) // 50, int(key) % 50) for key in keys} == expected


def test_on_unrelated_decoders_it_is_close_to_and_never_above_the_exact_optimum():
    gen = torch.Generator().manual_seed(2)
    W_a, W_b = torch.randn(400, 16, generator=gen), torch.randn(400, 16, generator=gen)
    exact_match, exact_score = per_row(W_a, W_b)
    for k in (2, 8, 400):
        match, score = match_by_candidates(W_a, W_b, k=k)
        assert sorted(match) == list(range(400))  # one-to-one
        assert score.sum() <= exact_score.sum() + 1e-4  # float32 cosines
        assert score.mean() >= exact_score.mean() - 0.02
    assert np.allclose(score.sum(), exact_score.sum(), atol=1e-4)  # k = n: the whole graph, exact


def test_unequal_sizes_match_the_smaller_side_fully():
    W_a, W_b, perm = planted(40, 16, noise=0.05, seed=3)
    match, score = match_by_candidates(W_a[:25], W_b, k=2)
    assert (match >= 0).all() and score.min() > 0.95
    assert np.array_equal(perm[match], np.arange(25))
    back, back_score = match_by_candidates(W_b, W_a[:25], k=2)
    assert (back >= 0).sum() == 25 and np.isnan(back_score[back < 0]).all()


def test_no_full_matching_among_candidates_widens_them():
    # every row's single best column is column 0 and column 0's best row is row 0: k = 1 leaves rows
    # 1..3 with one candidate each, all the same column, so no full matching; the search must widen.
    sim = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.8, 0.2, 0.1, 0.0], [0.7, 0.0, 0.3, 0.1], [0.6, 0.0, 0.1, 0.4]])
    keys = torch.tensor([0, 4, 8, 12])
    assert assign_on_edges(keys, sim.flatten()[keys], 4, 4) is None
    rows, cols = assignment_from_similarity(sim, k=1)
    exact = linear_sum_assignment(sim.numpy(), maximize=True)
    assert sim[rows, cols].sum() == pytest.approx(sim.numpy()[exact].sum())


def test_assignment_from_a_similarity_matches_the_exact_one_on_a_planted_pair():
    W_a, W_b, perm = planted(200, 24, noise=0.2, seed=4)
    sim = unit_rows(W_a) @ unit_rows(W_b).T
    rows, cols = assignment_from_similarity(sim, k=4)
    exact_rows, exact_cols = linear_sum_assignment(sim.numpy(), maximize=True)
    assert np.array_equal(rows.numpy(), exact_rows) and np.array_equal(cols.numpy(), exact_cols)


def test_fewer_than_one_candidate_is_refused():
    with pytest.raises(InputError, match="candidates per feature"):
        match_by_candidates(torch.randn(4, 3), torch.randn(4, 3), k=0)


def test_above_the_exact_limit_feature_and_mfr_matching_take_the_candidate_graph(monkeypatch):
    import interp.features.approx_matching as approx
    from sae_training.mfr import matched_mean_cosine

    W_a, W_b, perm = planted(120, 16, noise=0.2, seed=5)
    exact_match, _ = per_row(W_a, W_b)
    exact_mmcs = matched_mean_cosine(W_a, W_b).value
    calls = []
    monkeypatch.setattr(approx, "EXACT_MAX", 100)
    for name in ("match_by_candidates", "assignment_from_similarity"):
        original = getattr(approx, name)
        monkeypatch.setattr(approx, name, lambda *a, _f=original, _n=name, **kw: calls.append(_n) or _f(*a, **kw))
    match, _ = per_row(W_a, W_b)
    mmcs = matched_mean_cosine(W_a, W_b).value
    assert calls == ["match_by_candidates", "assignment_from_similarity"]
    assert np.array_equal(match, exact_match) and np.array_equal(match[perm], np.arange(120))
    assert float(mmcs) == pytest.approx(float(exact_mmcs), abs=1e-6)
