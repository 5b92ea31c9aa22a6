"""Feature circuits: AtP/IG against exact effects on toys, completeness, SAELens SAEs, edges, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from circuit_toys import one_thread, random_ln_model  # noqa: E402, F401

from interp.circuits.attention import CircuitInputError
from interp.circuits.feature_circuits import (
    ALL,
    Attribution,
    SiteValues,
    _patch_values,
    _splice,
    attribute,
    circuit_nodes,
    edge_attribution,
    edge_pairs,
    effect_error_shares,
    error_share,
    faithfulness,
    faithfulness_curve,
    feature_circuit,
    feature_effects_by_patching,
    node_attribution,
    site_values,
)
from interp.features.dictionary import DictionaryError, as_dictionary
from interp.pipeline.circuits import write_feature_circuit

SITE = "blocks.0.hook_resid_post"


class ReluDictionary:
    """A tiny ReLU SAE satisfying the ``Dictionary`` protocol."""

    def __init__(self, d_in: int, d_sae: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.d_in, self.d_sae = d_in, d_sae
        self.W_enc = torch.randn(d_in, d_sae, generator=g) / d_in**0.5
        self.b_enc = 0.1 * torch.randn(d_sae, generator=g)
        self._W_dec = torch.randn(d_sae, d_in, generator=g) / d_sae**0.5
        self.b_dec = 0.1 * torch.randn(d_in, generator=g)

    @property
    def W_dec(self):
        return self._W_dec

    def encode(self, x):
        return torch.relu(x @ self.W_enc + self.b_enc)

    def decode(self, f):
        return f @ self._W_dec + self.b_dec

    def double(self):
        for name in ("W_enc", "b_enc", "_W_dec", "b_dec"):
            setattr(self, name, getattr(self, name).double())
        return self


def linear_model() -> HookedTransformer:
    """One attention-only layer with zero attention: logits are linear in the site's activation."""
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_ctx=8, d_head=4, n_heads=2, d_vocab=20,
                                  attn_only=True, normalization_type=None, act_fn="relu", seed=0)
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "attn" in name:
                p.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def linear_setup():
    model, dictionary = linear_model(), ReluDictionary(16, 32)
    tokens = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(0))
    return model, dictionary, tokens


def test_linear_toy_atp_is_exact_and_ig_equals_atp(linear_setup):
    model, dictionary, tokens = linear_setup
    metric = lambda logits: logits[:, -1, 5].mean()  # noqa: E731
    atp = node_attribution(model, tokens, metric, {SITE: dictionary}, "zero", "atp")[SITE]
    ig = node_attribution(model, tokens, metric, {SITE: dictionary}, "zero", "ig")[SITE]
    active = atp["features"].sum(0).abs().argsort(descending=True)[:6].tolist()
    exact = feature_effects_by_patching(model, tokens, metric, {SITE: dictionary}, SITE, active)
    torch.testing.assert_close(atp["features"].sum(0)[active], exact, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ig["features"], atp["features"], atol=1e-5, rtol=1e-4)
    _, cache = model.run_with_cache(tokens)
    x = cache[SITE]
    error = x - dictionary.decode(dictionary.encode(x))
    grad = model.W_U[:, 5] / tokens.shape[0]
    expected_error = (-error[:, -1] @ grad).sum()
    torch.testing.assert_close(atp["error"].sum(), expected_error, atol=1e-5, rtol=1e-4)


def test_nonlinear_toy_ig_sums_to_the_exact_effect_where_atp_does_not(linear_setup):
    """m = mean (w·a)²; zero-patching the whole site: IG (N=10) is complete, AtP misses the curvature."""
    model, dictionary, tokens = linear_setup
    metric = lambda logits: (logits[:, -1, 5] ** 2).mean()  # noqa: E731
    sites = {SITE: dictionary}
    atp = node_attribution(model, tokens, metric, sites, "zero", "atp")[SITE]
    ig = node_attribution(model, tokens, metric, sites, "zero", "ig", steps=10, rule="midpoint")[SITE]
    left = node_attribution(model, tokens, metric, sites, "zero", "ig", steps=10)[SITE]  # the reference's k/N points
    zero_site = dictionary.decode(torch.zeros(1, 32))  # f = 0 and ε = 0 leave only the decoder bias
    patched = metric(model.run_with_hooks(tokens, fwd_hooks=[(SITE, lambda x, hook: zero_site.expand_as(x))]))
    exact = float(patched - metric(model(tokens)))
    total = lambda effects: float(effects["features"].sum() + effects["error"].sum())  # noqa: E731
    assert abs(total(ig) - exact) / abs(exact) < 0.01
    assert abs(total(atp) - exact) / abs(exact) > 0.05
    # the gradient is linear in α, so the left points' mean gradient sits at α = 0.45: AtP + 0.9 (exact - AtP)
    assert total(left) == pytest.approx(total(atp) + 0.9 * (exact - total(atp)), rel=1e-3)


def test_ig_completeness_on_a_nonlinear_model_with_a_saelens_sae():
    from sae_lens import StandardSAE, StandardSAEConfig

    model = random_ln_model(seed=2)
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=64))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.b_enc.fill_(0.05)
    g = torch.Generator().manual_seed(5)
    clean, corrupt = torch.randint(0, 50, (4, 10), generator=g), torch.randint(0, 50, (4, 10), generator=g)
    metric = lambda logits: logits[:, -1].log_softmax(-1)[:, 7].mean()  # noqa: E731
    sites = {SITE: as_dictionary(sae)}
    effects = node_attribution(model, clean, metric, sites, corrupt, "ig", steps=10, rule="midpoint")[SITE]
    total = effects["features"].sum() + effects["error"].sum()
    _, corrupt_cache = model.run_with_cache(corrupt)
    patched = metric(model.run_with_hooks(clean, fwd_hooks=[(SITE, lambda x, hook: corrupt_cache[SITE])]))
    exact = patched - metric(model(clean))
    assert abs(float(total - exact)) / abs(float(exact)) < 0.02


def test_edge_attribution_matches_the_jacobian_by_hand(linear_setup):
    model, _, tokens = linear_setup
    up, down = ReluDictionary(16, 24, seed=1), ReluDictionary(16, 32, seed=2)
    hooks = {"blocks.0.hook_resid_pre": up, SITE: down}
    metric = lambda logits: logits[:, -1, 3].mean()  # noqa: E731
    nodes = [(5, 0), (5, 1), (5, 2), (5, -1)]
    weights = edge_attribution(model, tokens, metric, hooks, "blocks.0.hook_resid_pre", SITE, nodes)
    assert weights["features"].shape == (4, 6, 24) and weights["error"].shape == (4, 6)
    _, cache = model.run_with_cache(tokens)
    x = cache["blocks.0.hook_resid_pre"]  # the zero-attention layer passes it on unchanged
    f_up = up.encode(x)
    active = (x @ down.W_enc + down.b_enc > 0).float()
    grad_down = (model.W_U[:, 3] / 3) @ down.W_dec.T  # d metric / d f_down at the last position
    for row, (_, j) in enumerate(nodes[:3]):
        jac = up.W_dec @ down.W_enc[:, j]  # d f_down_j / d f_up (before the ReLU gate)
        expected = (active[:, -1, j, None] * grad_down[j] * jac * -f_up[:, -1]).sum(0)
        torch.testing.assert_close(weights["features"][row, -1], expected, atol=1e-5, rtol=1e-4)
        assert weights["features"][row, :-1].abs().max() < 1e-6  # no attention: nothing crosses positions


def test_edge_pairs_follow_the_reference_edge_set():
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post",
             "blocks.2.hook_attn_out"]
    assert edge_pairs(hooks) == [
        ("blocks.0.hook_resid_post", "blocks.1.hook_attn_out"), ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"),
        ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"), ("blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"),
        ("blocks.1.hook_attn_out", "blocks.1.hook_resid_post"), ("blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"),
        ("blocks.1.hook_resid_post", "blocks.2.hook_attn_out")]


FULL_SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]


def two_node_patch(model, tokens, metric, sites, values, target, upstream, node_u, downstream, node_d):
    """Exact edge effect: patch one upstream node, let it reach the downstream site only directly (sites in
    between clamped to their clean values), then patch only that downstream node's new value into a clean run."""
    hooks = list(sites)
    between = hooks[hooks.index(upstream) + 1: hooks.index(downstream)]
    (pu, ju), (pd_, jd) = node_u, node_d
    up = SiteValues(values[upstream].features.clone(), values[upstream].error.clone())
    if ju >= 0:
        up.features[:, pu, ju] = target[upstream].features[:, pu, ju]
    else:
        up.error[:, pu] = target[upstream].error[:, pu]
    store = {}
    splices = [(upstream, _splice(upstream, sites[upstream], {}, up)),
               (downstream, _splice(downstream, sites[downstream], store))]
    splices += [(h, _splice(h, sites[h], {}, values[h])) for h in between]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=splices)
        moved = SiteValues(values[downstream].features.clone(), values[downstream].error.clone())
        if jd >= 0:
            moved.features[:, pd_, jd] = store[downstream].features[:, pd_, jd]
        else:
            moved.error[:, pd_] = store[downstream].error[:, pd_]
        patched = metric(
            model.run_with_hooks(tokens, fwd_hooks=[(downstream, _splice(downstream, sites[downstream], {}, moved))])
        )
        return float(patched - metric(model(tokens)))


def test_every_edge_kind_matches_exact_two_node_patching_on_a_small_edit():
    """Random LN model with attention and MLPs, SAEs at resid/attn/mlp/resid: each edge of each reference
    kind equals exact two-node patching for a small edit (where the first-order estimate is exact)."""
    model = random_ln_model(seed=6).to(torch.float64)
    tokens = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(3))
    corrupt = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(4))
    sites = {h: ReluDictionary(32, 48, seed=i).double() for i, h in enumerate(FULL_SITES)}
    metric = lambda logits: logits[:, -1].log_softmax(-1)[:, 7].mean()  # noqa: E731
    eps = 1e-3
    values, far = site_values(model, tokens, sites), site_values(model, corrupt, sites)
    target = {
        h: SiteValues(v.features + eps * (far[h].features - v.features), v.error + eps * (far[h].error - v.error))
        for h, v in values.items()
    }
    grads = attribute(model, tokens, metric, sites, method="atp").grads
    attribution = Attribution(values, target, grads)
    checked = 0
    for upstream, downstream in edge_pairs(FULL_SITES):
        effect = attribution.effects(downstream)["features"]
        pd_, jd = divmod(int(effect[3:].abs().argmax()), effect.shape[1])
        down_nodes = [(pd_ + 3, jd), (6, -1)]
        weights = edge_attribution(
            model, tokens, metric, sites, upstream, downstream, down_nodes, attribution=attribution
        )
        for row, node_d in enumerate(down_nodes):
            up_w = weights["features"][row]
            pu, ju = divmod(int(up_w.abs().argmax()), up_w.shape[1])
            for node_u, w in (
                ((pu, ju), float(up_w[pu, ju])),
                ((node_d[0], -1), float(weights["error"][row, node_d[0]])),
            ):
                exact = two_node_patch(
                    model, tokens, metric, sites, values, target, upstream, node_u, downstream, node_d
                )
                assert abs(w - exact) <= 2e-2 * abs(exact) + 1e-9, (upstream, downstream, node_u, node_d, w, exact)
                checked += 1
    assert checked == 24


def test_feature_circuit_graph_and_files(linear_setup, tmp_path):
    model, _, tokens = linear_setup
    hooks = {"blocks.0.hook_resid_pre": ReluDictionary(16, 24, seed=1), SITE: ReluDictionary(16, 32, seed=2)}
    metric = lambda logits: logits[:, -1, 3].mean()  # noqa: E731
    effects = node_attribution(model, tokens, metric, hooks, "zero", "ig")
    threshold = float(effects[SITE]["features"].abs().flatten().sort(descending=True).values[3])
    graph = feature_circuit(model, tokens, metric, hooks, node_threshold=threshold, edge_threshold=1e-6)
    assert graph["sites"] == list(hooks)
    site_nodes = [n for n in graph["nodes"] if n["hook"] == SITE]
    assert sum(n["feature"] >= 0 for n in site_nodes) == 3  # per position and feature, above the threshold
    assert all(n["pos"] == 5 for n in site_nodes)  # the metric reads the last position only
    assert any(e["target"] == "metric" for e in graph["edges"])
    assert any(
        e["source"].startswith("blocks.0.hook_resid_pre/") and e["target"].startswith(SITE) for e in graph["edges"]
    )
    curve = faithfulness_curve(model, tokens, metric, hooks, effects, sizes=[1, 4, 16])
    paths = write_feature_circuit(tmp_path, graph, curve, {h: f"run/sae_{i}" for i, h in enumerate(hooks)})
    assert all(p.exists() for p in paths) and len(paths) == 3
    assert set(pd.read_parquet(tmp_path / "feature_nodes.parquet").analysis) <= {"run/sae_0", "run/sae_1"}
    summed = feature_circuit(
        model, tokens, metric, hooks, node_threshold=threshold, edge_threshold=1e-6, over_positions=True
    )
    assert any(
        e["source"].startswith("blocks.0.hook_resid_pre/all/") and e["target"].startswith(f"{SITE}/all/")
        for e in summed["edges"]
    )  # edges between nodes summed over positions


def test_faithfulness_is_the_share_of_the_linear_effect_the_circuit_keeps(linear_setup):
    """Linear toy, mean ablation from other prompts (their mean over prompts, per position): restoring
    nodes adds up, so faithfulness = Σ_C IE / Σ_all IE and completeness = 1 - faithfulness. (Ablating to
    the clean prompts' own mean would move a linear mean metric by exactly 0.)"""
    model, dictionary, tokens = linear_setup
    other = torch.randint(0, 20, tokens.shape, generator=torch.Generator().manual_seed(9))
    metric = lambda logits: logits[:, -1, 5].mean()  # noqa: E731
    sites = {SITE: dictionary}
    effects = node_attribution(model, tokens, metric, sites, other, "atp")[SITE]
    last = effects["features"][-1]
    chosen = last.abs().argsort(descending=True)[:5].tolist()
    total = float(effects["features"].sum() + effects["error"].sum())
    expected = float(last[chosen].sum()) / total
    circuit = {SITE: [(5, j) for j in chosen]}
    assert faithfulness(model, tokens, metric, sites, circuit, ablate_from=other) == pytest.approx(expected, abs=1e-4)
    assert faithfulness(model, tokens, metric, sites, circuit, True, other) == pytest.approx(1 - expected, abs=1e-4)
    assert faithfulness(model, tokens, metric, sites, {SITE: list(range(32))}, ablate_from=other) == pytest.approx(
        1 - float(effects["error"].sum()) / total, abs=1e-4
    )
    threshold = float(last.abs().sort(descending=True).values[5])
    graph = feature_circuit(model, tokens, metric, sites, other, "atp", node_threshold=threshold)
    errors = [(p, -1) for p in range(6) if abs(float(effects["error"][p])) > threshold]
    assert sorted(circuit_nodes(graph)[SITE]) == sorted(circuit[SITE] + errors)
    curve = faithfulness_curve(model, tokens, metric, sites, {SITE: effects}, ablate_from=other)
    assert curve.faithfulness.iloc[-1] == pytest.approx(1.0, abs=1e-4) and curve.completeness.iloc[-1] == pytest.approx(
        0.0, abs=1e-4
    )
    assert curve.n_nodes.is_monotonic_increasing and curve.threshold.is_monotonic_decreasing


def test_mean_ablation_averages_over_prompts_only(linear_setup):
    model, dictionary, tokens = linear_setup
    sites = {SITE: dictionary}
    values = site_values(model, tokens, sites)[SITE]
    means = _patch_values(model, tokens, "mean", sites)[SITE]
    torch.testing.assert_close(means.features[1, 2], values.features[:, 2].mean(0))
    assert not torch.allclose(means.features[0, 1], means.features[0, 2])


def test_bad_inputs_raise_clear_errors(linear_setup):
    model, dictionary, tokens = linear_setup
    metric = lambda logits: logits[:, -1, 3].mean()  # noqa: E731
    with pytest.raises(DictionaryError, match="d_in=8"):
        node_attribution(model, tokens, metric, {SITE: ReluDictionary(8, 16)})
    with pytest.raises(CircuitInputError, match="no hook 'blocks.5.hook_resid_post'"):
        node_attribution(model, tokens, metric, {"blocks.5.hook_resid_post": dictionary})
    with pytest.raises(CircuitInputError, match="longer than the model's context"):
        node_attribution(model, torch.zeros(1, 9, dtype=torch.long), metric, {SITE: dictionary})
    with pytest.raises(DictionaryError, match="d_in=8"):
        feature_circuit(model, tokens, metric, {SITE: ReluDictionary(8, 16)})
    with pytest.raises(CircuitInputError, match="rule must be"):
        node_attribution(model, tokens, metric, {SITE: dictionary}, method="ig", rule="trapezoid")


def test_nodes_summed_over_positions_and_the_error_share(linear_setup):
    """Linear toy whose metric reads every position: a node over all positions carries the sum of its
    per-position effects, the circuit of such nodes keeps that share of the effect (faithfulness adds up),
    and the error share is the error nodes' part of the kept nodes' |effect|."""
    model, dictionary, tokens = linear_setup
    other = torch.randint(0, 20, tokens.shape, generator=torch.Generator().manual_seed(9))
    metric = lambda logits: logits[:, :, 5].mean()  # noqa: E731
    sites = {SITE: dictionary}
    effects = node_attribution(model, tokens, metric, sites, other, "atp")[SITE]
    summed, error = effects["features"].sum(0), float(effects["error"].sum())
    threshold = float(summed.abs().sort(descending=True).values[4])
    graph = feature_circuit(model, tokens, metric, sites, other, "atp", node_threshold=threshold, over_positions=True)
    kept = {n["feature"]: n["effect"] for n in graph["nodes"]}
    expected = {j: float(summed[j]) for j in (summed.abs() > threshold).nonzero().flatten().tolist()}
    if abs(error) > threshold:
        expected[-1] = error
    assert kept.keys() == expected.keys() and all(n["pos"] == ALL for n in graph["nodes"])
    assert all(kept[j] == pytest.approx(v, abs=1e-5) for j, v in expected.items())
    magnitudes = sum(abs(v) for v in expected.values())
    assert graph["error_share"] == pytest.approx(abs(expected.get(-1, 0.0)) / magnitudes)
    total = float(summed.sum()) + error
    assert faithfulness(model, tokens, metric, sites, circuit_nodes(graph), ablate_from=other) == pytest.approx(
        sum(expected.values()) / total, abs=1e-4
    )
    curve = faithfulness_curve(model, tokens, metric, sites, {SITE: effects}, ablate_from=other, over_positions=True)
    assert curve.n_nodes.iloc[-1] == int((summed != 0).sum()) + 1 and curve.faithfulness.iloc[-1] == pytest.approx(
        1.0, abs=1e-4
    )
    shares = effect_error_shares({SITE: effects}, over_positions=True)
    assert shares["all_nodes"] == pytest.approx(abs(error) / (abs(error) + float(summed.abs().sum())))
    assert error_share([{"feature": -1, "effect": -3.0}, {"feature": 4, "effect": 1.0}]) == pytest.approx(0.75)
