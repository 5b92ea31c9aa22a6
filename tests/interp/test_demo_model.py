"""The bundled demo model has the circuit it was trained to have: previous-token -> induction."""

from __future__ import annotations

import torch

from interp.attention import head_scores_on_repeated_tokens, repeated_random_tokens
from interp.models import demo_circuit


def test_second_repeat_is_predicted_far_better_than_the_first(demo_model):
    half = 40
    low, high = demo_circuit()["induction_alphabet"]
    tokens = repeated_random_tokens(16, half, low, high, demo_model.tokenizer.bos_token_id, seed=11)
    with torch.no_grad():
        losses = demo_model(tokens, return_type="loss", loss_per_token=True)  # [batch, pos-1]
    first = losses[:, 1:half].mean()       # predicting tokens 2..half: random, nothing to copy
    second = losses[:, half + 1:].mean()   # predicting the repeat: copyable
    assert first > 0.8 * torch.log(torch.tensor(float(high - low))), "random tokens should be unpredictable"
    assert second < 0.25 * first, f"induction loss {second:.2f} is not far below {first:.2f}"


def test_named_heads_score_high_on_fresh_prompts(demo_model):
    circuit = demo_circuit()
    prev_layer, prev_head = circuit["previous_token_head"]
    ind_layer, ind_head = circuit["induction_head"]
    assert (prev_layer, ind_layer) == (0, 1)
    scores = head_scores_on_repeated_tokens(demo_model, n_prompts=16, half_length=50, seed=123)
    assert scores["previous_token"][prev_layer, prev_head] > 0.35
    assert scores["induction"][ind_layer, ind_head] > 0.3
    assert int(scores["previous_token"][0].argmax()) == prev_head
    assert int(scores["induction"][1].argmax()) == ind_head
