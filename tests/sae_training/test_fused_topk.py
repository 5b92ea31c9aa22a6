"""The fused training paths (TopK: fused encoder, sparse decode, sparse AuxK; ReLU: fused encoder) equal the dense
ones."""

import pytest
import torch

from sae_training.architectures import SAEShape, build_sae
from sae_training.architectures.topk import topk_aux_loss


@pytest.mark.parametrize("k_schedule", ["constant", "multiply"])
def test_sparse_topk_loss_and_gradients_equal_the_dense_path(k_schedule):
    torch.manual_seed(0)
    sae = build_sae("topk", SAEShape(16, 64, n_members=3), {"k": 4, "k_schedule": k_schedule}).double()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(40, 16, dtype=torch.double)
    dead = torch.rand(3, 64) < 0.3  # some dead latents in every member, so AuxK is on

    def dense():
        pre = sae.pre_acts(x)
        f = sae.activate(pre)
        x_hat = sae.decode(f)
        return (x_hat - x).pow(2).sum(-1).mean(-1), topk_aux_loss(sae, x, x_hat, pre, dead), f

    def sparse():
        parts = sae.loss(x, 0.0, dead)
        return parts.mse, parts.aux, parts.f

    results = []
    for run in (dense, sparse):
        sae.zero_grad()
        mse, aux, f = run()
        (mse.sum() + 0.7 * aux.sum()).backward()
        results.append([mse.detach(), aux.detach(), f.detach(), *(p.grad.clone() for p in sae.parameters())])
    assert bool((results[0][1] > 0).all())
    for want, got in zip(*results):
        torch.testing.assert_close(got, want)


def test_fired_latents_from_topk_codes_match_the_dense_codes():
    sae = build_sae("topk", SAEShape(8, 32, n_members=2), {"k": 3})
    parts = sae.loss(torch.randn(5, 8))
    assert torch.equal(parts.fired(), (parts.f != 0).any(1))
    assert int(parts.fired().sum()) <= 2 * 5 * 3


def test_relu_training_loss_and_gradients_equal_the_dense_path():
    torch.manual_seed(0)
    sae = build_sae("relu", SAEShape(16, 64, n_members=2)).double()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
    x = torch.randn(40, 16, dtype=torch.double)
    results = []
    for fused in (False, True):
        sae.zero_grad()
        if fused:
            parts = sae.loss(x, 0.3)
            mse, sparsity, f = parts.mse, parts.sparsity, parts.f
        else:
            f = sae.encode(x)
            mse, sparsity = (sae.decode(f) - x).pow(2).sum(-1).mean(-1), sae.sparsity_loss(f, None, 0.3)
        (mse + sparsity).sum().backward()
        results.append([mse.detach(), sparsity.detach(), f.detach(), *(p.grad.clone() for p in sae.parameters())])
    assert bool((results[0][2] > 0).any()) and bool((results[0][2] == 0).any())
    for want, got in zip(*results):
        torch.testing.assert_close(got, want)
