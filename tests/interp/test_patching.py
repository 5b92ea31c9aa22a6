"""Patching: the planted circuit's sites and edge are found; attribution patching matches exact on small edits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from circuit_toys import VOCAB, one_thread, planted_induction_model, planted_prompts, random_ln_model  # noqa: E402, F401

from interp.circuits.attention import CircuitInputError
from interp.circuits.patching import (
    agreement,
    atp_agreement,
    attribution_patching,
    graddrop_heads,
    grid_frame,
    logit_diff_metric,
    next_token_metric,
    patch_heads,
    patch_residual,
    path_patch,
)


@pytest.fixture(scope="module")
def planted():
    model = planted_induction_model()
    clean, _ = planted_prompts(n=8, half=5)
    corrupt = clean.clone()
    corrupt[:, 1:6] = torch.roll(clean[:, 1:6], 1, dims=0)  # another prompt's span: no induction possible
    corrupt[:, 1:6] = torch.where(
        corrupt[:, 1:6] == clean[:, 1:6], (corrupt[:, 1:6] % (VOCAB - 1)) + 1, corrupt[:, 1:6]
    )
    metric = next_token_metric(clean, slice(6, 10))
    return model, clean, corrupt, metric


def test_head_patching_finds_the_two_planted_heads(planted):
    model, clean, corrupt, metric = planted
    effects = patch_heads(model, clean, corrupt, metric)
    assert effects[0, 0] < -1 and effects[1, 0] < -1
    assert effects[:, 1].abs().max() < 1e-4


def test_path_patching_singles_out_the_planted_k_edge(planted):
    model, clean, corrupt, metric = planted
    effects = path_patch(model, clean, corrupt, metric)
    assert effects.shape == (3, 2, 2, 2, 2)
    assert effects[1, 0, 0, 1, 0] < -1  # side k, L0H0 -> L1H0
    others = effects.clone()
    others[1, 0, 0, 1, 0] = 0
    assert others.abs().max() < 1e-4


def test_residual_patching_localises_the_first_copy(planted):
    model, clean, corrupt, metric = planted
    effects = patch_residual(model, clean, corrupt, metric)
    assert effects.shape == (2, 11)
    assert effects[0, 6:].abs().max() < 1e-5  # second copy identical in both prompts
    assert effects[1, 7:].abs().max() < 1e-5  # ... except position 6, whose previous token was corrupted
    assert effects[1, 6] < -0.1
    assert effects[0, 1:6].min() < -0.1  # the corrupted first copy matters before layer 0


def test_attribution_patching_matches_exact_on_small_edits():
    model = random_ln_model(seed=3)
    clean = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(0))
    names = [f"blocks.{l}.hook_resid_pre" for l in range(2)] + [f"blocks.{l}.attn.hook_z" for l in range(2)]
    _, cache = model.run_with_cache(clean)
    g = torch.Generator().manual_seed(1)
    edits = {
        name: cache[name] + 0.02 * torch.randn(cache[name].shape, generator=g) * cache[name].std() for name in names
    }
    metric = next_token_metric(clean, slice(None))
    approx = attribution_patching(model, clean, edits, metric)
    exact_resid = patch_residual(model, clean, edits, metric)
    exact_heads = patch_heads(model, clean, edits, metric)
    resid, heads = agreement(exact_resid, approx["residual"]), agreement(exact_heads, approx["heads"])
    assert resid["pearson"] > 0.99 and heads["pearson"] > 0.99, (resid, heads)
    model.requires_grad_(False)  # frozen weights give the same estimate
    frozen = attribution_patching(model, clean, edits, metric)
    torch.testing.assert_close(frozen["heads"], approx["heads"])


def test_logit_diff_metric_and_frames():
    logits = torch.zeros(2, 3, 5)
    logits[:, 2, 1] = 3.0
    metric = logit_diff_metric(2, torch.tensor([1, 1]), torch.tensor([0, 0]))
    assert float(metric(logits)) == 3.0
    frame = grid_frame(torch.arange(6.0).reshape(2, 3), ("layer", "pos"), "effect")
    assert list(frame.columns) == ["layer", "pos", "effect"]
    assert frame.query("layer == 1 and pos == 2").effect.item() == 5.0


def test_bad_inputs_raise_clear_errors(planted):
    model, clean, corrupt, metric = planted
    with pytest.raises(CircuitInputError, match="same shape"):
        patch_heads(model, clean, corrupt[:, :5], metric)
    with pytest.raises(CircuitInputError, match="unknown side"):
        path_patch(model, clean, corrupt, metric, sides=("x",))
    with pytest.raises(CircuitInputError, match="lack"):
        patch_heads(model, clean, {"blocks.0.attn.hook_z": torch.zeros(1)}, metric)


def correct_logit_metric(clean, positions: slice):
    """Mean logit of the correct next token: linear in L1H0's pattern on the planted model."""
    targets = clean[:, positions.start + 1 : positions.stop + 1]
    return lambda logits: logits[:, positions].gather(-1, targets[..., None]).mean()


def test_atp_star_qk_fix_is_exact_where_attention_saturates_and_plain_atp_fails(planted):
    """Token corruption of L0H0's input moves L1H0's keys far; L1H0's softmax is saturated, so plain
    AtP sees almost no gradient into L0H0. Downstream of L1H0's pattern the logits are linear, so the
    QK fix (exact softmax of the new scores) gives the exact effect."""
    model, clean, corrupt, _ = planted
    metric = correct_logit_metric(clean, slice(6, 10))
    exact = patch_heads(model, clean, corrupt, metric)
    plain = attribution_patching(model, clean, corrupt, metric, method="atp")["heads"]
    star = attribution_patching(model, clean, corrupt, metric)["heads"]
    assert exact[0, 0] < -5 and abs(float(plain[0, 0])) < 0.01 * abs(float(exact[0, 0]))
    torch.testing.assert_close(star, exact, atol=1e-3, rtol=1e-3)
    table = atp_agreement(model, clean, corrupt, metric)
    full = table[table.scale == 1.0].set_index("method").pearson
    assert full["atp*"] > 0.999 and full["atp"] < 0.9
    small = table[table.scale == 0.1].set_index("method").pearson
    assert small["atp"] > 0.99 and small["atp*"] > 0.99


def test_graddrop_by_hand_on_the_planted_model(planted):
    """Dropping layer 1's gradient leaves L0H0 only its direct path, which the unembedding never reads
    (0); layer-1 heads keep their plain |AtP|."""
    model, clean, corrupt, _ = planted
    metric = correct_logit_metric(clean, slice(6, 10))
    dropped = graddrop_heads(model, clean, corrupt, metric)
    plain = attribution_patching(model, clean, corrupt, metric, method="atp")["heads"]
    assert float(dropped[0].abs().max()) < 1e-6
    torch.testing.assert_close(dropped[1], plain[1].abs())


def test_atp_method_must_be_known(planted):
    model, clean, corrupt, metric = planted
    with pytest.raises(CircuitInputError, match="method must be one of"):
        attribution_patching(model, clean, corrupt, metric, method="atp+")
