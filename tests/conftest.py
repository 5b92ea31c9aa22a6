"""Shared fixtures: a tiny random model with the demo tokenizer, and a small complete workspace built with it."""

from __future__ import annotations

import pytest
import torch


def make_tiny_model(seed: int = 0, n_ctx: int = 32):
    """A 2-layer random HookedTransformer using the bundled tokenizer (deterministic for a seed)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from interp.models.loading import demo_tokenizer

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64, d_vocab=4096, n_ctx=n_ctx,
        act_fn="gelu", normalization_type="LN", seed=seed, device="cpu",
    )
    return HookedTransformer(cfg, tokenizer=demo_tokenizer()).eval()


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return make_tiny_model()


@pytest.fixture(scope="session")
def demo_model():
    from interp.models.loading import load_model

    return load_model("demo", device="cpu")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, tiny_model):
    """``tests/workspace.py``'s workspace, built once per session (read-only for tests: copy it to change it)."""
    from tests.workspace import build_workspace

    torch.manual_seed(0)
    return build_workspace(tmp_path_factory.mktemp("workspace"), tiny_model)
