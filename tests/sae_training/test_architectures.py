"""Architectures: the registry, stacked ensembles equal to their members run alone, known sparsity."""

import pytest
import torch

from sae_training.architectures import ARCHITECTURES, SAEShape, architecture_options, build_sae
from sae_training.architectures.topk import topk_aux_loss


def options(name: str, **values) -> dict:
    """The given values for those options the architecture has (k for the TopK family)."""
    own = {spec.name for spec in architecture_options(name)}
    return {key: value for key, value in values.items() if key in own}


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown architecture 'gatedx'.*topk"):
        build_sae("gatedx", SAEShape(8, 16))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_ensemble_member_equals_that_member_alone(name):
    torch.manual_seed(0)
    ensemble = build_sae(name, SAEShape(12, 40, n_members=3), options(name, k=5, k_schedule="constant"), seed=1).eval()
    single = build_sae(name, SAEShape(12, 40, n_members=1), options(name, k=5, k_schedule="constant"), seed=2).eval()
    with torch.no_grad():
        for param_name, param in single.named_parameters():
            param.copy_(dict(ensemble.named_parameters())[param_name][1:2])
        for buffer_name, buffer in single.named_buffers():
            buffer.copy_(dict(ensemble.named_buffers())[buffer_name][1:2])
    x = torch.randn(30, 12)
    torch.testing.assert_close(ensemble(x)[1], single(x)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ensemble.encode(x)[1], single.encode(x)[0], atol=1e-5, rtol=1e-5)


def test_topk_keeps_k_per_member_and_multiply_schedule():
    sae = build_sae("topk", SAEShape(16, 64, n_members=3), {"k": 4, "k_schedule": "multiply"})
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive, so exactly k survive the ReLU
    l0 = (sae.encode(torch.randn(50, 16)) != 0).sum(-1).float()
    assert l0.tolist() == [[4.0] * 50, [8.0] * 50, [12.0] * 50]


def test_batchtopk_keeps_k_times_batch_in_training_and_learns_a_threshold():
    sae = build_sae("batchtopk", SAEShape(16, 64, n_members=2), {"k": 3}).train()
    with torch.no_grad():
        sae.b_enc.fill_(10.0)
    f = sae.encode(torch.randn(20, 16))
    assert (f != 0).sum((1, 2)).tolist() == [60, 60]
    assert bool((sae.threshold > 0).all())


def test_jumprelu_with_zero_threshold_is_relu():
    sae = build_sae("jumprelu", SAEShape(16, 64, n_members=2))
    with torch.no_grad():
        sae.threshold.zero_()
    x = torch.randn(10, 16)
    torch.testing.assert_close(sae.encode(x), sae.pre_acts(x).relu())


def test_jumprelu_threshold_gets_gradient_only_near_threshold():
    sae = build_sae("jumprelu", SAEShape(4, 8), {"bandwidth": 0.5, "init_threshold": 1.0})
    pre = sae.pre_acts(torch.randn(64, 4))
    sae.sparsity_loss(sae.activate(pre), pre, 1.0).sum().backward()
    near = ((pre - 1.0).abs() < 0.25).sum(1)[0]
    assert torch.equal(sae.threshold.grad[0] != 0, near > 0)


def test_relu_l1_is_weighted_by_decoder_norms():
    sae = build_sae("relu", SAEShape(8, 16))
    x = torch.randn(5, 8)
    base = sae.loss(x, 1.0).sparsity
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    torch.testing.assert_close(sae.loss(x, 1.0).sparsity, 3.0 * base)


def test_auxk_is_zero_without_dead_latents_and_positive_with_them():
    sae = build_sae("topk", SAEShape(16, 64, n_members=2), {"k": 4})
    x = torch.randn(32, 16)
    parts = sae.loss(x, dead=torch.zeros(2, 64, dtype=torch.bool))
    assert parts.aux.tolist() == [0.0, 0.0]
    dead = torch.zeros(2, 64, dtype=torch.bool)
    dead[1, :10] = True
    aux = sae.loss(x, dead=dead).aux
    assert aux[0] == 0 and aux[1] > 0


def test_auxk_is_zero_when_dead_latents_reconstruct_the_residual_exactly():
    sae = build_sae("topk", SAEShape(4, 8), {"k": 1, "aux_k_coefficient": 1.0})
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_dec.zero_()
        sae.W_enc[0, :4, 4:] = torch.eye(4)  # dead latents 4..7 read x_j ...
        sae.W_dec[0, 4:, :4] = torch.eye(4)  # ... and write it back
        sae.b_enc[0, :4] = 100.0  # a live latent with a zero decoder row wins the main TopK: x_hat = 0
    x = torch.rand(6, 4).add(0.1) * torch.nn.functional.one_hot(torch.arange(6) % 4, 4)  # one positive coordinate
    dead = torch.zeros(1, 8, dtype=torch.bool)
    dead[0, 4:] = True
    pre = sae.pre_acts(x)
    x_hat = sae.decode(sae.activate(pre))
    # 4 dead latents, d_in // 2 = 2 -> top-2 dead latents: the positive coordinate and a zero one
    assert float(topk_aux_loss(sae, x, x_hat, pre, dead).detach()) == pytest.approx(0.0, abs=1e-10)


def test_matryoshka_adds_the_inner_prefix_reconstruction_errors():
    sae = build_sae("matryoshka", SAEShape(8, 16), {"k": 2, "widths": (4, 8)})
    x = torch.randn(10, 8)
    parts = sae.loss(x)
    f = parts.f
    prefix = [sae.b_dec[0] + f[0, :, :w] @ sae.W_dec[0, :w] for w in (4, 8)]
    expected = sum((p - x).pow(2).sum(-1).mean() for p in prefix)
    torch.testing.assert_close(parts.extra[0], expected)
    torch.testing.assert_close(parts.total, parts.mse.sum() + parts.aux.sum() + expected)


@pytest.mark.parametrize("widths", [(8, 4), (0, 8), (4, 32)])
def test_matryoshka_widths_that_do_not_nest_within_d_sae_are_refused(widths):
    with pytest.raises(ValueError, match="must be positive, strictly increasing and below d_sae=16"):
        build_sae("matryoshka", SAEShape(8, 16), {"k": 2, "widths": widths})


def test_gated_fires_where_the_gate_is_open_with_the_magnitude_path_value():
    sae = build_sae("gated", SAEShape(2, 2))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2).unsqueeze(0))
        sae.b_dec.zero_()
        sae.b_gate.copy_(torch.tensor([[0.0, -10.0]]))  # latent 1's gate closed
        sae.r_mag.copy_(torch.tensor([[0.0, 0.0]]).log1p() + torch.tensor([[torch.log(torch.tensor(2.0)), 0.0]]))
        sae.b_mag.copy_(torch.tensor([[0.5, 0.0]]))
    f = sae.encode(torch.tensor([[1.0, 3.0], [-1.0, 3.0]]))
    assert f[0].tolist() == [[2.5, 0.0], [0.0, 0.0]]  # magnitude 2·1 + 0.5; gate of row 2 closed (−1 < 0)
