"""Steer / clamp / ablate: identities that must hold exactly, and a hand-set model whose planted feature
writes one token's unembedding, so every effect has a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.features.dictionary import DictionaryError
from interp.features.interventions import (
    InterventionError,
    ablate,
    check_sites,
    clamp,
    dose_response,
    edit_activations,
    edit_hooks,
    generate,
    intervened_logits,
    kl_divergence,
    prompt_tokens,
    sample,
    steer,
)
from interp.features.probe import probe_tokens
from interp.store.errors import InputError

HOOK = "blocks.0.hook_resid_post"
PROMPT = "Now is the winter of our discontent made glorious summer by this sun of York"


class ReluDictionary:
    """A tied ReLU dictionary: ``f = relu(x W_dec^T + b)``, ``x_hat = f W_dec``."""

    def __init__(self, W_dec: torch.Tensor, bias: float = 0.0, hook_name: str = HOOK):
        self._W_dec, self.bias, self.hook_name = W_dec, bias, hook_name
        self.d_sae, self.d_in = W_dec.shape

    @property
    def W_dec(self):
        return self._W_dec

    def encode(self, x):
        return torch.relu(x @ self._W_dec.T + self.bias)

    def decode(self, f):
        return f @ self._W_dec


@pytest.fixture(scope="module")
def sae(tiny_model):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(48, tiny_model.cfg.d_model, generator=g)
    return ReluDictionary(W / W.norm(dim=1, keepdim=True), bias=-0.5)


def codes_at(model, dictionary, tokens, hook=HOOK):
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    return dictionary.encode(cache[hook][0])


def test_clamping_features_to_their_current_values_is_the_identity(tiny_model, sae):
    tokens = prompt_tokens(tiny_model, PROMPT)
    f = codes_at(tiny_model, sae, tokens)
    a, b = f.sum(0).topk(2).indices.tolist()
    assert f[:, a].max() > 0 and f[:, b].max() > 0  # the clamps act on firing features
    edits = [clamp(sae, HOOK, j, float(f[p, j]), positions=(p,)) for p in range(tokens.shape[1]) for j in (a, b)]
    assert torch.equal(intervened_logits(tiny_model, tokens, [edits]), tiny_model(tokens))


def test_ablating_a_feature_that_does_not_fire_changes_nothing(tiny_model, sae):
    tokens = prompt_tokens(tiny_model, PROMPT)
    f = codes_at(tiny_model, sae, tokens)
    silent = int((f.max(0).values == 0).nonzero()[0])
    firing = int(f.sum(0).argmax())
    assert torch.equal(intervened_logits(tiny_model, tokens, [[ablate(sae, HOOK, silent)]]), tiny_model(tokens))
    assert not torch.equal(intervened_logits(tiny_model, tokens, [[ablate(sae, HOOK, firing)]]), tiny_model(tokens))


def test_add_moves_the_hook_output_by_c_times_the_decoder_row_at_the_chosen_positions(tiny_model, sae):
    tokens = prompt_tokens(tiny_model, PROMPT)
    seen = {}
    downstream = "blocks.1.hook_resid_pre"  # the next block reads exactly what the edited hook wrote

    def capture(act, hook):
        seen[len(seen)] = act.clone()

    c, feature, positions = 8.0, 5, (2, 7)
    for rows in ([[]], [[steer(sae, HOOK, feature, c, positions)]]):
        with tiny_model.hooks(fwd_hooks=[*edit_hooks(rows), (downstream, capture)]):
            tiny_model(tokens)
    delta = seen[1] - seen[0]
    others = [p for p in range(tokens.shape[1]) if p not in positions]
    assert torch.equal(delta[0, others], torch.zeros_like(delta[0, others]))
    expected = (c * sae.W_dec[feature]).expand(len(positions), -1)
    torch.testing.assert_close(delta[0, list(positions)], expected, atol=1e-5, rtol=0)


def test_several_features_and_rows_edit_independently():
    W = torch.eye(4)
    d = ReluDictionary(W)
    x = torch.tensor([[[1.0, 2.0, 0.0, -1.0]]]).repeat(3, 1, 1)  # 3 rows, 1 position
    rows = [[], [steer(d, HOOK, 2, 3.0), clamp(d, HOOK, 1, 5.0)], [ablate(d, HOOK, 0), ablate(d, HOOK, 3)]]
    out = edit_activations(x, rows)
    assert out[0].tolist() == [[1.0, 2.0, 0.0, -1.0]]
    assert out[1].tolist() == [[1.0, 5.0, 3.0, -1.0]]
    assert out[2].tolist() == [[0.0, 2.0, 0.0, -1.0]]  # feature 3 does not fire (relu): nothing to ablate


@pytest.fixture(scope="module")
def planted():
    """A 1-layer model with no layer norm and W_U = I, so logits = final residual; feature 0's decoder row is
    token 5's unembedding, and every embedding carries a positive component along it, so it fires."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=16, n_ctx=16,
                                  act_fn="relu", normalization_type=None, seed=0, device="cpu")
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():
        model.W_U.copy_(torch.eye(16))
        model.b_U.zero_()
        model.W_E[:, 5] += 2.0
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 16, generator=g)
    W[0] = torch.eye(16)[5]
    return model, ReluDictionary(W / W.norm(dim=1, keepdim=True), bias=-0.1)


def test_steering_the_planted_feature_raises_its_token_monotonically(planted):
    model, d = planted
    tokens = torch.tensor([[0, 3, 9, 5, 1, 7]])
    curve = dose_response(model, tokens[0, 1:], steer(d, HOOK, 0, 0.0), [0.0, 0.5, 1, 2, 4, 8, 16])
    assert (curve.target == 5).all()  # the feature's top promoted token
    assert np.all(np.diff(curve.probability) > 0)
    assert curve.probability.iloc[0] == pytest.approx(curve.default_probability.iloc[0])
    base = model(tokens)
    steered = intervened_logits(model, tokens, [[steer(d, HOOK, 0, 3.0)]])
    expected = base.clone()
    expected[..., 5] += 3.0  # W_U = I: the token's logit rises by exactly c, no other logit moves
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=0)


def test_ablating_the_planted_feature_removes_exactly_its_contribution(planted):
    model, d = planted
    tokens = torch.tensor([[0, 3, 9, 5, 1, 7, 5, 2]])
    f = codes_at(model, d, tokens)[:, 0]
    assert (f > 0).all()
    ablated = intervened_logits(model, tokens, [[ablate(d, HOOK, 0)]])
    with torch.no_grad():
        removed = model(tokens) - ablated
    torch.testing.assert_close(removed, f[None, :, None] * d.W_dec[0] @ model.W_U, atol=1e-5, rtol=0)
    # the probe's direct logit effect of the feature on each next token is that same contribution
    result = probe_tokens(model, {"planted": d}, tokens[0, 1:].tolist(), decode=str)
    for position in range(tokens.shape[1] - 1):
        effect = result.token_features("planted", position).set_index("feature").logit_effect[0]
        nxt = result.next_ids[position]
        assert effect == pytest.approx(float(removed[0, position + 1, nxt]), abs=1e-5)


def test_generation_shares_its_draws_and_an_identity_edit_changes_nothing(tiny_model, sae):
    tokens = prompt_tokens(tiny_model, PROMPT)
    f = codes_at(tiny_model, sae, tokens)
    silent = int((f.max(0).values == 0).nonzero()[0])
    out = generate(tiny_model, PROMPT, [steer(sae, HOOK, silent, 0.0)], max_new_tokens=8, temperature=1.0, seed=3)
    assert out.default_ids == out.steered_ids and np.all(out.kl == 0.0)
    again = generate(tiny_model, PROMPT, [steer(sae, HOOK, 5, 12.0)], max_new_tokens=8, temperature=1.0, seed=3)
    assert again.default_ids == out.default_ids  # same seed, same default continuation
    assert again.kl.max() > 0 and len(again.kl) == tokens.shape[1] + 8
    up = again.logit_changes[again.logit_changes.direction == "up"]
    np.testing.assert_allclose(up.change, up.steered_logit - up.default_logit, atol=1e-5)


def uncached_continuation(model, tokens, row, steps, temperature, seed):
    """The reference: every step a full forward of the whole sequence so far with ``row``'s edits (absolute
    positions), the draw by inverse CDF at the seeded uniform; the new tokens and each step's next-token logits."""
    g = torch.Generator().manual_seed(seed)
    sequence, logits_seen = tokens, []
    for _ in range(steps):
        logits = intervened_logits(model, sequence, [row])[0, -1].double()
        logits_seen.append(logits)
        u = torch.rand((1, 1), generator=g, dtype=torch.float64)
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            cdf = (logits / temperature).softmax(-1).cumsum(-1)
            nxt = int(torch.searchsorted(cdf, u[0] * cdf[-1]).clamp_max(len(cdf) - 1))
        sequence = torch.cat([sequence, torch.tensor([[nxt]])], 1)
    return sequence[0, tokens.shape[1]:].tolist(), torch.stack(logits_seen)


EDITS = {
    "add everywhere": lambda sae, n: [steer(sae, HOOK, 5, 4.0)],
    "clamp everywhere": lambda sae, n: [clamp(sae, HOOK, 7, 3.0)],
    "ablate everywhere": lambda sae, n: [ablate(sae, HOOK, 7)],
    # positions past the prompt are edited when generation reaches them, as in a full forward of the sequence
    "add at chosen positions": lambda sae, n: [steer(sae, HOOK, 5, 6.0, positions=(1, n, n + 2))],
    "clamp and ablate at chosen positions": lambda sae, n: [clamp(sae, HOOK, 7, 5.0, positions=(n + 1, n + 3)),
                                                           ablate(sae, HOOK, 9, positions=(2, n))],
}


@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_cached_batched_sampling_equals_uncached_full_forwards(tiny_model, sae, edit, temperature):
    """The default row and the edited row in one key-value cached batch give exactly the tokens, and to
    float tolerance the logits, of the uncached one-row reference."""
    tokens = prompt_tokens(tiny_model, PROMPT)
    rows = [[], EDITS[edit](sae, tokens.shape[1])]
    new, first = sample(tiny_model, tokens.repeat(2, 1), rows, 6, temperature=temperature, seed=11)
    for b, row in enumerate(rows):
        ids, logits = uncached_continuation(tiny_model, tokens, row, 6, temperature, seed=11)
        assert new[b].tolist() == ids
        torch.testing.assert_close(first[b].double(), logits[0], atol=1e-4, rtol=1e-4)
    assert new[0].tolist() != new[1].tolist() or not torch.equal(first[0], first[1])  # the edit did something


def test_generation_logits_and_kl_agree_with_full_forwards_at_every_step(tiny_model, sae):
    """``generate``'s KL along the default text is the KL of the uncached default and edited logits."""
    tokens = prompt_tokens(tiny_model, PROMPT)
    edit = [clamp(sae, HOOK, 7, 3.0, positions=(tokens.shape[1] + 1,)), steer(sae, HOOK, 5, 2.0)]
    out = generate(tiny_model, PROMPT, edit, max_new_tokens=5, temperature=0.0, seed=0)
    ids, default_logits = uncached_continuation(tiny_model, tokens, [], 5, 0.0, seed=0)
    assert out.default_ids == ids
    full = torch.cat([tokens, torch.tensor([ids])], 1)
    default, edited = (intervened_logits(tiny_model, full, [row])[0] for row in ([], edit))
    expected = kl_divergence(default, edited)
    np.testing.assert_allclose(out.kl, expected.numpy(), atol=1e-6)
    assert out.steered_ids == uncached_continuation(tiny_model, tokens, edit, 5, 0.0, seed=0)[0]


def test_unedited_logits_equal_the_models_own(tiny_model):
    """``intervened_logits`` unembeds with ``W_U`` as stored (not TransformerLens' ``Unembed``): same logits."""
    tokens = prompt_tokens(tiny_model, PROMPT)
    torch.testing.assert_close(intervened_logits(tiny_model, tokens, [[]]), tiny_model(tokens), atol=1e-5, rtol=1e-5)


def test_the_decode_layout_keeps_weights_and_outputs_bit_identical():
    from interp.models.layout import use_decode_layout
    from tests.conftest import make_tiny_model

    model = make_tiny_model(seed=4)
    tokens = prompt_tokens(model, PROMPT)
    before = {name: w.clone() for name, w in model.named_parameters()}
    logits = model(tokens)
    use_decode_layout(model)
    attn = model.blocks[0].attn
    assert attn.W_Q.permute(0, 2, 1).is_contiguous() and attn.W_O.permute(2, 0, 1).is_contiguous()
    assert all(torch.equal(w, before[name]) for name, w in model.named_parameters())
    assert torch.equal(model(tokens), logits)
    use_decode_layout(model)  # idempotent
    assert torch.equal(model(tokens), logits)


def test_kl_of_identical_logits_is_zero_and_positive_otherwise():
    a = torch.randn(3, 10)
    assert torch.equal(kl_divergence(a, a), torch.zeros(3, dtype=torch.float64))
    assert (kl_divergence(a, a.flip(-1)) > 0).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: steer(d, HOOK, 48, 1.0), "feature 48 is out of range"),
        (lambda d: steer(d, HOOK, -1, 1.0), "out of range"),
        (lambda d: steer(d, HOOK, 0, float("nan")), "finite"),
        (lambda d: steer(d, HOOK, 0, float("inf")), "finite"),
        (lambda d: steer(d, HOOK, 0, 1e9), "too large"),
        (lambda d: clamp(d, HOOK, 0, -1e30), "too large"),
        (lambda d: steer(d, HOOK, 0, 1.0, positions=(-2,)), "non-negative"),
    ],
)
def test_bad_interventions_are_refused_with_a_message(sae, make, message):
    with pytest.raises((InterventionError, DictionaryError), match=message):
        make(sae)


def test_an_sae_that_does_not_fit_the_model_is_refused(tiny_model, sae):
    with pytest.raises(DictionaryError, match="no hook 'blocks.9.hook_resid_post'"):
        check_sites(tiny_model, [steer(sae, "blocks.9.hook_resid_post", 0, 1.0)])
    narrow = ReluDictionary(torch.eye(8))
    with pytest.raises(DictionaryError, match="expects width 8 but hook 'blocks.0.hook_resid_post'"):
        generate(tiny_model, PROMPT, [steer(narrow, HOOK, 0, 1.0)], max_new_tokens=2)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "empty"),
        ("  \n\t ", "empty"),
        ("\x00\x01\u200b", "empty"),
        ("word " * 200, "more than the model's context"),
    ],
)
def test_bad_prompts_are_refused_with_a_message(tiny_model, sae, prompt, message):
    with pytest.raises(InputError, match=message):
        generate(tiny_model, prompt, [steer(sae, HOOK, 0, 1.0)], max_new_tokens=4)


def test_the_default_dose_response_target_skips_tokens_that_do_not_decode_to_text():
    from interp.features.interventions import readable_token

    pieces = {5: "\ufffd", 6: "  ", 7: " thee", 8: " war"}
    assert readable_token([5, 6, 7, 8], pieces.get) == 7  # a lone byte and bare whitespace skipped
    assert readable_token([5, 6], pieces.get) == 5  # none readable: the top one
