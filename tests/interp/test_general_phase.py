"""The demo model's later training phases: the data they draw and an exact resume."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from interp.circuits.ioi_circuit import name_positions
from interp.models.demo.general_phase import (
    GeneralPhaseConfig,
    TokenSources,
    induction_batch,
    ioi_batch,
    train_general_phase,
    with_aside,
    with_prefix,
)


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


def test_asides_and_openers_move_the_names_but_keep_the_task(demo_model):
    """With asides and random openers, S2 sits at many distances from the end and IO / S1 at many positions;
    every prompt still mentions IO once and S twice (``name_positions`` checks that), answer IO."""
    windows = torch.randint(3, 4096, (50, 128), generator=torch.Generator().manual_seed(0))
    sources = TokenSources(demo_model.tokenizer, demo_model.cfg.d_vocab, windows)
    rng = random.Random(0)
    template = "When{A} and{B} went to the {PLACE},{C} gave a {OBJECT} to"
    aside = with_aside(template, sources.aside_words, rng)
    assert aside.startswith("When{A} and{B} went to the {PLACE},{C},") and aside.endswith(", gave a {OBJECT} to")
    opened = with_prefix(template, sources.aside_words, rng)
    assert opened.endswith(template[len("When"):]) and opened[0].isupper() and "{" not in opened[:opened.index("{A}")]
    s2_from_end, first_name_at, clashes, pseudo_rows = set(), set(), 0, 0
    for seed in range(4):
        named, pseudo = ioi_batch(demo_model, sources, 64, seed, asides=1.0, prefixes=1.0)
        at = name_positions(named)  # character names never occur among the lower-case aside words
        s2_from_end |= set((named.end - at["s2"]).tolist())
        first_name_at |= set(torch.minimum(at["io"], at["s1"]).tolist())
        # random-word names can: a known quirk of the committed phases 8-9, kept rare
        for row, io, subject, end in zip(pseudo.clean, pseudo.io, pseudo.subject, pseudo.end):
            tokens = row[: int(end) + 1]
            clashes += int((tokens == io).sum() != 1 or (tokens == subject).sum() != 2)
        pseudo_rows += len(pseudo.end)
    assert len(s2_from_end) >= 8 and len(first_name_at) >= 5
    assert clashes / pseudo_rows < 0.1, f"{clashes} of {pseudo_rows} random-word rows repeat a name"


@pytest.mark.slow
def test_a_resumed_phase_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    from interp.models.loading import load_model

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
