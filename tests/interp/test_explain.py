"""Explanations and their scores on a planted dictionary whose latents are exact token rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from interp.explain.examples import (
    POSITIVE,
    TEST_SETS,
    TRAIN_SETS,
    ExampleArrays,
    ExampleConfig,
    collect_examples,
    example_frame,
    held_out,
)
from interp.explain.explanations import DEAD, EXPLAINED, TOO_RARE, Explainer
from interp.explain.rules import Rule, Vocabulary, explain
from interp.explain.scoring import score_rule
from tests.interp.explain_toys import (
    CAPITAL,
    CROWN_AFTER_THE,
    ID,
    KING,
    OTHERS,
    RARE,
    WORDS,
    RuleDictionary,
    decode,
    rule_stream,
    top_ids,
)
from tests.interp.explain_toys import (
    DEAD as DEAD_LATENT,
)

CONFIG = ExampleConfig(n_top=12, n_train_sample=16, n_test=24, n_random=16, n_hard=16, left=4, right=2,
                       random_rows=48)


@pytest.fixture(scope="module")
def planted():
    dictionary, chunks = RuleDictionary(), rule_stream()
    sets = collect_examples(dictionary, chunks, top_ids(chunks, dictionary), CONFIG)
    frame = example_frame(sets)
    arrays = ExampleArrays(frame, CONFIG.left)
    n_fires = (sets.fires["train"] + sets.fires["test"]).numpy()
    explainer = Explainer(arrays, Vocabulary.from_decode(decode, len(WORDS)), n_fires,
                          sets.n_tokens["train"] + sets.n_tokens["test"])
    return sets, frame, explainer, explainer.rows(range(dictionary.d_sae)).set_index("feature")


def test_training_and_held_out_windows_never_share_a_sequence(planted):
    _, frame, _, _ = planted
    train = frame[frame.set.isin(TRAIN_SETS)]
    test = frame[frame.set.isin(TEST_SETS)]
    assert len(train) and len(test)
    for feature in frame.feature.unique():
        shared = set(train[train.feature == feature].sequence) & set(test[test.feature == feature].sequence)
        assert not shared, f"feature {feature}: sequences {shared} in both"


def test_the_split_follows_the_hash_and_sends_about_half_the_sequences_each_way(planted):
    import torch

    _, frame, _, _ = planted
    flags = held_out(torch.tensor(frame.sequence.to_numpy())).numpy()
    assert (flags == frame.set.isin(TEST_SETS).to_numpy()).all()
    share = held_out(torch.arange(10_000)).float().mean().item()
    assert 0.45 < share < 0.55


def test_negative_windows_are_silent_and_hard_ones_sit_on_a_top_token(planted):
    _, frame, _, _ = planted
    negative = frame[~frame.set.isin(POSITIVE)]
    assert all(max(acts) == 0 for acts in negative.context_acts)
    hard = frame[(frame.feature == CROWN_AFTER_THE) & frame.set.str.endswith("hard")]
    assert len(hard) > 5
    centres = {ids[CONFIG.left] for ids in hard.context_ids}
    previous = {ids[CONFIG.left - 1] for ids in hard.context_ids}
    assert centres == {ID[" crown"]} and ID[" the"] not in previous  # ' crown' where it does not fire
    positive = frame[(frame.feature == KING) & frame.set.isin(POSITIVE)]
    assert {ids[CONFIG.left] for ids in positive.context_ids} == {ID[" king"]}


def test_each_planted_rule_is_recovered(planted):
    *_, table = planted
    assert Rule.from_json(table.rule[KING]) == Rule("tokens", (ID[" king"],))
    assert Rule.from_json(table.rule[CROWN_AFTER_THE]) == Rule("after", (ID[" crown"],), (ID[" the"],))
    assert Rule.from_json(table.rule[CAPITAL]) == Rule("class", name="capitalised word")
    for latent, word in zip(OTHERS, [" sword", " horse", " love", " night", " day"]):
        assert Rule.from_json(table.rule[latent]) == Rule("tokens", (ID[word],))
    assert table.explanation[CROWN_AFTER_THE] == "' crown' after ' the'"
    assert table.explanation[CAPITAL] == "any capitalised word"


def test_recovered_rules_score_high_and_random_explanations_near_chance(planted):
    *_, table = planted
    live = [KING, CROWN_AFTER_THE, CAPITAL, *OTHERS]
    assert (table.status[live] == EXPLAINED).all()
    assert (table.detection[live] >= 0.95).all(), table.detection[live]
    assert (table.detection_hard[[CROWN_AFTER_THE]] >= 0.95).all()
    assert (table.baseline_detection[live] <= 0.6).all(), table.baseline_detection[live]
    assert (table.fuzzing[live] >= 0.95).all(), table.fuzzing[live]
    assert (table.simulation[live] > table.baseline_simulation[live] + 0.5).all()
    for latent in live:
        assert latent not in table.baseline_features[latent] and len(table.baseline_features[latent]) == 3


def test_a_token_only_rule_loses_to_the_context_rule_on_the_hard_negatives(planted):
    _, _, explainer, table = planted
    held = explainer.held_out(CROWN_AFTER_THE)
    token_only = score_rule(Rule("tokens", (ID[" crown"],)), held, explainer.vocab)
    assert table.detection_hard[CROWN_AFTER_THE] >= 0.95
    assert token_only["detection_hard"] <= 0.55  # fires on every hard negative: ' crown' not after ' the'
    assert token_only["detection"] < table.detection[CROWN_AFTER_THE] - 0.1


def test_the_dead_latent_is_reported_dead_and_the_rare_one_is_not_scored(planted):
    *_, table = planted
    assert table.status[DEAD_LATENT] == DEAD and table.explanation[DEAD_LATENT].startswith("dead: never fired")
    assert table.status[RARE] == TOO_RARE and table.explanation[RARE].startswith("too rare to explain (2 firings")
    for latent in (DEAD_LATENT, RARE):
        assert all(math.isnan(table[s][latent]) for s in ("detection", "fuzzing", "simulation",
                                                           "baseline_detection"))
        assert latent not in {p for ps in table.baseline_features for p in ps}


def test_the_explainer_only_reads_its_training_windows(planted):
    """Explaining from the training sets alone gives the stored rule: the held-out windows play no part."""
    _, _, explainer, table = planted
    train = explainer.arrays.feature_examples(CROWN_AFTER_THE).subset(TRAIN_SETS)
    assert explain(train, explainer.vocab).rule == Rule.from_json(table.rule[CROWN_AFTER_THE])


def test_vocabulary_classes():
    vocab = Vocabulary(["HAMLET", " King", "king", ".", ",--", " 42", "\n", "I", " x1"])
    ids = np.arange(len(vocab))[None, :]
    assert vocab.in_class("speaker name", ids)[0].tolist() == [True] + [False] * 8
    assert vocab.in_class("capitalised word", ids)[0].tolist() == [True, True, False, False, False, False, False,
                                                                    True, False]
    assert vocab.in_class("punctuation", ids)[0].tolist() == [False] * 3 + [True, True] + [False] * 4
    assert vocab.in_class("number", ids)[0].tolist() == [False] * 5 + [True] + [False] * 3
    line_start = Rule("line start").matches(np.array([[6, 1, 6, 2]]), vocab)
    assert line_start.tolist() == [[False, True, False, True]]
