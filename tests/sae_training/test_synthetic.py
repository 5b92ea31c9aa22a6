"""Synthetic ground truth: the generator's structure, the oracle's perfect score, recovery by training."""

import pytest
import torch
from typer.testing import CliRunner

from app.cli import app
from app.commands.units import parse_tokens
from sae_training.config import TrainConfig
from sae_training.metrics import ground_truth_similarity
from sae_training.synthetic import SyntheticData, generate
from sae_training.trainer import train_saes


def test_each_point_has_active_features_from_one_group():
    spec = SyntheticData(d=16, n_true=40, groups=4, active=3)
    x, features, group, coeffs = generate(spec, 500, seed=1)
    assert x.shape == (500, 16) and features.shape == (16, 40)
    assert torch.equal((coeffs > 0).sum(1), torch.full((500,), 3))
    assert torch.equal((coeffs > 0).nonzero()[:, 1] // 10, group.repeat_interleave(3))
    torch.testing.assert_close(x, coeffs @ features.T)


def test_shared_support_mode_gives_one_support_per_group_and_chunk():
    spec = SyntheticData(d=8, n_true=20, groups=2, active=4, shared_support_per_chunk=True, chunk=100)
    _, _, group, coeffs = generate(spec, 200, seed=0)
    first = (coeffs[:100][group[:100] == 0] > 0)
    assert bool((first == first[0]).all())


def test_oracle_dictionary_scores_one_and_random_scores_low():
    _, features, _, _ = generate(SyntheticData(), 10, seed=0)
    assert ground_truth_similarity(features.T, features.T) == pytest.approx(
        {"mmcs_true": 1.0, "mmcs_true_max": 1.0, "recovered_fraction": 1.0}, abs=1e-5)
    assert ground_truth_similarity(torch.randn(128, 64), features.T)["recovered_fraction"] == 0.0


@pytest.mark.slow
def test_training_moves_latents_toward_planted_features(tmp_path):
    spec = SyntheticData(d=32, n_true=48, groups=4, active=3)
    x, features, _, _ = generate(spec, 30_000, seed=0)
    config = TrainConfig(architecture="topk", d_sae=48, k=3, n_members=2, mfr_coefficient=1.0,
                         n_tokens=512 * 80, batch_size=512, lr=5e-3, mse_reduction="mean",
                         normalize_activations="none", b_dec_init="zeros", log_every=80, buffer_tokens=4096,
                         eval_ce_batches=0, eval_batches=2)
    before = train_saes(config, tmp_path / "a", activations=x, progress=False, stop_at_step=1, evaluate=False)
    start = ground_truth_similarity(before.member(0).W_dec, features.T)["mmcs_true"]
    run = train_saes(config, tmp_path / "a", activations=x, progress=False, resume=True)
    assert ground_truth_similarity(run.member(0).W_dec, features.T)["mmcs_true"] > start + 0.1


def test_token_counts_and_cli_errors():
    assert parse_tokens("10M") == 10_000_000 and parse_tokens("500k") == 500_000
    result = CliRunner().invoke(app, ["train", "--model", "demo", "--arch", "nope"])
    assert result.exit_code == 2 and "unknown architecture 'nope'" in result.output


def test_stream_gives_fresh_points_from_fixed_features_and_replays_a_batch_on_resume():
    from sae_training.synthetic import PAPER_DATA, SyntheticStream, generate, sample_points

    stream = SyntheticStream(PAPER_DATA, data_seed=3)
    assert torch.equal(stream.features, generate(PAPER_DATA, 1, seed=3)[1])
    store = stream.open_stream(seed=0, start_batch=0, batch_size=64)
    first, second = next(store), next(store)
    assert first.shape == (64, 256) and not torch.equal(first, second)
    assert torch.equal(stream.open_stream(seed=0, start_batch=1, batch_size=64).__next__(), second)
    # each point is a U(0,1)-weighted sum of 32 features of one group: recover its coefficients exactly
    g = torch.Generator().manual_seed(5)
    x = sample_points(PAPER_DATA, torch.eye(512), 100, g)  # identity "features": x = the coefficients
    active = x != 0
    assert bool((active.sum(1) == 32).all()) and float(x.max()) <= 1.0 and float(x.min()) >= 0.0
    group = active.float().argmax(1) // 42
    assert bool(((active.nonzero()[:, 1] // 42) == group[active.nonzero()[:, 0]]).all())
