"""MFR, checked against PAPERS.md §1 "How to verify"."""

import pytest
import torch
import torch.nn.functional as F

from sae_training.mfr import matched_mean_cosine, mfr_penalty, mfr_warmup


def test_permuted_dictionary_matches_perfectly_and_recovers_the_permutation():
    A = F.normalize(torch.randn(64, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    match = matched_mean_cosine(A, A[perm])
    assert float(match.value) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(perm[match.cols], match.rows)  # row r of A is matched to the row of B that holds it


def test_negated_vector_scores_minus_one_but_matching_avoids_negations():
    # PAPERS.md says B = -A gives -1; that holds for one row only: with many rows the Hungarian
    # matching maximises similarity and pairs rows with other (less negative) rows instead.
    a = F.normalize(torch.randn(1, 8), dim=-1)
    assert float(matched_mean_cosine(a, -a).value) == pytest.approx(-1.0, abs=1e-6)
    A = F.normalize(torch.randn(20, 8), dim=-1)
    assert float(matched_mean_cosine(A, -A).value) > -1.0 + 0.1


def test_random_dictionaries_512_in_256_dims_score_about_0_18():
    g = torch.Generator().manual_seed(0)
    value = float(matched_mean_cosine(torch.randn(512, 256, generator=g), torch.randn(512, 256, generator=g)).value)
    assert 0.16 < value < 0.20


def test_cosine_warmup_values():
    assert mfr_warmup(1, 100) == pytest.approx(0.00025, abs=1e-5)
    assert mfr_warmup(50, 100) == pytest.approx(0.5)
    assert mfr_warmup(100, 100) == 1.0 and mfr_warmup(250, 100) == 1.0


def test_penalty_is_mean_over_pairs_and_zero_for_one_member():
    W = torch.randn(3, 16, 8, requires_grad=True)
    penalty, mmcs, _ = mfr_penalty(W, coefficient=3.0, step=100, warmup_steps=100)
    expected = [float(matched_mean_cosine(W[a], W[b]).value) for a, b in [(0, 1), (0, 2), (1, 2)]]
    torch.testing.assert_close(mmcs.detach(), torch.tensor(expected))
    assert float(penalty) == pytest.approx(3.0 * (1 - sum(expected) / 3), rel=1e-5)
    penalty.backward()
    assert W.grad.abs().sum() > 0
    alone, _, _ = mfr_penalty(torch.randn(1, 16, 8), 3.0, 200)
    assert float(alone) == 0.0


def test_penalty_gradient_pulls_members_together():
    W = torch.randn(2, 16, 8, requires_grad=True)
    optimizer = torch.optim.SGD([W], lr=0.5)
    first = None
    for _ in range(50):
        penalty, mmcs, _ = mfr_penalty(W, 1.0, step=1000)
        first = float(mmcs) if first is None else first
        optimizer.zero_grad()
        penalty.backward()
        optimizer.step()
    assert float(mmcs) > first + 0.2


def test_matched_penalty_has_the_full_similarity_gradient_without_forming_it_under_autograd():
    """The penalty gathers the matched row pairs; value and gradient equal indexing the full cosine matrix."""
    import torch.nn.functional as F

    from sae_training.mfr import member_pairs, pairwise_matched_cosine

    g = torch.Generator().manual_seed(3)
    W = torch.randn(3, 200, 24, generator=g).requires_grad_(True)
    mmcs, assignments = pairwise_matched_cosine(W)
    (mmcs * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    gathered_grad, W.grad = W.grad.clone(), None
    normed = F.normalize(W, dim=-1)
    reference = torch.stack([(normed[a] @ normed[b].T)[rows, cols].mean()
                             for (a, b), (rows, cols) in zip(member_pairs(3), assignments)])
    (reference * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(mmcs, reference, atol=1e-6)
    assert torch.allclose(gathered_grad, W.grad, atol=1e-7)
    assert gathered_grad.abs().sum() > 0
    reused, _ = pairwise_matched_cosine(W.detach(), assignments)
    assert torch.allclose(reused, mmcs.detach(), atol=1e-6)
