"""Every fused training path (sparse TopK / BatchTopK / Matryoshka codes, ``ReLUStep``, ``GatedStep``) gives the
loss, gradients and, over a few optimiser steps, the weights of the straightforward dense implementation."""

import copy

import pytest
import torch

from sae_training.architectures import SAEShape, build_sae
from sae_training.architectures.base import reconstruction_mse
from sae_training.architectures.fused_topk import batch_topk_entries
from sae_training.architectures.topk import topk_aux_loss
from sae_training.trainer import clip_per_member

CASES = [
    ("topk", {"k": 4}),
    ("topk", {"k": 3, "k_schedule": "multiply"}),
    ("batchtopk", {"k": 4}),
    ("batchtopk", {"k": 2, "k_schedule": "multiply"}),
    ("matryoshka", {"k": 4, "widths": (8, 24)}),
    ("relu", {"l1_coefficient": 0.5}),
    ("gated", {"l1_coefficient": 0.5}),
]


def reference_loss(sae, x, coefficient, dead):
    """The loss as SAELens writes it: dense codes, autograd everywhere. Returns (per-member terms, fired)."""
    if sae.architecture == "gated":
        gate, magnitude = sae.paths(x)
        f = (gate > 0).to(x.dtype) * magnitude.relu()
        via_gate = gate.relu()
        sparsity = coefficient * (via_gate * sae.W_dec.norm(dim=-1).unsqueeze(1)).sum(-1).mean(-1)
        terms = [reconstruction_mse(sae.decode(f), x), sparsity, reconstruction_mse(sae.decode(via_gate), x)]
    else:
        pre = sae.pre_acts(x)
        f = sae.activate(pre)
        x_hat = sae.decode(f)
        terms = [reconstruction_mse(x_hat, x), sae.sparsity_loss(f, pre, coefficient)]
        terms.append(x.new_zeros(2) if sae.architecture == "relu" else topk_aux_loss(sae, x, x_hat, pre, dead))
        if sae.architecture == "matryoshka":
            terms.append(sae.inner_mse(f, x, "sum"))
    return terms, (f != 0).any(1)


def fused_loss(sae, x, coefficient, dead):
    parts = sae.loss(x, coefficient, dead)
    terms = [parts.mse, parts.sparsity, parts.aux] + ([parts.extra] if parts.extra is not None else [])
    return [t for t in terms if t is not None], parts.fired()


def make(name, options, seed=1):
    sae = build_sae(name, SAEShape(16, 64, n_members=2), options, seed=seed).double()
    with torch.no_grad():  # biases away from zero so every path (b_dec, gates) is exercised
        g = torch.Generator().manual_seed(seed)
        for param_name, param in sae.named_parameters():
            if param_name.startswith("b_") or param_name == "r_mag":
                param.copy_(0.2 * torch.randn(param.shape, generator=g, dtype=param.dtype))
    return sae


@pytest.mark.parametrize("name,options", CASES)
def test_fused_loss_and_gradients_equal_the_dense_implementation(name, options):
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0), dtype=torch.double)
    dead = torch.rand(2, 64, generator=torch.Generator().manual_seed(1)) < 0.3  # AuxK on
    results = []
    for loss_fn in (reference_loss, fused_loss):
        sae = make(name, options)
        terms, fired = loss_fn(sae, x, 0.5, dead)
        sum(t.sum() for t in terms).backward()
        results.append((terms, fired, {n: p.grad for n, p in sae.named_parameters()},
                        getattr(sae, "threshold", None)))
    (want_terms, want_fired, want_grads, want_threshold), (terms, fired, grads, threshold) = results
    assert len(terms) == len(want_terms)
    for got, want in zip(terms, want_terms):
        torch.testing.assert_close(got, want)
    assert torch.equal(fired, want_fired) and bool(fired.any()) and not bool(fired.all())
    assert grads.keys() == want_grads.keys()
    for param_name, want in want_grads.items():
        assert bool(want.abs().sum() > 0), param_name  # the path carries gradient at all
        torch.testing.assert_close(grads[param_name], want, msg=param_name)
    if want_threshold is not None:
        torch.testing.assert_close(threshold, want_threshold)


@pytest.mark.parametrize("name,options", CASES)
def test_a_few_training_steps_give_the_weights_of_the_dense_implementation(name, options):
    reference = make(name, options)
    fused = copy.deepcopy(reference)
    for sae, loss_fn in ((reference, reference_loss), (fused, fused_loss)):
        optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(3)
        for step in range(4):
            x = torch.randn(50, 16, generator=g, dtype=torch.double)
            dead = torch.rand(2, 64, generator=g) < (0.3 if step >= 2 else 0.0)
            terms, _ = loss_fn(sae, x, 0.5, dead)
            optimizer.zero_grad()
            sum(t.sum() for t in terms).backward()
            clip_per_member(list(sae.parameters()), 1.0)
            optimizer.step()
            sae.after_step()
    before = make(name, options).state_dict()
    for key, want in reference.state_dict().items():
        assert not torch.equal(want, before[key]) or key == "k_per_member" or "threshold" in key, key
        torch.testing.assert_close(fused.state_dict()[key], want, msg=key)


@pytest.mark.parametrize("fill", ["normal", "mostly_zero"])
def test_batch_topk_entries_are_the_topk_positions(fill):
    g = torch.Generator().manual_seed(0)
    flat = torch.randn(200_000, generator=g)
    if fill == "mostly_zero":  # fewer positives than kept: the shortcut must fall back
        flat = flat * (torch.rand(200_000, generator=g) < 0.001)
    for n_keep in (1, 640, 5_000):
        got = batch_topk_entries(flat, n_keep)
        want = flat.topk(n_keep).indices.sort().values
        assert torch.equal(got, want) or torch.equal(flat[got].sort().values, flat[want].sort().values)
        assert bool((got[1:] > got[:-1]).all())


@pytest.mark.parametrize("sparse_below", [1.0, 0.0])
def test_relu_sparse_and_dense_steps_both_equal_the_dense_implementation(monkeypatch, sparse_below):
    """ReLU-L1 through the sparse-codes step (forced: every batch counts as sparse) and through ``ReLUStep``
    (forced dense): loss terms, gradients and a few optimiser steps equal autograd on dense codes."""
    from sae_training.architectures import sparse_relu

    monkeypatch.setattr(sparse_relu, "SPARSE_BELOW", sparse_below)
    test_fused_loss_and_gradients_equal_the_dense_implementation("relu", {"l1_coefficient": 0.5})
    test_a_few_training_steps_give_the_weights_of_the_dense_implementation("relu", {"l1_coefficient": 0.5})


def test_relu_sparse_step_pads_members_with_different_counts_and_picks_the_path_by_density(monkeypatch):
    from sae_training.architectures import sparse_relu

    sae = make("relu", {"l1_coefficient": 0.5})
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0), dtype=torch.double)
    with torch.no_grad():  # member 0 ~8 % active, member 1 ~3 %: padding exercised
        pre = sae.pre_acts(x)
        sae.b_enc[0] -= pre[0].flatten().quantile(0.92)
        sae.b_enc[1] -= pre[1].flatten().quantile(0.97)
    pre = sae.pre_acts(x).detach()
    density = float((pre > 0).double().mean())
    counts = (pre > 0).flatten(1).sum(1)
    assert 0 < density < 0.2 and counts[0] > counts[1] > 0
    paths = []
    real_codes = sparse_relu.sparse_relu_codes
    monkeypatch.setattr(sparse_relu, "sparse_relu_codes", lambda *a: paths.append("sparse") or real_codes(*a))
    for threshold in (density * 1.01, density * 0.99):
        monkeypatch.setattr(sparse_relu, "SPARSE_BELOW", threshold)
        parts = sae.loss(x, 0.5)
        assert (parts.codes is not None) == (threshold > density) and (parts.dense_f is None) == (threshold > density)
        want = sae.activate(pre)
        torch.testing.assert_close(parts.f, want)
        torch.testing.assert_close(parts.x_hat, sae.decode(want).detach(), check_dtype=False)
    assert paths == ["sparse"]
    tokens, latents = sparse_relu.positive_entries(pre > 0, counts)
    keys = tokens * 64 + latents
    assert tokens.shape == (2, int(counts[0])) and all(len(set(k.tolist())) == k.numel() for k in keys)
    assert bool((keys[:, 1:] > keys[:, :-1]).all())  # token-major and distinct, padding included


def test_inactive_positions_widen_past_an_active_prefix():
    from sae_training.architectures.sparse_relu import _inactive_positions

    active = torch.zeros(10_000, dtype=torch.bool)
    active[:5_000] = True
    found = _inactive_positions(active, 7)
    assert found.tolist() == list(range(5_000, 5_007))
