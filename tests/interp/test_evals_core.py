"""Core metrics on hand-set dictionaries whose reconstruction is known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from interp.evals.core import (
    core_output_parts,
    density_metrics,
    downstream_stats,
    downstream_stats_many,
    max_other_cosine,
    reconstruction_stats,
    weight_stats,
)
from tests.interp.evals_toys import LinearDictionary, exact_dictionary


def batches(x, per=50):
    seq = torch.arange(len(x)) // 10  # sequences of 10 tokens
    return [(x[i:i + per], seq[i:i + per]) for i in range(0, len(x), per)]


def test_an_exact_dictionary_explains_everything_and_a_halving_one_shrinks_by_half():
    torch.manual_seed(0)
    x = torch.randn(200, 8) + 3.0
    exact, _ = reconstruction_stats(exact_dictionary(8), batches(x))
    assert exact["explained_variance"] == pytest.approx(1.0, abs=1e-6) and exact["mse"] == pytest.approx(0, abs=1e-8)
    assert exact["l2_ratio"] == pytest.approx(1.0) and exact["cossim"] == pytest.approx(1.0, abs=1e-6)
    half, _ = reconstruction_stats(exact_dictionary(8, 0.5), batches(x))
    mse = float((0.5 * x).pow(2).sum(1).mean())
    variance = float((x - x.mean(0)).pow(2).sum(1).mean())
    assert half["mse"] == pytest.approx(mse, rel=1e-5)
    assert half["explained_variance"] == pytest.approx(1 - mse / variance, rel=1e-5)
    assert half["l2_ratio"] == pytest.approx(0.5, rel=1e-5)
    assert half["relative_reconstruction_bias"] == pytest.approx(0.5, rel=1e-5)
    assert half["l0"] == pytest.approx(float((x != 0).sum(1).float().mean()))


def test_density_counts_tokens_and_sequences_a_latent_fires_on():
    x = torch.zeros(100, 2)
    x[:10, 0] = 1.0  # latent 0 fires on the first 10 tokens: one whole sequence
    x[::10, 1] = 1.0  # latent 1 fires on one token of each of the 10 sequences
    dictionary = LinearDictionary(torch.eye(3, 2), torch.eye(3, 2))  # latent 2 never fires
    _, per_latent = reconstruction_stats(dictionary, batches(x))
    assert per_latent["feature_density"].tolist() == pytest.approx([0.1, 0.1, 0.0])
    assert per_latent["consistent_activation_heuristic"][:2].tolist() == pytest.approx([10.0, 1.0])
    misc = density_metrics(per_latent["feature_density"])
    assert misc["dead_fraction"] == pytest.approx(1 / 3) and misc["frac_alive"] == pytest.approx(2 / 3)
    assert misc["freq_over_1_percent"] == pytest.approx(2 / 3) and misc["dense_fraction"] == 0.0


def test_weight_statistics_and_max_cosine():
    W = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    assert max_other_cosine(W, chunk=2).tolist() == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2), 0.0], abs=1e-6)
    dictionary = LinearDictionary(W, W)
    stats = weight_stats(dictionary)
    assert stats["encoder_decoder_cosine_sim"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert stats["encoder_norm"].tolist() == pytest.approx([1.0, math.sqrt(2), 1.0])


def test_spliced_exact_dictionary_keeps_the_model_and_the_output_is_saebench_shaped(tiny_model):
    tokens = torch.randint(1, 4096, (2, 12))
    tokens[:, 0] = tiny_model.tokenizer.bos_token_id
    d = tiny_model.cfg.d_model
    exact = downstream_stats(tiny_model, "blocks.0.hook_resid_post", exact_dictionary(d), [tokens])
    assert exact["ce_loss_with_sae"] == pytest.approx(exact["ce_loss_without_sae"], abs=1e-4)
    assert exact["kl_div_with_sae"] == pytest.approx(0.0, abs=1e-5)
    assert exact["ce_loss_score"] == pytest.approx(1.0, abs=1e-3)
    assert exact["kl_div_score"] == pytest.approx(1.0, abs=1e-3)
    zero = downstream_stats(tiny_model, "blocks.0.hook_resid_post", exact_dictionary(d, 0.0), [tokens])
    assert zero["ce_loss_with_sae"] != pytest.approx(zero["ce_loss_without_sae"], abs=1e-4)
    x = torch.randn(40, d)
    recon, per_latent = reconstruction_stats(exact_dictionary(d), batches(x, 20))
    metrics, details, extra = core_output_parts(recon, per_latent, weight_stats(exact_dictionary(d)), exact)
    assert metrics["model_performance_preservation"]["ce_loss_score"] == exact["ce_loss_score"]
    assert len(details) == 2 * d and details[3]["index"] == 3 and "max_encoder_cosine_sim" in details[3]
    assert sum(extra["density_histogram"]["counts"]) == 2 * d
    assert all(not isinstance(v, dict) for category in metrics.values() for v in category.values())


def test_one_pass_for_several_dictionaries_gives_each_its_own_scores(tiny_model):
    """The clean and zero-ablated runs are shared; each dictionary's scores equal its run alone."""
    tokens = torch.randint(1, 4096, (2, 12))
    tokens[:, 0] = tiny_model.tokenizer.bos_token_id
    hook, d = "blocks.0.hook_resid_post", tiny_model.cfg.d_model
    dictionaries = {"exact": exact_dictionary(d), "half": exact_dictionary(d, 0.5)}
    together = downstream_stats_many(tiny_model, hook, dictionaries, [tokens, tokens.flip(0)])
    for name, dictionary in dictionaries.items():
        assert together[name] == downstream_stats(tiny_model, hook, dictionary, [tokens, tokens.flip(0)])
    assert together["exact"]["kl_div_score"] == pytest.approx(1.0, abs=1e-3)
    assert together["half"]["kl_div_with_sae"] > 1e-4
