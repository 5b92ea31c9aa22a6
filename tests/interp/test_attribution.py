"""Attribution graphs: a planted path's edges carry the planted weights, the decomposition is complete, pruning
keeps the path, edges equal interventions in the replacement model, and bad input is refused."""

import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from attribution_toys import (
    A_SCALE,
    A_TOKEN,
    B_SCALE,
    TARGET,
    VOCAB,
    planted_path_model,
    planted_supernode_model,
    random_model_and_transcoders,
)

from interp.circuits.attribution import attribute
from interp.circuits.attribution.prune import graph_scores, prune_graph
from interp.circuits.attribution.supernodes import FeatureGeometry, group_features, group_scores
from interp.circuits.attribution.verify import intervention_check, top_edges
from interp.store.errors import InputError

PROMPT = [0, A_TOKEN, 2, 3]


def planted_graph():
    model, transcoders = planted_path_model()
    return model, transcoders, attribute(model, transcoders, PROMPT)


def test_the_planted_path_has_the_planted_weights():
    _, _, graph = planted_graph()
    a = graph.feature_index(0, 1, 0)
    assert graph.adjacency[a, graph.token_index(1)] == pytest.approx(1.0)  # A reads token 1's embedding e0
    for pos in (1, 2, 3):
        b = graph.feature_index(1, pos, 1)
        # B reads A's write directly at A's position and through the uniform head (weight 1/(pos+1)) everywhere
        expected = A_SCALE * (pos == 1) + A_SCALE / (pos + 1)
        assert graph.adjacency[b, a] == pytest.approx(expected)
        assert graph.activations[b] == pytest.approx(expected)  # nothing else feeds B
    assert int(graph.logit_tokens[0]) == TARGET
    logit, b_last = graph.logit_index(0), graph.feature_index(1, 3, 1)
    a_b = A_SCALE / 4
    assert graph.adjacency[logit, b_last] == pytest.approx(a_b * B_SCALE * (1 - 1 / VOCAB))
    nonzero = graph.adjacency[logit].nonzero().flatten().tolist()
    assert nonzero == [b_last]  # the error nodes are exactly 0 here: the MLPs are the transcoders


def test_pruning_keeps_the_planted_path():
    _, _, graph = planted_graph()
    result = prune_graph(graph)
    a, b, logit = graph.feature_index(0, 1, 0), graph.feature_index(1, 3, 1), graph.logit_index(0)
    assert result.node_mask[[a, b, logit, graph.token_index(1)]].all()
    assert result.edge_mask[b, a] and result.edge_mask[logit, b] and result.edge_mask[a, graph.token_index(1)]
    assert not result.node_mask[graph.feature_index(1, 2, 1)]  # B at position 2 reaches no logit
    replacement, completeness = graph_scores(graph)
    assert replacement == pytest.approx(1.0) and completeness == pytest.approx(1.0)  # no error at all


@pytest.mark.parametrize("activation,skip", [("topk", True), ("jumprelu", False), ("relu", True)])
def test_incoming_edges_sum_to_each_nodes_input(activation, skip):
    """Linearity with frozen attention and norms: Σ incoming edges + the bias part = the node's pre-activation."""
    model, transcoders = random_model_and_transcoders(activation=activation, skip=skip)
    graph = attribute(model, transcoders, list(range(1, 13)), batch_size=7)
    targets = torch.cat([torch.arange(graph.n_features), graph.logit_start + torch.arange(graph.n_logits)])
    assert graph.n_features > 20 and graph.readout[targets].abs().max() > 0.5
    torch.testing.assert_close(graph.adjacency[targets].sum(1) + graph.constant[targets], graph.readout[targets],
                               atol=1e-4, rtol=0)
    # the feature readouts are the transcoders' own pre-activations (minus b_enc) on the clean run
    layer, pos, feature = graph.active_features[0].tolist()
    _, cache = model.run_with_cache(graph.tokens[None])
    tc = transcoders[layer]
    assert graph.readout[0] == pytest.approx(float(cache[tc.hook_in][0, pos] @ tc.W_enc[:, feature]), abs=1e-5)
    _, completeness = graph_scores(graph)
    assert 0 < completeness < 1  # random transcoders: much of the input comes through error nodes


def test_progress_is_reported_after_each_batch():
    model, transcoders = random_model_and_transcoders()
    seen = []
    graph = attribute(model, transcoders, list(range(1, 13)), batch_size=7,
                      on_progress=lambda done, total: seen.append((done, total)))
    total = graph.n_features + graph.n_logits
    assert seen[-1] == (total, total) and len(seen) == -(-total // 7)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_edges_equal_interventions_in_the_replacement_model():
    model, transcoders = random_model_and_transcoders(activation="topk", skip=True)
    graph = attribute(model, transcoders, list(range(1, 13)))
    edges = top_edges(graph, n=25)
    check = intervention_check(model, graph, transcoders, edges)
    assert len(check["rows"]) == 25 and check["max_replacement_error"] < 1e-4
    assert all(row["edge_weight"] != 0 for row in check["rows"])
    assert -1 <= check["real_correlation"] <= 1


def test_the_real_model_agrees_exactly_when_it_is_linear_along_the_path():
    """The planted model's path is linear on this prompt (ReLUs stay on, attention has constant scores), so
    removing A changes B and the logit in the real model just as the graph says."""
    model, transcoders, graph = planted_graph()
    a, b = graph.feature_index(0, 1, 0), graph.feature_index(1, 3, 1)
    check = intervention_check(model, graph, transcoders, torch.tensor([[b, a], [graph.logit_index(0), b]]))
    for row in check["rows"]:
        assert row["real_change"] == pytest.approx(-row["edge_weight"], abs=1e-5)


def test_a_layer_without_a_transcoder_is_kept_as_error_nodes():
    model, transcoders = random_model_and_transcoders()
    graph = attribute(model, [transcoders[0], None], list(range(1, 10)))
    assert any("layer 1 has no transcoder" in note for note in graph.notes)
    assert (graph.active_features[:, 0] == 0).all()
    logits = graph.logit_start + torch.arange(graph.n_logits)
    errors_1 = graph.error_index(1, 0) + torch.arange(graph.n_pos)
    assert graph.adjacency[logits][:, errors_1].abs().sum() > 0  # the whole MLP 1 acts through its error nodes
    torch.testing.assert_close(graph.adjacency[logits].sum(1) + graph.constant[logits], graph.readout[logits],
                               atol=1e-4, rtol=0)


def test_bad_input_is_refused_with_what_to_do():
    model, transcoders = random_model_and_transcoders()
    with pytest.raises(InputError, match="context is 16"):
        attribute(model, transcoders, list(range(17)))
    with pytest.raises(InputError, match="not a hook of that layer"):
        attribute(model, {1: transcoders[0]}, list(range(5)))
    wrong = random_model_and_transcoders(d_model=8)[1]
    with pytest.raises(InputError, match="d_model is 16"):
        attribute(model, wrong, list(range(5)))
    estimates = []
    with pytest.raises(InputError, match=r"needs about .* shorter prompt"):
        attribute(model, transcoders, list(range(10)), max_bytes=1000, on_estimate=estimates.append)
    assert estimates and estimates[0]["total"] > 1000 and estimates[0]["adjacency"] > 0


def test_a_layer_with_no_active_feature_is_noted():
    model, transcoders = random_model_and_transcoders(activation="relu", skip=False)
    transcoders[1].b_enc.fill_(-1e3)  # nothing can fire
    graph = attribute(model, transcoders, list(range(1, 8)))
    assert any("layer 1: no feature is active" in note for note in graph.notes)
    assert (graph.active_features[:, 0] == 0).all()


def test_supernodes_group_one_feature_across_positions_and_score_as_one_node():
    """B fires at positions 1..3 (one decoder row): one supernode; only B@3 reaches the logit and the path is
    linear, so removing the group moves the logit exactly as the sum of its members does (ratio 1)."""
    model, transcoders, graph = planted_graph()
    everything = prune_graph(graph, node_threshold=1.0, edge_threshold=1.0)
    everything.node_mask[:] = True
    groups = group_features(graph, everything, transcoders)
    assert groups == [[graph.feature_index(1, pos, 1) for pos in (1, 2, 3)]]
    (score,) = group_scores(model, graph, transcoders, groups)
    assert score["ratio"] == pytest.approx(1.0, abs=1e-5)
    expected = -graph.adjacency[graph.logit_index(0), graph.feature_index(1, 3, 1)]
    assert score["group_change"] == pytest.approx(float(expected), abs=1e-5)


def test_two_cofiring_features_with_one_decoder_direction_are_one_supernode():
    """A1 and A2 always fire together and write nearly the same direction: one supernode. C fires elsewhere and
    writes elsewhere; D writes A's direction but never fires with A: neither joins A's group."""
    model, transcoders = planted_supernode_model()
    graph = attribute(model, transcoders, PROMPT)
    a1, a2 = graph.feature_index(0, 1, 0), graph.feature_index(0, 1, 1)
    c, d = graph.feature_index(0, 3, 2), [graph.feature_index(0, pos, 3) for pos in (2, 3)]
    pruned = prune_graph(graph, node_threshold=0.99)
    assert pruned.node_mask[[a1, a2, c, *d]].all()  # all of them reach the logit
    groups = group_features(graph, pruned, transcoders)
    assert [a1, a2] in groups and d in groups  # D at two positions is one group of its own
    assert not any(c in g for g in groups)
    assert not any({a1, a2} & set(g) and set(g) - {a1, a2} for g in groups)
    scores = {tuple(s["nodes"]): s for s in group_scores(model, graph, transcoders, groups)}
    a_group = scores[(a1, a2)]
    assert a_group["group_change"] < -1e-3 and a_group["ratio"] == pytest.approx(1.0, abs=1e-5)  # linear path
    assert a_group["members"] == [graph.describe(a1)["label"], graph.describe(a2)["label"]]


def test_without_coactivation_same_direction_features_stay_apart():
    """A and D write the same direction; only the co-activation criterion keeps them apart."""
    model, transcoders = planted_supernode_model()
    graph = attribute(model, transcoders, PROMPT)
    pruned = prune_graph(graph, node_threshold=0.99)
    merged = group_features(graph, pruned, transcoders, coactivation_threshold=0.0)
    a1, d2 = graph.feature_index(0, 1, 0), graph.feature_index(0, 2, 3)
    assert any(a1 in g and d2 in g for g in merged)


def planted_nodes(graph, pruned) -> dict[int, list[int]]:
    """The kept layer-0 nodes of each planted feature (0 A1, 1 A2, 2 C, 3 D)."""
    return {f: [n for n in range(graph.n_features) if pruned.node_mask[n] and graph.active_features[n, 0] == 0
                and graph.active_features[n, 2] == f] for f in range(4)}


def test_planted_lobes_give_the_lobe_groups():
    """Grouping by a known lobe assignment: A1 and A2 in different lobes stay apart (though their decoders agree);
    C and D in one lobe, firing at the same positions, form one group (though their decoders differ); a layer
    without geometry gets no lobe groups."""
    model, transcoders = planted_supernode_model()
    graph = attribute(model, transcoders, PROMPT)
    pruned = prune_graph(graph, node_threshold=0.99)
    nodes = planted_nodes(graph, pruned)
    assert all(nodes.values()) and len(nodes[3]) == 2
    split = group_features(graph, pruned, transcoders, by="lobes",
                           geometry={0: FeatureGeometry(lobes={0: 0, 1: 1, 2: 2, 3: 2})})
    assert split == [sorted(nodes[2] + nodes[3])]
    joined = group_features(graph, pruned, transcoders, by="lobes",
                            geometry={0: FeatureGeometry(lobes={0: 5, 1: 5, 2: 6, 3: 7})})
    assert sorted(joined) == sorted([sorted(nodes[0] + nodes[1])] + [n for n in (nodes[2], nodes[3]) if len(n) > 1])
    assert group_features(graph, pruned, transcoders, by="lobes", geometry={}) == []  # no geometry: no lobe groups
    scores = group_scores(model, graph, transcoders, split)  # the same intervention score as the decoder groups
    assert scores[0]["nodes"] == split[0] and scores[0]["ratio"] is not None


def test_planted_crystals_give_the_crystal_groups():
    """A crystal holding A1 and C: they never fire together, so no group; one holding A1 and A2: their group."""
    model, transcoders = planted_supernode_model()
    graph = attribute(model, transcoders, PROMPT)
    pruned = prune_graph(graph, node_threshold=0.99)
    nodes = planted_nodes(graph, pruned)
    own = sorted(n for n in nodes.values() if len(n) > 1)
    apart = group_features(graph, pruned, transcoders, by="crystals", geometry={0: FeatureGeometry(crystals=[{0, 2}])})
    assert sorted(apart) == own
    together = group_features(graph, pruned, transcoders, by="crystals",
                              geometry={0: FeatureGeometry(crystals=[{0, 1, 7}, {3}])})
    assert sorted(together) == sorted([sorted(nodes[0] + nodes[1])] + own)
    with pytest.raises(ValueError, match="unknown supernode grouping"):
        group_features(graph, pruned, transcoders, by="galaxy", geometry={})


def test_supernodes_of_a_random_model_are_scored():
    model, transcoders = random_model_and_transcoders()
    graph = attribute(model, transcoders, list(range(1, 13)))
    pruned = prune_graph(graph, node_threshold=0.95)
    groups = group_features(graph, pruned, transcoders, decoder_threshold=0.99)  # one feature at several positions
    assert groups
    for group in groups:
        assert len({int(graph.active_features[n, 2]) for n in group}) == 1
    scores = group_scores(model, graph, transcoders, groups)
    assert len(scores) == len(groups) and all("ratio" in s for s in scores)


def test_token_nodes_are_token_embeddings_and_position_embeddings_are_constant():
    """As circuit-tracer: a token node is W_E[t]; the position embedding (the same on every prompt) is in the
    constant. A reads e0: 1 from token 1's embedding, 0.5 from position 1's embedding."""
    model, transcoders = planted_path_model()
    with torch.no_grad():
        model.pos_embed.W_pos[1] = 0.5 * torch.eye(8)[0]
    graph = attribute(model, transcoders, PROMPT)
    a = graph.feature_index(0, 1, 0)
    assert graph.activations[a] == pytest.approx(1.5)
    assert graph.adjacency[a, graph.token_index(1)] == pytest.approx(1.0)
    assert graph.constant[a] == pytest.approx(0.5) and graph.adjacency[a].sum() == pytest.approx(1.0)


def test_the_bos_position_has_no_error_node_and_sits_in_the_constant():
    """circuit-tracer zeroes the BOS position's errors (its MLP outputs are the same on every prompt): every edge
    from an error at position 0 is 0 and the decomposition stays complete."""
    model, transcoders = random_model_and_transcoders()
    graph = attribute(model, transcoders, list(range(1, 13)))
    bos_errors = [graph.error_index(layer, 0) for layer in range(graph.n_layers)]
    assert graph.adjacency[:, bos_errors].abs().max() == 0
    assert graph.adjacency[:, [graph.error_index(layer, 3) for layer in range(2)]].abs().max() > 0
    targets = torch.cat([torch.arange(graph.n_features), graph.logit_start + torch.arange(graph.n_logits)])
    assert graph.completeness_residual()[targets].abs().max() < 1e-4


def test_a_capped_graph_is_the_full_graph_on_the_chosen_features():
    """``max_feature_nodes``: the kept rows and columns are the uncapped graph's, the left-out features' edges are
    summed in ``dropped``, and the completeness identity still holds with them."""
    model, transcoders = random_model_and_transcoders(activation="topk", skip=True)
    prompt = list(range(1, 13))
    full = attribute(model, transcoders, prompt, batch_size=7)
    capped = attribute(model, transcoders, prompt, batch_size=5, max_feature_nodes=17, update_interval=1)
    assert capped.n_features == 17 and capped.n_active_features == full.n_features > 17
    assert any("17 of the" in note for note in capped.notes)
    chosen = torch.tensor([full.feature_index(*map(int, row)) for row in capped.active_features])
    assert torch.equal(chosen, chosen.sort().values)  # node order stays (layer, position, feature)
    keep = torch.cat([chosen, torch.arange(full.n_features, full.n_nodes)])
    left_out = torch.tensor(sorted(set(range(full.n_features)) - set(chosen.tolist())))
    torch.testing.assert_close(capped.adjacency, full.adjacency[keep][:, keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(capped.dropped, full.adjacency[keep][:, left_out].sum(1), atol=1e-5, rtol=1e-5)
    targets = torch.cat([torch.arange(capped.n_features), capped.logit_start + torch.arange(capped.n_logits)])
    assert capped.dropped[targets].abs().max() > 1e-3  # something really was left out
    assert capped.completeness_residual()[targets].abs().max() < 1e-4
    torch.testing.assert_close(capped.readout, full.readout[keep])


def test_the_cap_picks_the_features_on_the_path_to_the_logit():
    """Planted path: only B at the last position writes the logit and only A feeds it, so a cap of 2 keeps
    exactly A and that B (the B at positions 1 and 2 reach no logit)."""
    model, transcoders = planted_path_model()
    full = attribute(model, transcoders, PROMPT)
    capped = attribute(model, transcoders, PROMPT, max_feature_nodes=2, batch_size=1, update_interval=1)
    assert full.n_features == 4
    assert capped.active_features.tolist() == [[0, 1, 0], [1, 3, 1]]
    logit, a, b = capped.logit_index(0), capped.feature_index(0, 1, 0), capped.feature_index(1, 3, 1)
    assert capped.adjacency[b, a] == pytest.approx(A_SCALE / 4)
    assert capped.adjacency[logit, b] == pytest.approx(full.adjacency[full.logit_index(0), full.feature_index(1, 3, 1)])


def test_partial_influence_with_every_row_is_the_graph_influence():
    """The capped loop's influence estimate, given every target row (in any order), is prune's node influence."""
    from interp.circuits.attribution.prune import node_influence
    from interp.circuits.attribution.selection import PartialInfluence

    model, transcoders = random_model_and_transcoders(activation="relu", skip=False)
    graph = attribute(model, transcoders, list(range(1, 13)))
    targets = torch.cat([torch.arange(graph.n_features), graph.logit_start + torch.arange(graph.n_logits)])
    rows = PartialInfluence(len(targets), graph.n_nodes, graph.logit_start + torch.arange(graph.n_logits),
                            graph.logit_probabilities)
    for chunk in targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))].split(6):
        rows.add(graph.adjacency[chunk], chunk)
    expected = node_influence(graph)
    torch.testing.assert_close(rows.influence(), expected, atol=1e-6, rtol=1e-4)
    assert expected[: graph.n_features].max() > 0


def test_a_graph_refused_dense_fits_when_capped():
    """The estimate of a capped graph grows with the active features times the cap; a memory limit that refuses
    the dense graph (naming --max-feature-nodes) lets the capped one run."""
    model, transcoders = random_model_and_transcoders(activation="relu", n_layers=4, d_sae=96)  # ~2,000 features
    prompt = list(range(1, 13))
    seen = []
    attribute(model, transcoders, prompt, max_feature_nodes=8, batch_size=4, on_estimate=seen.append)
    full = attribute(model, transcoders, prompt, batch_size=4, on_estimate=seen.append)
    capped, dense = seen
    assert dense["adjacency"] == 4 * full.n_nodes**2
    assert capped["edge_rows"] == 4 * (8 + full.n_logits) * full.n_nodes
    assert capped["adjacency"] == 4 * (full.n_nodes - full.n_features + 8) ** 2
    assert capped["total"] < dense["total"]
    limit = (capped["total"] + dense["total"]) // 2
    with pytest.raises(InputError, match="max-feature-nodes") as refused:
        attribute(model, transcoders, prompt, batch_size=4, max_bytes=limit)
    graph = attribute(model, transcoders, prompt, batch_size=4, max_bytes=limit, max_feature_nodes=8)
    assert graph.n_features == 8
    suggested = int(re.search(r"--max-feature-nodes (\d+) ", str(refused.value)).group(1))  # the cap it names fits
    assert 64 <= suggested < full.n_features
    assert attribute(model, transcoders, prompt, batch_size=4, max_bytes=limit,
                     max_feature_nodes=suggested).n_features == suggested
    with pytest.raises(InputError, match="max_feature_nodes"):
        attribute(model, transcoders, prompt, max_feature_nodes=-1)


def test_mixing_values_with_one_pattern_is_the_per_row_attention_mix():
    """``mix_values`` equals ``pattern @ v`` per batch row and head, grouped-query values repeated to the heads."""
    from interp.circuits.attribution.replacement import mix_values

    g = torch.Generator().manual_seed(0)
    pattern = torch.softmax(torch.randn(4, 5, 5, generator=g), -1)  # [head, q, k]
    for kv_heads in (4, 2):
        v = torch.randn(3, 5, kv_heads, 6, generator=g)  # [B, k, kv_head, d_head]
        full = v.repeat_interleave(4 // kv_heads, dim=2)
        expected = torch.einsum("hqk,bkhd->bqhd", pattern, full)
        torch.testing.assert_close(mix_values(pattern, v), expected)


def test_the_frozen_forward_leaves_the_model_as_it_was():
    """The patched attention and skipped MLPs are the frozen forward's only: afterwards the model computes its
    own logits again, and an instance-level forward someone set before is put back."""
    from interp.circuits.attribution.attribute import _leaves
    from interp.circuits.attribution.replacement import clean_state, frozen_forward

    model, transcoders = random_model_and_transcoders()
    tokens = torch.tensor(list(range(1, 9)))
    before = model(tokens[None])
    marker = model.blocks[0].mlp.forward
    model.blocks[0].mlp.forward = marker  # an instance attribute now
    state = clean_state(model, tokens, dict(enumerate(transcoders)))
    leaves = _leaves(state, 2)
    frozen_forward(model, state, leaves[0], leaves[1:])
    assert model.blocks[0].mlp.__dict__["forward"] is marker and "forward" not in model.blocks[1].attn.__dict__
    torch.testing.assert_close(model(tokens[None]), before)
