"""Sparse attention decomposition: exactness on a random LN model, planted circuit recovered exactly."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from circuit_toys import N_CTX, one_thread, planted_induction_model, planted_prompts, random_ln_model  # noqa: E402, F401

from interp.circuits.attention import CircuitInputError, composition_scores
from interp.circuits.decomposition import (
    all_qk_svds,
    cumulative_cutoff,
    decompose_firings,
    firing_mask,
    head_edge_matrix,
    normalized_residual,
    qk_svd,
    residual_components,
    score_terms,
    signal_dimensionality,
    sparse_support,
    trace_circuit,
    trace_head_edges,
)


def test_planted_model_does_induction(planted):
    model, tokens, mask = planted
    logits = model(tokens)
    predicted = logits[:, mask[0]].argmax(-1)[:, :-1]
    expected = tokens[:, 2:6]
    assert torch.equal(predicted, expected)


def test_score_terms_sum_to_attention_scores_with_ln_and_biases():
    model = random_ln_model()
    tokens = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(tokens)
    for layer in range(2):
        x = normalized_residual(model, cache, layer)
        for head in range(4):
            U, S, V = qk_svd(model, layer, head)
            assert U.shape == (33, 8) and S.shape == (8,)
            terms = score_terms(x[:, :, None], x[:, None, :], U, S, V, float(model.blocks[layer].attn.attn_scale))
            scores = cache[f"blocks.{layer}.attn.hook_attn_scores"][:, head]
            causal = torch.ones(16, 16, dtype=torch.bool).tril()
            torch.testing.assert_close(terms.sum(-1)[:, causal], scores[:, causal], atol=1e-4, rtol=1e-4)


def test_residual_components_sum_to_residual():
    model = random_ln_model()
    tokens = torch.randint(0, 50, (2, 10))
    _, cache = model.run_with_cache(tokens)
    names, comps = residual_components(model, cache, 1)
    assert names == ["embed", "pos_embed", "L0H0", "L0H1", "L0H2", "L0H3", "L0.b_O", "L0.mlp"]
    torch.testing.assert_close(comps.sum(0), cache["blocks.1.hook_resid_pre"], atol=1e-5, rtol=1e-5)


def test_sparse_support_takes_smallest_prefix_reaching_total():
    c = torch.tensor([[0.1, 3.0, -0.5, 1.0], [0.0, 2.0, 0.0, 0.0]])
    support = sparse_support(c)
    assert support.tolist() == [[False, True, False, True], [False, True, False, False]]
    assert sparse_support(c, frac=0.6).tolist()[0] == [False, True, False, False]


def test_sparse_support_of_a_negative_score_takes_the_most_negative_terms():
    c = torch.tensor([-1.0, -1.2, 0.5, -0.1])  # score -1.8: needs -1.2 and -1.0, not the lone +0.5
    assert sparse_support(c).tolist() == [True, True, False, False]
    assert sparse_support(-c).tolist() == sparse_support(c).tolist()


def test_planted_score_carried_by_one_component(planted):
    model, tokens, mask = planted
    sizes = signal_dimensionality(model, tokens, mask)
    induction = sizes[(sizes.layer == 1) & (sizes.head == 0)]["size"]
    previous = sizes[(sizes.layer == 0) & (sizes.head == 0)]["size"]
    assert (induction == 1).all() and (previous == 1).all()


def test_svd_tracing_recovers_exactly_the_planted_edge(planted):
    model, tokens, mask = planted
    edges = trace_head_edges(model, tokens, mask)
    induction = edges[(edges.source_layer >= 0) & (edges.layer == 1) & (edges["head"] == 0)]
    carrying = induction[induction.fraction.abs() > 1e-3]
    assert [(r.source, r.side) for r in carrying.itertuples()] == [("L0H0", "key")]
    assert carrying.iloc[0].fraction == pytest.approx(1.0, abs=1e-3)
    assert induction[induction.source != "L0H0"].weight.abs().max() < 1e-4
    assert (edges[edges.layer == 1].groupby("head").n_firings.first().index == [0]).all()  # only L1H0 fires on the copy
    key_matrix = head_edge_matrix(edges, "key", 2, 2)
    assert key_matrix.flatten().argmax().item() == torch.tensor([0, 0, 1, 0]).dot(torch.tensor([8, 4, 2, 1])).item()


def test_reference_edge_weight_by_hand_on_the_planted_model(planted):
    """L1H0's one used component pairs u = e_T[t] with v = e_TP[t] (σ = 30(1 + t/10)); L0H0 writes
    Σ_j A0[s, j] e_TP[token_j] at the source, so its weight is √σ · Σ_j A0[s, j] [token_j = t]."""
    model, tokens, mask = planted
    _, cache = model.run_with_cache(tokens)
    out = decompose_firings(model, cache, 1, 0, mask)
    assert len(out["batch"]) == int(mask.sum())  # every destination in the copy fires once
    prev = cache["blocks.0.attn.hook_pattern"][:, 0]
    row = out["names"].index("L0H0")
    for i in range(len(out["batch"])):
        b, d, s = int(out["batch"][i]), int(out["dest"][i]), int(out["src"][i])
        t = int(tokens[b, d])
        assert int(tokens[b, s - 1]) == t  # the source is the token after the earlier copy
        expected = (30 * (1 + 0.1 * t)) ** 0.5 * float(prev[b, s][tokens[b] == t].sum())
        assert float(out["weight_key"][row, i]) == pytest.approx(expected, rel=1e-4)
        assert float(out["contribution_key"][row, i]) == pytest.approx(float(out["score"][i]), rel=1e-4)
    heads = [n for n, name in enumerate(out["names"]) if name.startswith("L0H")]
    assert out["weight_query"][heads].abs().max() < 1e-5  # the query reads the token embedding, no head


def reference_weights(model, cache, layer, head, b, d, s, U, S, V):
    """A transcription of the reference's ``get_components_used`` + ``get_contrib_src_dest`` for one firing."""
    x = normalized_residual(model, cache, layer)[b]
    sim_i, sim_j = x[d] @ U, x[s] @ V
    product = S * sim_i * sim_j
    order = product.argsort(descending=True)
    share = product[order].cumsum(0) / product.sum()
    last = int((share > 1.0 - 1e-6).nonzero()[0])
    svs = order[: last + 1]
    signs, mags = torch.sign(sim_i[svs]), S[svs].sqrt()
    scale = cache[f"blocks.{layer}.ln1.hook_scale"][b]
    key, query = {}, {}
    for l in range(layer):
        for h in range(model.cfg.n_heads):
            out = cache[f"blocks.{l}.attn.hook_z"][b, :, h] @ model.blocks[l].attn.W_O[h]
            out = out - out.mean(-1, keepdim=True)
            projected = torch.cat([out[s], torch.ones(1)]) @ V[:, svs]
            key[f"L{l}H{h}"] = float((signs * mags * projected).sum() / scale[s, 0])
            query[f"L{l}H{h}"] = float(
                (signs * mags * (torch.cat([out[d], torch.ones(1)]) @ U[:, svs])).sum() / scale[d, 0]
            )
    return key, query


def test_edge_weights_match_a_transcription_of_the_reference_on_a_random_ln_model():
    model = random_ln_model(seed=4)
    tokens = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(2))
    _, cache = model.run_with_cache(tokens)
    U, S, V = qk_svd(model, 1, 2)
    out = decompose_firings(model, cache, 1, 2, attention_threshold=0.3)
    assert len(out["batch"]) >= 3
    for i in range(len(out["batch"])):
        b, d, s = int(out["batch"][i]), int(out["dest"][i]), int(out["src"][i])
        key, query = reference_weights(model, cache, 1, 2, b, d, s, U, S, V)
        for name in key:
            row = out["names"].index(name)
            assert float(out["weight_key"][row, i]) == pytest.approx(key[name], abs=1e-4)
            assert float(out["weight_query"][row, i]) == pytest.approx(query[name], abs=1e-4)
        supported = out["terms"][i][out["support"][i]].sum()  # the shares add up to the support's part of the score
        torch.testing.assert_close(out["contribution_key"][:, i].sum(), supported, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out["contribution_query"][:, i].sum(), supported, atol=1e-4, rtol=1e-4)


def test_firing_filter_keeps_strong_positive_non_bos_pairs():
    pattern = torch.tensor([[[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.1, 0.3, 0.6]]])[None][0]
    scores = torch.tensor([[[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.2, 0.9, -0.1]]])
    fires = firing_mask(pattern, scores)
    assert fires.nonzero().tolist() == []  # BOS (1, 0), negative score (2, 2)
    scores[0, 2, 2] = 0.3
    assert firing_mask(pattern, scores).nonzero().tolist() == [[0, 2, 2]]
    dest = torch.tensor([[True, True, False]])
    assert firing_mask(pattern, scores, dest).nonzero().tolist() == []
    assert firing_mask(pattern, scores, attention_threshold=0.35).nonzero().tolist() == [[0, 1, 1], [0, 2, 2]]


def test_cumulative_cutoff_by_hand():
    w = torch.tensor([1.0, 5.0, 3.0, 1.0])
    assert cumulative_cutoff(w, 0.7).tolist() == [False, True, True, False]  # 5 + 3 = 8 > 7
    assert cumulative_cutoff(w, 0.8).tolist() == [True, True, True, True]  # 8 is not > 8: the tied 1s join
    assert cumulative_cutoff(w, 0.4).tolist() == [False, True, False, False]
    assert cumulative_cutoff(torch.tensor([4.0, 3.0, 3.0]), 0.7).tolist() == [True, True, True]
    assert cumulative_cutoff(torch.tensor([0.0, 0.0]), 0.7).tolist() == [False, False]
    assert cumulative_cutoff(torch.tensor([2.0, 1.0, 0.0]), 1.0).tolist() == [True, True, False]


def test_recursive_trace_follows_planted_path(planted):
    model, tokens, mask = planted
    graph = trace_circuit(model, tokens, (1, 0), mask)
    assert {(e["source"], e["target"], e["side"]) for e in graph["edges"]} == {("L0H0", "L1H0", "key")}
    assert graph["nodes"] == ["L0H0", "L1H0"]
    assert graph["n_start_firings"] == int(mask.sum())
    # per prompt, L0H0 feeds the keys at every source the copy reads: positions 2..6, each in all 16 prompts
    assert sorted((e["position"], e["count"]) for e in graph["edges"]) == [(p, len(tokens)) for p in range(2, 7)]
    assert all(e["fraction"] == pytest.approx(1.0, abs=1e-4) for e in graph["edges"])


def test_trace_from_a_source_mask_keeps_only_those_firings(planted):
    model, tokens, mask = planted
    src = torch.zeros_like(mask)
    src[:, 3] = True
    graph = trace_circuit(model, tokens, (1, 0), mask, src_mask=src)
    assert graph["n_start_firings"] == len(tokens)
    assert {e["position"] for e in graph["edges"]} == {3}


def test_composition_singles_out_planted_k_composition(planted):
    model, _, _ = planted
    scores = composition_scores(model)
    assert scores["K"][0, 0, 1, 0] > 0.3
    k = scores["K"].clone()
    k[0, 0, 1, 0] = 0
    assert k.max() < 1e-6 and scores["V"].max() < 1e-6 and scores["Q"][:, :, 1, 0].max() < 1e-6


def test_decomposing_every_head_is_fast():
    model = random_ln_model(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=8, d_vocab=10, n_ctx=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops stall under thread contention on a shared 2-core machine
    try:
        start = time.perf_counter()
        svds = all_qk_svds(model)
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert len(svds) == 144 and svds[5, 7][1].shape == (64,)
    assert elapsed < 10, f"decomposing 144 heads took {elapsed:.1f}s"


def test_bad_inputs_raise_clear_errors(planted):
    model, tokens, _ = planted
    with pytest.raises(CircuitInputError, match="head 7 out of range"):
        qk_svd(model, 0, 7)
    with pytest.raises(CircuitInputError, match="longer than the model's context"):
        trace_head_edges(model, torch.zeros(1, N_CTX + 1, dtype=torch.long))
    with pytest.raises(CircuitInputError, match="layer 3 out of range"):
        trace_circuit(model, tokens, (3, 0))
    with pytest.raises(CircuitInputError, match="head 5 out of range"):
        trace_circuit(model, tokens, (1, 5))
    for cutoff in (0.0, 1.5, -0.2):
        with pytest.raises(CircuitInputError, match=f"cutoff {cutoff} is outside"):
            trace_circuit(model, tokens, (1, 0), cutoff=cutoff)
    with pytest.raises(CircuitInputError, match="dest_mask of shape"):
        trace_circuit(model, tokens, (1, 0), torch.ones(2, 3, dtype=torch.bool))
