"""Probing a text gives the codes that encoding the cached activations of the same tokens gives, the
dashboards' stored top-context values, and windows long texts without cutting them silently."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.cache.store import CacheFolder
from interp.features.dictionary import DictionaryError, load_dictionary
from interp.features.probe import MAX_TOKENS, probe, probe_tokens, windows_of
from interp.store.analysis_folder import AnalysisFolder
from interp.store.errors import InputError
from tests.workspace import HOOK


@pytest.fixture(scope="module")
def cached(workspace):
    """The workspace's cache at the SAE's hook: activations, token ids and sequence ids of every token."""
    cache = CacheFolder(workspace / "cached_activations" / "demo")
    acts = cache.read_all(HOOK)
    tokens = [cache.tokens(i) for i in range(cache.n_shards)]
    ids = torch.cat([t["token_ids"] for t in tokens]).long()
    sequence = torch.cat([t["sequence"] for t in tokens]).long()
    return acts, ids, sequence


@pytest.fixture(scope="module")
def sae(workspace):
    return load_dictionary(workspace / "runs" / "demo-mfr" / "sae_0")


def test_probing_cached_sequences_gives_the_codes_of_their_cached_activations(tiny_model, sae, cached):
    acts, ids, sequence = cached
    body = tiny_model.cfg.n_ctx - 1
    rows = torch.cat([(sequence == s).nonzero().flatten()[1:] for s in range(3)])  # 3 sequences, BOS dropped
    # the three bodies back to back, read in windows of one context with no overlap: each window is a cached one
    result = probe_tokens(tiny_model, {"sae_0": sae}, ids[rows].tolist(), overlap=0)
    assert result.windows == [(0, body), (body, 2 * body), (2 * body, 3 * body)] and result.notes
    with torch.no_grad():
        expected = sae.encode(acts[rows]).numpy()
    np.testing.assert_allclose(result.codes["sae_0"].toarray(), expected, atol=1e-5)
    firing = int(np.argmax((expected > 0).sum(0)))
    np.testing.assert_allclose(result.feature("sae_0", firing), expected[:, firing], atol=1e-5)


def test_probing_a_top_context_gives_the_dashboards_stored_values(workspace, tiny_model, sae, cached):
    _, ids, sequence = cached
    folder = AnalysisFolder.of_sae(workspace / "analyses", workspace / "runs" / "demo-mfr" / "sae_0")
    top = folder.read_table("examples").query("kind == 'top'").sort_values("activation", ascending=False)
    labels = folder.read_table("features").sort_values("feature").label.tolist()
    checked = 0
    for example in top.head(12).itertuples():
        tokens = ids[sequence == example.sequence]  # the whole cached window, BOS first
        result = probe_tokens(tiny_model, {"sae_0": sae}, tokens[1:].tolist(), labels={"sae_0": labels})
        acts = result.feature("sae_0", int(example.feature))
        assert acts[example.position - 1] == pytest.approx(example.activation, abs=1e-5)
        start = example.position - example.center  # the stored context around it, token by token
        with_bos = np.concatenate([[0.0], acts])  # the dashboards show BOS (never its activation) as 0
        np.testing.assert_allclose(with_bos[start:start + len(example.context_acts)], example.context_acts, atol=1e-5)
        row = result.token_features("sae_0", example.position - 1).set_index("feature").loc[example.feature]
        assert row.label == labels[example.feature]
        checked += 1
    assert checked == 12


def test_shares_of_a_token_sum_to_one_and_the_top_k_is_sorted(tiny_model, sae):
    result = probe(tiny_model, {"sae_0": sae}, "To be, or not to be, that is the question")
    table = result.top_features("sae_0", k=sae.d_sae)
    assert np.allclose(table.groupby("position").share.sum(), 1.0)
    top = result.top_features("sae_0", k=3)
    assert (top.groupby("position").activation.apply(lambda a: bool(np.all(np.diff(a) <= 0)))).all()
    assert top.groupby("position").size().max() == 3
    assert result.tokens == [tiny_model.tokenizer.decode([t]) for t in result.token_ids]


def test_a_long_text_is_windowed_with_overlap_and_every_token_read_once(tiny_model, sae):
    text = " ".join(["Friends, Romans, countrymen, lend me your ears; I come to bury Caesar"] * 12)
    result = probe(tiny_model, {"sae_0": sae}, text, overlap=8)
    n = len(result.token_ids)
    assert n > 3 * tiny_model.cfg.n_ctx and result.codes["sae_0"].shape == (n, sae.d_sae)
    assert "windows overlapping by 8 tokens" in " ".join(result.notes)
    spans = windows_of(n, tiny_model.cfg.n_ctx - 1, 8)
    for start, end, keep in spans:  # each token's codes are those of its own window, read alone
        alone = probe_tokens(tiny_model, {"sae_0": sae}, result.token_ids[start:end])
        np.testing.assert_allclose(result.codes["sae_0"][keep:end].toarray(),
                                   alone.codes["sae_0"][keep - start:].toarray(), atol=1e-6)
    assert [keep for _, _, keep in spans][1:] == [start + 8 for start, _, _ in spans][1:]


def test_a_huge_paste_is_cut_with_a_note_and_bounded_work(tiny_model, sae):
    result = probe(tiny_model, {"sae_0": sae}, "word " * 300_000, max_tokens=256)
    assert len(result.token_ids) == 256 and any("probed the first 256" in note for note in result.notes)
    assert any("characters" in note for note in result.notes) and MAX_TOKENS >= 256


@pytest.mark.parametrize("text", ["", "   \n\t", "\x00\x07\u200b"])
def test_an_empty_text_is_refused(tiny_model, sae, text):
    with pytest.raises(InputError, match="empty"):
        probe(tiny_model, {"sae_0": sae}, text)


def test_an_sae_that_does_not_fit_the_model_is_refused(tiny_model, sae):
    with pytest.raises(DictionaryError, match="no hook 'blocks.7.hook_resid_post'"):
        probe(tiny_model, {"sae_0": sae}, "hello there", hooks={"sae_0": "blocks.7.hook_resid_post"})
    with pytest.raises(DictionaryError, match="expects width 32 but hook 'blocks.0.mlp.hook_post' has width 64"):
        probe(tiny_model, {"sae_0": sae}, "hello there", hooks={"sae_0": "blocks.0.mlp.hook_post"})
    result = probe(tiny_model, {"sae_0": sae}, "hello there")
    with pytest.raises(DictionaryError, match="feature 64 is out of range"):
        result.feature("sae_0", 64)


def test_probing_the_whole_cache_makes_every_feature_exactly_as_specific_as_on_the_corpus(workspace, tiny_model, sae,
                                                                                         cached):
    """The cached sequences back to back, one window each: the text's mean per token is the corpus's."""
    from interp.features.probe import specific_features

    _, ids, sequence = cached
    bodies = torch.cat([ids[(sequence == s).nonzero().flatten()[1:]] for s in torch.unique(sequence).tolist()])
    result = probe_tokens(tiny_model, {"sae_0": sae}, bodies.tolist(), overlap=0)
    stored = AnalysisFolder.of_sae(workspace / "analyses", workspace / "runs" / "demo-mfr" / "sae_0").read_table(
        "features").sort_values("feature")
    corpus_mean = (stored.mean_activation * stored.frequency).to_numpy()
    table = specific_features(result, "sae_0", corpus_mean, k=sae.d_sae)
    alive = table[table.corpus_mean > 0]
    np.testing.assert_allclose(alive.text_mean, alive.corpus_mean, rtol=1e-4)
    np.testing.assert_allclose(alive.ratio, 1.0, rtol=1e-4)
    # a text of one repeated cached sequence is specific to the features that fire on it
    one = probe_tokens(tiny_model, {"sae_0": sae}, bodies[:31].tolist())
    top = specific_features(one, "sae_0", corpus_mean, k=5)
    assert (top.ratio > 1).all() and top.ratio.is_monotonic_decreasing
