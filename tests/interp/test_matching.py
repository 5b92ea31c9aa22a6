"""The one Hungarian matcher: a planted permutation is recovered, unmatched rows are marked, and every
caller (MFR, evaluation, dashboards, Compare) gets the same assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.features.matching import cosine_matrix, hungarian, match_features, match_per_row


def planted(n: int = 30, d: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, d, generator=g)
    perm = torch.randperm(n, generator=g)
    scale = torch.rand(n, 1, generator=g) * 5 + 0.1  # decoder norms do not matter, only directions
    return W, perm, W[perm] * scale + 0.01 * torch.randn(n, d, generator=g)


def test_a_planted_permutation_is_recovered_with_cosine_near_one():
    W, perm, W_b = planted()
    match = match_features(W_b, W)
    assert torch.equal(match.rows, torch.arange(30)) and torch.equal(match.cols, perm)
    assert match.cos.min() > 0.99
    other, score = match_per_row(match, 30)
    assert np.array_equal(other, perm.numpy()) and np.allclose(score, match.cos.numpy())


def test_more_rows_than_columns_leaves_rows_unmatched():
    W, perm, W_b = planted(n=10)
    extra = torch.cat([W_b, -W_b[:3]])  # three rows whose only counterparts are taken
    match = match_features(extra, W)
    assert len(match.rows) == 10
    other, score = match_per_row(match, 13)
    assert np.array_equal(other[:10], perm.numpy())
    assert (other[10:] == -1).all() and np.isnan(score[10:]).all()


def test_hungarian_beats_greedy_on_a_known_matrix():
    # greedy takes (0, 0) = 0.9 and is left with (1, 1) = 0.0; the optimum pairs off-diagonal: 0.8 + 0.8
    rows, cols = hungarian(torch.tensor([[0.9, 0.8], [0.8, 0.0]]))
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_cosine_matrix_keeps_the_gradient_the_mfr_penalty_needs():
    A = torch.randn(5, 4, requires_grad=True)
    B = torch.randn(5, 4)
    similarity = cosine_matrix(A, B)
    rows, cols = hungarian(similarity)
    similarity[rows, cols].mean().backward()
    assert A.grad is not None and A.grad.abs().sum() > 0
    assert similarity.detach().abs().max() <= 1 + 1e-6


def test_mfr_and_evaluation_use_the_same_assignment():
    from sae_training.metrics import ground_truth_similarity
    from sae_training.mfr import matched_mean_cosine

    W, perm, W_b = planted()
    match = match_features(W_b, W)
    mfr = matched_mean_cosine(W_b, W)
    assert torch.equal(mfr.cols, match.cols) and float(mfr.value) == pytest.approx(float(match.cos.mean()), abs=1e-6)
    truth = ground_truth_similarity(W, W_b)
    assert truth["mmcs_true"] == pytest.approx(float(match.cos.mean()), abs=1e-6)
