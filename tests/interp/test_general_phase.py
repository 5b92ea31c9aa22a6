"""The demo model's later training phases: the data they draw and an exact resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from interp.demo.general_phase import GeneralPhaseConfig, TokenSources, induction_batch, train_general_phase


def test_induction_rows_repeat_their_span_and_mask_the_copyable_tokens(demo_model):
    windows = torch.randint(3, 4096, (200, 128), generator=torch.Generator().manual_seed(0))
    sources = TokenSources(demo_model.tokenizer, demo_model.cfg.d_vocab, windows)
    rows, mask = induction_batch(sources, 12, 96, bos=0, generator=torch.Generator().manual_seed(1))
    assert rows.shape == (12, 96) and (rows[:, 0] == 0).all()
    for row, m in zip(rows, mask):
        targets = row[1:][m]  # the tokens predicted at the masked positions: the second copy bar its first token
        where = m.nonzero().flatten()
        half = len(where) + 1
        first_copy = row[where[0] - half + 1: where[0]]  # the first copy bar its first token
        assert len(where) >= 3 and torch.equal(targets, first_copy)


@pytest.mark.slow
def test_a_resumed_phase_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    from interp.models import load_model

    torch.set_num_threads(1)
    cfg = GeneralPhaseConfig(steps=4, warmup=1, text_rows=1, induction_rows=2, ioi_rows=4, eval_every=100,
                             checkpoint_every=2, tag="t")
    straight = load_model("demo")
    train_general_phase(straight, cfg, tmp_path / "straight")
    resumed = load_model("demo")
    train_general_phase(resumed, dataclasses.replace(cfg, stop_at=2), tmp_path / "resumed")  # "killed" at step 2
    again = load_model("demo")
    history = train_general_phase(again, cfg, tmp_path / "resumed")
    assert [row["step"] for row in history] == [0, 2, 4]
    for (name, a), b in zip(straight.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
