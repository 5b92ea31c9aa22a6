"""Sparse attention decomposition: exactness on a random LN model, planted circuit recovered exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import time

import pytest
import torch
sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from circuit_toys import N_CTX, one_thread, planted_induction_model, planted_prompts, random_ln_model  # noqa: E402, F401

from interp.attention import CircuitInputError, composition_scores
from interp.decomposition import (
    all_qk_svds,
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

@pytest.fixture(scope="module")
def planted():
    model = planted_induction_model()
    tokens, mask = planted_prompts()
    return model, tokens, mask


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


def test_planted_score_carried_by_one_component(planted):
    model, tokens, mask = planted
    sizes = signal_dimensionality(model, tokens, mask)
    induction = sizes[(sizes.layer == 1) & (sizes.head == 0)]["size"]
    previous = sizes[(sizes.layer == 0) & (sizes.head == 0)]["size"]
    assert (induction == 1).all() and (previous == 1).all()


def test_svd_tracing_recovers_exactly_the_planted_edge(planted):
    model, tokens, mask = planted
    edges = trace_head_edges(model, tokens, mask)
    heads = edges[(edges.source_layer >= 0) & (edges.fraction.abs() > 1e-3) & (edges.layer == 1) & (edges["head"] == 0)]
    assert [(r.source, r.side) for r in heads.itertuples()] == [("L0H0", "key")]
    others = edges[(edges.source_layer >= 0) & ~((edges.layer == 1) & (edges["head"] == 0))]
    assert others.contribution.abs().max() < 1e-4
    planted_edge = heads.iloc[0]
    assert planted_edge.fraction == pytest.approx(1.0, abs=1e-3)
    key_matrix = head_edge_matrix(edges, "key", 2, 2)
    assert key_matrix.flatten().argmax().item() == torch.tensor([0, 0, 1, 0]).dot(torch.tensor([8, 4, 2, 1])).item()


def test_recursive_trace_follows_planted_path(planted):
    model, tokens, mask = planted
    graph = trace_circuit(model, tokens, (1, 0), mask, top_k=2, threshold=0.1)
    assert [(e["source"], e["target"], e["side"]) for e in graph["edges"]] == [("L0H0", "L1H0", "key")]
    assert graph["nodes"] == ["L0H0", "L1H0"]


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
