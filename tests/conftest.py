"""Shared fixtures: a tiny random model with the demo tokenizer, for fast cache and data tests."""

from __future__ import annotations

import pytest
import torch


def make_tiny_model(seed: int = 0, n_ctx: int = 32):
    """A 2-layer random HookedTransformer using the bundled tokenizer (deterministic for a seed)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from interp.models import demo_tokenizer

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
    from interp.models import load_model

    return load_model("demo", device="cpu")
