"""The bundled demo model has the circuits it was trained to have, outside the data it was trained on:
induction on three token sources, an IOI task on held-out names and templates, named heads."""

from __future__ import annotations

import pytest
import torch

from interp.attention import head_scores_on_repeated_tokens
from interp.demo.corpus import demo_windows
from interp.induction import most_frequent_tokens, ordinary_token_ids, repeat_loss, spans_from_pool, spans_from_windows
from interp.models import demo_circuit
from interp.prompts import demo_ioi_prompts, ioi_scores

SPAN = 40


@pytest.fixture(scope="module")
def sources(demo_model):
    tokenizer = demo_model.tokenizer
    train = demo_windows(tokenizer, demo_model.cfg.n_ctx, held_out=False)
    return {
        "uniform": ordinary_token_ids(tokenizer, demo_model.cfg.d_vocab),
        "frequent": most_frequent_tokens(train[:, 1:].tolist(), 2000, exclude={tokenizer.bos_token_id}),
        "held_out": demo_windows(tokenizer, demo_model.cfg.n_ctx, held_out=True),
    }


@pytest.mark.parametrize("source", ["uniform", "frequent", "held_out"])
def test_second_copy_is_predicted_far_better_than_the_first(demo_model, sources, source):
    """BOS + span + span, span 40: the repeat's loss is below 30 % of the first copy's, whether the span is
    uniform over the vocabulary, common words, or a window of a work the model never trained on in phase 3."""
    generator = torch.Generator().manual_seed(2024)  # not the seed of the training-time checks
    if source == "held_out":
        spans = spans_from_windows(sources["held_out"], 16, SPAN, generator)
    else:
        spans = spans_from_pool(sources[source], 16, SPAN, generator)
    loss = repeat_loss(demo_model, spans, demo_model.tokenizer.bos_token_id)
    assert loss.first > 2.0, f"the first copy of {source} spans should be hard to predict ({loss.first:.2f})"
    assert loss.ratio < 0.3, f"{source}: second copy loss {loss.second:.2f} vs first {loss.first:.2f}"


def test_named_heads_score_high_on_fresh_prompts_over_the_whole_vocabulary(demo_model):
    circuit = demo_circuit()
    prev_layer, prev_head = circuit["previous_token_head"]
    ind_layer, ind_head = circuit["induction_head"]
    assert (prev_layer, ind_layer) == (0, 1)
    scores = head_scores_on_repeated_tokens(demo_model, n_prompts=16, half_length=50, seed=123)
    assert int(scores["previous_token"][0].argmax()) == prev_head
    assert int(scores["induction"][1].argmax()) == ind_head
    assert scores["previous_token"][prev_layer, prev_head] > 0.35
    assert scores["induction"][ind_layer, ind_head] > 0.3


def test_ioi_is_solved_on_held_out_names_and_templates(demo_model):
    scores = ioi_scores(demo_model, demo_ioi_prompts(demo_model, 96, seed=2024, held_out=True))
    assert scores["logit_diff"] > 1.0 and scores["accuracy"] >= 0.9, scores


def test_swapping_the_names_flips_the_answer(demo_model):
    """The counterfactual with IO and S exchanged must move the prediction with them."""
    prompts = demo_ioi_prompts(demo_model, 64, seed=5, held_out=True, counterfactual="swap_names")
    with torch.no_grad():
        logits = demo_model(prompts.corrupt)
    rows = torch.arange(len(prompts.end))
    final = logits[rows, prompts.end]
    diff = final[rows, prompts.corrupt_io] - final[rows, prompts.corrupt_subject]
    assert (diff > 0).float().mean() >= 0.9


def test_recorded_ioi_roles_are_the_heads_that_matter(demo_model):
    """Knocking out the recorded name mover (or the head feeding it the repeated name) by patching it
    from the ABC counterfactual costs more of the logit difference than any other head of its layer."""
    from interp.ioi_circuit import ioi_head_table

    roles = demo_circuit()["ioi"]
    table = ioi_head_table(demo_model, demo_ioi_prompts(demo_model, 48, seed=11, template=1))
    for role in ("name_mover", "s_signal"):
        layer, head = roles[role]
        mine = table[(table.layer == layer)]
        assert mine.patch_effect.abs().idxmax() == mine[mine["head"] == head].index[0], (role, table)
    mover = table[(table.layer == roles["name_mover"][0]) & (table["head"] == roles["name_mover"][1])].iloc[0]
    assert mover.attn_end_io > mover.attn_end_s2, "a name mover attends to the indirect object, not the subject"
