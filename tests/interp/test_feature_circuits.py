"""Feature circuits: AtP/IG against exact effects on toys, completeness, SAELens SAEs, edges, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from circuit_toys import one_thread, random_ln_model  # noqa: E402, F401

from interp.attention import CircuitInputError
from interp.dictionary import DictionaryError, as_dictionary
from interp.feature_circuits import (
    circuit_nodes,
    edge_attribution,
    faithfulness,
    feature_circuit,
    feature_effects_by_patching,
    node_attribution,
    write_feature_circuit,
)

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
    ig = node_attribution(model, tokens, metric, sites, "zero", "ig", steps=10)[SITE]
    zero_site = dictionary.decode(torch.zeros(1, 32))  # f = 0 and ε = 0 leave only the decoder bias
    patched = metric(model.run_with_hooks(tokens, fwd_hooks=[(SITE, lambda x, hook: zero_site.expand_as(x))]))
    exact = float(patched - metric(model(tokens)))
    total = lambda effects: float(effects["features"].sum() + effects["error"].sum())  # noqa: E731
    assert abs(total(ig) - exact) / abs(exact) < 0.01
    assert abs(total(atp) - exact) / abs(exact) > 0.05


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
    effects = node_attribution(model, clean, metric, sites, corrupt, "ig", steps=10)[SITE]
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
    weights = edge_attribution(model, tokens, metric, hooks, "blocks.0.hook_resid_pre", SITE, [0, 1, 2])
    _, cache = model.run_with_cache(tokens)
    x = cache["blocks.0.hook_resid_pre"]  # the zero-attention layer passes it on unchanged
    f_up = up.encode(x)
    active = (x @ down.W_enc + down.b_enc > 0).float()
    grad_down = (model.W_U[:, 3] / 3) @ down.W_dec.T  # d metric / d f_down at the last position
    for row, j in enumerate([0, 1, 2]):
        jac = up.W_dec @ down.W_enc[:, j]  # d f_down_j / d f_up (before the ReLU gate)
        expected = (active[:, -1, j, None] * grad_down[j] * jac * -f_up[:, -1]).sum(0)
        torch.testing.assert_close(weights["features"][row], expected, atol=1e-5, rtol=1e-4)


def test_feature_circuit_graph_and_files(linear_setup, tmp_path):
    model, _, tokens = linear_setup
    hooks = {"blocks.0.hook_resid_pre": ReluDictionary(16, 24, seed=1), SITE: ReluDictionary(16, 32, seed=2)}
    metric = lambda logits: logits[:, -1, 3].mean()  # noqa: E731
    graph = feature_circuit(model, tokens, metric, hooks, top_k=4, edge_threshold=1e-6)
    assert graph["sites"] == list(hooks)
    assert sum(n["hook"] == SITE for n in graph["nodes"]) == 5  # 4 features + the error node
    assert any(e["target"] == "metric" for e in graph["edges"])
    assert any(e["source"].startswith("blocks.0.hook_resid_pre/") and e["target"].startswith(SITE) for e in graph["edges"])
    paths = write_feature_circuit(tmp_path, graph)
    assert all(p.exists() for p in paths)


def test_faithfulness_is_the_share_of_the_linear_effect_the_circuit_keeps(linear_setup):
    """Linear toy, mean ablation: restoring nodes adds up, so faithfulness = Σ_C IE / Σ_all IE."""
    model, dictionary, tokens = linear_setup
    metric = lambda logits: logits[:, -1, 5].mean()  # noqa: E731
    sites = {SITE: dictionary}
    effects = node_attribution(model, tokens, metric, sites, "mean", "atp")[SITE]
    per_feature = effects["features"].sum(0)
    chosen = per_feature.abs().argsort(descending=True)[:5].tolist()
    total = float(per_feature.sum() + effects["error"].sum())
    expected = float(per_feature[chosen].sum()) / total
    assert faithfulness(model, tokens, metric, sites, {SITE: chosen}) == pytest.approx(expected, abs=1e-4)
    assert faithfulness(model, tokens, metric, sites, {SITE: list(range(32)) + [-1]}) == pytest.approx(1.0, abs=1e-5)
    graph = feature_circuit(model, tokens, metric, sites, "mean", "atp", top_k=5)
    assert sorted(circuit_nodes(graph)[SITE]) == sorted(chosen + [-1])


def test_bad_inputs_raise_clear_errors(linear_setup):
    model, dictionary, tokens = linear_setup
    metric = lambda logits: logits[:, -1, 3].mean()  # noqa: E731
    with pytest.raises(DictionaryError, match="d_in=8"):
        node_attribution(model, tokens, metric, {SITE: ReluDictionary(8, 16)})
    with pytest.raises(CircuitInputError, match="no hook 'blocks.5.hook_resid_post'"):
        node_attribution(model, tokens, metric, {"blocks.5.hook_resid_post": dictionary})
    with pytest.raises(CircuitInputError, match="longer than the model's context"):
        node_attribution(model, torch.zeros(1, 9, dtype=torch.long), metric, {SITE: dictionary})
