"""Absorption on a planted first-letter world: a "starts with s" latent that the " snake" latent absorbs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.evals.absorption import (
    LETTERS,
    AbsorptionConfig,
    absorption_from_activations,
    absorption_parts,
    caveat,
    icl_prompt,
    k_sparse_f1,
    live_columns,
    split_features,
)
from tests.interp.evals_toys import LinearDictionary


def planted_world(seed: int = 0, per_letter: int = 25, d: int = 64):
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    letter, snake_dir = basis[:, :26].T, basis[:, 40]
    words = [f" {c}{'xyzw'[i % 4]}{i}" for c in LETTERS for i in range(per_letter)]
    noise = 0.3 * torch.randn(len(words), d, generator=g) / d ** 0.5
    x = torch.stack([2 * letter[LETTERS.index(w[1])] for w in words]) + noise
    snake = 2 * letter[LETTERS.index("s")] + snake_dir
    test = [i for i in range(len(words)) if i % per_letter >= per_letter - 5]
    train = [i for i in range(len(words)) if i not in test]
    encoder = torch.cat([letter, snake_dir[None]])
    encoder[LETTERS.index("s")] -= 3 * snake_dir  # the s latent is silenced on " snake"...
    decoder = torch.cat([letter, (2 * letter[LETTERS.index("s")] + snake_dir)[None]])  # ...its own latent rebuilds
    bias = torch.cat([-torch.ones(26), torch.zeros(1)])
    dictionary = LinearDictionary(encoder, decoder, bias)
    test_x, test_words = torch.cat([x[test], snake[None]]), [words[i] for i in test] + [" snake"]
    return dictionary, x[train], [words[i] for i in train], test_x, test_words


def test_the_snake_latent_absorbs_snake_and_no_other_s_word():
    dictionary, train_x, train_words, test_x, test_words = planted_world()
    config = AbsorptionConfig()
    result = absorption_from_activations(dictionary, train_x, train_words, test_x, test_words, config)
    s_words = {w["token"]: w for w in result["words"] if w["letter"] == "s"}
    assert s_words[" snake"]["absorption_fraction"] == 1.0 and s_words[" snake"]["is_full_absorption"]
    others = [w for t, w in s_words.items() if t != " snake"]
    assert len(others) == 5 and all(w["absorption_fraction"] == 0.0 and not w["is_full_absorption"] for w in others)
    assert not any(w["absorption_fraction"] or w["is_full_absorption"] for w in result["words"] if w["letter"] != "s")
    s = next(r for r in result["letters"] if r["first_letter"] == "s")
    assert s["split_feats"] == [LETTERS.index("s")] and s["num_full_absorption"] == 1
    assert s["full_absorption_rate"] == pytest.approx(1 / 6)
    metrics, details, extra = absorption_parts(result, config, n_params=None, d_sae=dictionary.d_sae)
    assert metrics["reliability"]["letters_evaluated"] == 26 == len(details)
    assert metrics["mean"]["mean_full_absorption_score"] == pytest.approx(1 / 6 / 26)
    assert extra["caveat"]["reasons"] == [f"the SAE has {dictionary.d_sae} latents; SAEBench recommends >= 16k "
                                          "for absorption to show"]


def test_the_sparse_l1_fit_ranks_latents_as_the_dense_fit_does():
    """The k-sparse probes take the live codes as a sparse matrix; the planted s latent still ranks first, and
    the ranking and F1s equal those of the dense codes (liblinear drops zeros of dense input too)."""
    dictionary, train_x, train_words, test_x, test_words = planted_world()
    codes_train, codes_test = dictionary.encode(train_x), dictionary.encode(test_x)
    y_train = np.array([w[1] == "s" for w in train_words]).astype(int)
    y_test = np.array([w[1] == "s" for w in test_words]).astype(int)
    live, matrix = live_columns(codes_train)
    assert torch.equal(torch.as_tensor(matrix.toarray()), codes_train[:, live])
    sparse_fit = k_sparse_f1(codes_train, y_train, codes_test, y_test, 3, (live, matrix))
    dense_fit = k_sparse_f1(codes_train, y_train, codes_test, y_test, 3, (live, codes_train[:, live].numpy()))
    assert sparse_fit == dense_fit and sparse_fit[0][0] == [LETTERS.index("s")]


def test_the_caveat_and_the_splitting_rule():
    config = AbsorptionConfig()
    note = caveat(3, 6_000_000, 512, config)
    assert not note["meaningful"] and len(note["reasons"]) == 3 and "3 letters" in note["reasons"][0]
    assert caveat(26, 2_000_000_000, 16_384, config)["meaningful"]
    assert split_features([([4], 0.5), ([4, 9], 0.6), ([4, 9, 1], 0.61), ([4, 9, 1, 2], 0.9)], 0.03) == [4, 9]


def test_icl_prompts_follow_saebench_and_never_show_the_word():
    import random

    prompt = icl_prompt(" snake", [" snake", " apple", " bear"], AbsorptionConfig(), random.Random(0))
    lines = prompt.split("\n")
    assert lines[0] == "" and lines[-1] == " snake has the first letter:"
    assert sorted(lines[1:-1]) == [" apple has the first letter: A", " bear has the first letter: B"]
