"""A trained run's member (``run.member(i)``: ``MemberDictionary``) works in feature circuits: gradients flow
through its encode and decode, so IG and AtP give the same effects as the same SAE loaded from its SAELens
folder, and IG adds up to the exact effect of patching the site."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "interp"))  # the shared circuit toys
from circuit_toys import one_thread, random_ln_model  # noqa: E402, F401

from interp.circuits.feature_circuits import node_attribution
from sae_training.architectures import SAEShape, build_sae
from sae_training.saelens_io import MemberDictionary, load_saelens, save_member

SITE = "blocks.0.hook_resid_post"


def hand_set_member(scale: float):
    """A ReLU ensemble of two members whose member 1 has hand-set random weights (member 0 stays different)."""
    sae = build_sae("relu", SAEShape(32, 64, n_members=2), {}, seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        sae.W_enc[1].copy_(0.3 * torch.randn(32, 64, generator=g))
        sae.b_enc[1].fill_(0.05)
        sae.W_dec[1].copy_(torch.randn(64, 32, generator=g) / 8)
        sae.b_dec[1].copy_(0.1 * torch.randn(32, generator=g))
    return MemberDictionary(sae.eval(), 1, scale)


def test_member_gradients_flow_through_encode_and_decode():
    member = hand_set_member(0.5)
    f = torch.rand(3, 64, requires_grad=True)
    member.decode(f).sum().backward()
    torch.testing.assert_close(f.grad, (member.W_dec.sum(1)).expand(3, -1))  # d(sum decode)/df = row sums of W_dec
    x = torch.randn(3, 32, requires_grad=True)
    member.encode(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["ig", "atp"])
def test_member_attribution_equals_its_saelens_folder_and_ig_is_complete(tmp_path, method):
    model = random_ln_model(seed=2)
    member = hand_set_member(0.5)
    save_member(tmp_path, member.sae, 1, scale=0.5, hook_name=SITE, model_name="toy")
    g = torch.Generator().manual_seed(5)
    clean, corrupt = torch.randint(0, 50, (4, 10), generator=g), torch.randint(0, 50, (4, 10), generator=g)
    metric = lambda logits: logits[:, -1].log_softmax(-1)[:, 7].mean()  # noqa: E731
    kwargs = dict(steps=10, rule="midpoint") if method == "ig" else {}
    ours = node_attribution(model, clean, metric, {SITE: member}, corrupt, method, **kwargs)[SITE]
    theirs = node_attribution(model, clean, metric, {SITE: load_saelens(tmp_path)}, corrupt, method, **kwargs)[SITE]
    assert ours["features"].abs().sum() > 0
    torch.testing.assert_close(ours["features"], theirs["features"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours["error"], theirs["error"], atol=1e-5, rtol=1e-4)
    if method == "ig":
        _, corrupt_cache = model.run_with_cache(corrupt)
        patched = metric(model.run_with_hooks(clean, fwd_hooks=[(SITE, lambda x, hook: corrupt_cache[SITE])]))
        exact = float(patched - metric(model(clean)))
        total = float(ours["features"].sum() + ours["error"].sum())
        assert abs(total - exact) / abs(exact) < 0.02
