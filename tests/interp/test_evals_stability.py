"""Seed stability: identical dictionaries, a random rotation, and live latents matched to dead ones."""

from __future__ import annotations

import pytest
import torch

from interp.evals.stability import stability_pair, stability_parts


def unit(n, d, seed):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_identical_dictionaries_share_everything():
    W = unit(64, 16, 0)
    live = torch.ones(64, dtype=torch.bool)
    out = stability_pair(W, W.clone(), live, live, W, W.clone())
    assert out["mmcs_live"] == pytest.approx(1.0) and out["mmcs_encoder_live"] == pytest.approx(1.0)
    assert out["shared_fraction_0_9"] == 1.0 == out["shared_fraction_0_7"] and out["dead_to_live_matches"] == 0


def test_a_random_rotation_scores_what_two_unrelated_dictionaries_score():
    W = unit(64, 32, 0)
    Q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(1)))
    live = torch.ones(64, dtype=torch.bool)
    rotated = stability_pair(W, W @ Q, live, live)
    chance = stability_pair(W, unit(64, 32, 2), live, live)
    assert rotated["mmcs_live"] < 0.5 and rotated["mmcs_live"] == pytest.approx(chance["mmcs_live"], abs=0.05)
    assert rotated["shared_decoder_fraction_0_7"] == 0.0


def test_a_live_latent_matched_to_a_dead_copy_is_not_shared():
    W = unit(8, 16, 3)
    live_a = torch.ones(8, dtype=torch.bool)
    live_b = live_a.clone()
    live_b[0] = False  # B's copy of latent 0 never fired
    out = stability_pair(W, W.clone(), live_a, live_b, W, W.clone())
    assert out["mmcs_all"] == pytest.approx(1.0)  # the all-latent MMCS counts the dead copy...
    assert out["shared_fraction_0_9"] == pytest.approx(7 / 8)  # ...the live count does not
    assert out["dead_to_live_matches"] == 1 and out["live_matched_to_dead_fraction"] == pytest.approx(1 / 8)
    metrics, details, _ = stability_parts({"run/sae_1": out, "other/sae_0": out})
    assert metrics["stability"]["n_partners"] == 2
    assert metrics["stability"]["shared_fraction_0_9"] == pytest.approx(7 / 8)
    assert [d["partner"] for d in details] == ["run/sae_1", "other/sae_0"]
