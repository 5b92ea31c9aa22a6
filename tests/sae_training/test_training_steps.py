"""The trainer's named steps, each on its own: forward (lr, dead mask, loss, MFR), the finiteness check,
backward (optimiser step and dead counters), the step logger, and the state a checkpoint saves."""

from __future__ import annotations

import math

import pytest
import torch

from interp.store.run_folder import RunFolder
from sae_training.architectures import build_sae
from sae_training.config import TrainConfig
from sae_training.optim import make_optimizer
from sae_training.trainer import (
    StepLogger,
    TrainingError,
    TrainState,
    backward_step,
    check_finite,
    forward_step,
    lr_factor,
)


def config(**overrides) -> TrainConfig:
    values = dict(architecture="topk", d_sae=16, k=2, n_members=2, mfr_coefficient=0.0, n_tokens=64 * 10,
                  batch_size=64, lr=1e-2, lr_warmup_steps=4, log_every=3, dead_window=5)
    return TrainConfig(**{**values, **overrides})


def state_for(cfg: TrainConfig, d_in: int = 8, seed: int = 0) -> TrainState:
    sae = build_sae(cfg.architecture, cfg.shape(d_in), cfg.options, seed=seed)
    return TrainState(sae, make_optimizer(sae, cfg), torch.zeros(cfg.n_members, cfg.d_sae, dtype=torch.long))


def batch(seed: int = 0, d_in: int = 8) -> torch.Tensor:
    return torch.randn(64, d_in, generator=torch.Generator().manual_seed(seed))


def test_forward_step_sets_the_scheduled_lr_and_the_dead_mask_and_returns_the_architecture_loss():
    cfg = config()
    state = state_for(cfg)
    state.steps_since_fired[0, 3] = cfg.dead_window  # exactly at the window: dead
    state.steps_since_fired[1, 4] = cfg.dead_window - 1  # one short: alive
    out = forward_step(state, cfg, batch(), step=1, use_autocast=False)
    assert out.lr == pytest.approx(cfg.lr * lr_factor(1, cfg.n_steps, 4, 0)) == pytest.approx(cfg.lr * 2 / 4)
    assert all(group["lr"] == out.lr for group in state.optimizer.param_groups)
    assert out.dead.sum() == 1 and out.dead[0, 3]
    expected = state.sae.loss(batch() * state.scale, state.sae.sparsity_at(1), out.dead, cfg.mse_reduction).total
    assert torch.allclose(out.loss, expected) and out.mmcs.numel() == 0 and float(out.penalty) == 0


def test_forward_step_adds_the_mfr_penalty_and_keeps_the_assignment():
    cfg = config(mfr_coefficient=1.0, mfr_warmup_steps=0)
    state = state_for(cfg)
    out = forward_step(state, cfg, batch(), step=0, use_autocast=False)
    assert state.assignments is not None and out.mmcs.numel() == 1
    plain = state.sae.loss(batch(), state.sae.sparsity_at(0), out.dead, cfg.mse_reduction).total
    assert torch.allclose(out.loss, plain + out.penalty)


def test_check_finite_names_the_lr_for_a_bad_loss_and_the_data_for_bad_activations(tmp_path):
    cfg = config()
    out = forward_step(state_for(cfg), cfg, batch(), 0, False)
    check_finite(out, batch(), 0, cfg, 0, tmp_path)  # a finite loss passes
    out.loss = torch.tensor(math.inf)
    with pytest.raises(TrainingError, match="lower the lr"):
        check_finite(out, batch(), 0, cfg, 7, tmp_path)
    bad = batch()
    bad[3, 2] = math.nan
    with pytest.raises(TrainingError, match="non-finite activations"):
        check_finite(out, bad, 0, cfg, 7, tmp_path)


def test_backward_step_moves_the_weights_and_counts_steps_since_each_latent_fired():
    cfg = config()
    state = state_for(cfg)
    state.steps_since_fired += 3
    before = state.sae.W_enc.detach().clone()
    out = forward_step(state, cfg, batch(), 0, False)
    fired = out.parts.fired().bool()
    backward_step(state, cfg, out)
    assert not torch.equal(before, state.sae.W_enc.detach())
    assert torch.equal(state.steps_since_fired[fired], torch.zeros(int(fired.sum()), dtype=torch.long))
    assert torch.equal(state.steps_since_fired[~fired], torch.full((int((~fired).sum()),), 4))


def test_step_logger_writes_every_log_every_steps_and_the_last(tmp_path):
    cfg = config(n_tokens=64 * 7)  # 7 steps, log_every 3: rows at 3, 6 and the last (7)
    folder = RunFolder(tmp_path / "run")
    folder.write_metrics([])
    state = state_for(cfg)
    logger = StepLogger(cfg, folder, enabled=True, progress=False, start=0)
    for step in range(cfg.n_steps):
        out = forward_step(state, cfg, batch(step), step, False)
        backward_step(state, cfg, out)
        logger.after_step(step + 1, state, out)
    logger.close()
    rows = folder.metrics_rows()
    assert [r["step"] for r in rows] == [3, 6, 7]
    assert "mmcs" in rows[-1] and len(rows[-1]["members"]) == 2  # the last row measures MMCS without MFR too


def test_the_checkpoint_payload_restores_an_equal_state():
    cfg = config(mfr_coefficient=1.0, mfr_warmup_steps=0)
    state = state_for(cfg, seed=0)
    for step in range(3):
        out = forward_step(state, cfg, batch(step), step, False)
        backward_step(state, cfg, out)
    state.scale = 0.5
    payload = state.payload(3, cfg, data_position=3)
    fresh = state_for(cfg, seed=1)
    fresh.restore(payload)
    for (name, a), (_, b) in zip(state.sae.state_dict().items(), fresh.sae.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(fresh.steps_since_fired, state.steps_since_fired) and fresh.scale == 0.5
    assert all(torch.equal(r1, r2) and torch.equal(c1, c2)
               for (r1, c1), (r2, c2) in zip(state.assignments, fresh.assignments, strict=True))
    # the next step from the restored state equals the next step from the original
    a, b = (forward_step(s, cfg, batch(9), 3, False) for s in (state, fresh))
    assert torch.equal(a.loss, b.loss)
