"""The MFR code's tied TopK SAE: its forward on hand-set weights, per-member Adam, re-initialisation,
exact resume, and the SAELens export through sae_lens' own loader."""

import pytest
import torch
import torch.nn.functional as F
from sae_lens import SAE

from sae_training.architectures import SAEShape, build_sae
from sae_training.config import TrainConfig
from sae_training.optim import MemberAdam
from sae_training.saelens_io import MemberDictionary, save_member
from sae_training.trainer import read_metrics, train_saes


def test_forward_is_the_mfr_code_topk_without_relu_and_tied_normalised_decoder():
    sae = build_sae("mfr_tied", SAEShape(3, 4, n_members=2), {"k": 1, "k_schedule": "multiply"})
    W = torch.tensor([[2.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    with torch.no_grad():
        sae.W.copy_(torch.stack([W, W]))
        sae.b_enc.zero_()
    x = torch.tensor([[-1.0, -3.0, -5.0]])  # pre = (-2, -3, -5, -4): all negative, kept anyway (no ReLU)
    f = sae.encode(x)
    assert f[0].tolist() == [[-2.0, 0.0, 0.0, 0.0]]  # k_0 = 1
    assert f[1].tolist() == [[-2.0, -3.0, 0.0, 0.0]]  # k_1 = 2
    x_hat = sae.decode(f)
    torch.testing.assert_close(x_hat[0], f[0] @ F.normalize(W, dim=-1))  # decoder = row-normalised encoder
    assert "b_dec" not in dict(sae.named_parameters())


def test_ties_at_the_threshold_keep_more_than_k():
    sae = build_sae("mfr_tied", SAEShape(2, 3), {"k": 1})
    with torch.no_grad():
        sae.W.copy_(torch.tensor([[[1.0, 0], [1.0, 0], [0, 1.0]]]))
    assert (sae.encode(torch.tensor([[1.0, 0.5]])) != 0).sum() == 2


def test_orthogonal_init_and_zero_bias():
    sae = build_sae("mfr_tied", SAEShape(8, 16, n_members=2), {"k": 2}, seed=1)
    for i in range(2):
        torch.testing.assert_close(sae.W[i].T @ sae.W[i], torch.eye(8), atol=1e-5, rtol=0)  # orthonormal columns
    assert not sae.b_enc.any()


def test_member_adam_equals_one_torch_adam_per_member_and_resets_one():
    torch.manual_seed(0)
    stacked = torch.nn.Parameter(torch.randn(3, 5, 4))
    alone = [torch.nn.Parameter(stacked[i].detach().clone()) for i in range(3)]
    ours = MemberAdam([stacked], 3, lr=0.01)
    theirs = [torch.optim.Adam([p], lr=0.01) for p in alone]
    for step in range(6):
        grad = torch.randn(3, 5, 4)
        stacked.grad = grad.clone()
        for i, p in enumerate(alone):
            p.grad = grad[i].clone()
        ours.step()
        for opt in theirs:
            opt.step()
        if step == 2:  # member 1 gets a fresh optimiser, as the MFR code on re-initialisation
            ours.reset_members([1])
            theirs[1] = torch.optim.Adam([alone[1]], lr=0.01)
    for i in range(3):
        torch.testing.assert_close(stacked[i].detach(), alone[i].detach(), atol=1e-6, rtol=1e-6)


def test_freq_cubic_reinitialises_only_the_member_far_from_the_target_rate():
    sae = build_sae("mfr_tied", SAEShape(8, 16, n_members=2), {"k": 1, "k_schedule": "constant",
                                                               "reinit": "freq_cubic", "reinit_target_density": 1 / 16})
    with torch.no_grad():
        sae.b_enc[1, 0] = 100.0  # member 1: latent 0 wins every token -> rates (1, 0, ..., 0), far from 1/16
    x = torch.eye(8).repeat(2, 1) * 0.01
    before = sae.W.detach().clone()
    parts = sae.loss(x)
    assert sae.reinitialise(parts) == [1]
    assert torch.equal(sae.W[0], before[0]) and not torch.equal(sae.W[1], before[1])
    assert sae.b_enc[1].abs().sum() == 0


def planted(n=4000, d=16, n_features=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n_features, d, generator=g), dim=-1)
    return (torch.rand(n, n_features, generator=g) * (torch.rand(n, n_features, generator=g) < 0.1)) @ features


@pytest.mark.parametrize("reinit", ["off", "freq_cubic"])
def test_tied_mfr_run_resumes_exactly(tmp_path, reinit):
    x = planted()
    config = TrainConfig(architecture="mfr_tied", options={"k": 3, "reinit": reinit, "reinit_threshold": 2.0},
                         d_sae=32, n_members=2, mfr_coefficient=1.0, mfr_warmup_steps=4, n_tokens=256 * 16,
                         batch_size=256, lr=1e-2, grad_clip=0.0, mse_reduction="mean", b_dec_init="zeros",
                         log_every=2, checkpoint_every=8, buffer_tokens=2048)
    full = train_saes(config, tmp_path / "full", activations=x, progress=False, evaluate=False)
    train_saes(config, tmp_path / "split", activations=x, progress=False, stop_at_step=6, evaluate=False)
    resumed = train_saes(config, tmp_path / "split", activations=x, progress=False, resume=True, evaluate=False)
    assert read_metrics(tmp_path / "split") == read_metrics(tmp_path / "full")
    assert read_metrics(tmp_path / "full")[-1]["fvu"] < read_metrics(tmp_path / "full")[0]["fvu"]
    for name, value in full.sae.state_dict().items():
        assert torch.equal(value, resumed.sae.state_dict()[name]), name


def test_saelens_export_encodes_and_decodes_like_ours(tmp_path):
    torch.manual_seed(0)
    sae = build_sae("mfr_tied", SAEShape(16, 48, n_members=2), {"k": 4}, seed=2)  # k_i = 4, 8
    with torch.no_grad():
        sae.W.add_(0.1 * torch.randn_like(sae.W))
        sae.b_enc.add_(0.1 * torch.randn_like(sae.b_enc))
    x = 2.0 * torch.randn(64, 16)
    for i in range(2):
        save_member(tmp_path / f"m{i}", sae, i, scale=0.5, hook_name="h")
        theirs, ours = SAE.load_from_disk(str(tmp_path / f"m{i}")), MemberDictionary(sae, i, 0.5)
        with torch.no_grad():
            f = ours.encode(x)
            kth = (sae.pre_acts(x * 0.5)[i]).topk(sae.member_k[i], dim=-1).values[:, -1]
            assert bool((kth > 0).all())  # SAELens ReLUs kept values: equal where the k-th value is positive
            torch.testing.assert_close(theirs.encode(x), f, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(theirs.decode(f), ours.decode(f), atol=1e-5, rtol=1e-5)
