"""Attention basics: patterns and head scores (previous-token, induction, duplicate-token)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def repeated_random_tokens(
    n_prompts: int,
    half_length: int,
    vocab_low: int,
    vocab_high: int,
    bos_id: int,
    seed: int = 0,
) -> Int[Tensor, "batch 1+2*half"]:
    """BOS + a random span + the same span: the standard induction prompt set."""
    generator = torch.Generator().manual_seed(seed)
    span = torch.randint(vocab_low, vocab_high, (n_prompts, half_length), generator=generator)
    return torch.cat([torch.full((n_prompts, 1), bos_id), span, span], dim=1)


def attention_patterns(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer batch head q k"]:
    """Every layer's attention pattern, stacked."""
    names = {f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)])


def previous_token_score(pattern: Float[Tensor, "batch head q k"]) -> Float[Tensor, "head"]:
    """Mean attention from each position to the position just before it."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


def induction_score(pattern: Float[Tensor, "batch head q k"], half_length: int) -> Float[Tensor, "head"]:
    """On BOS + span + span: mean attention from the second copy to the token after the first copy.

    With the span starting at position 1, token at q = 1 + half + i attends to key 2 + i,
    i.e. the diagonal at offset ``-(half_length - 1)``, whose entries from the third on are
    the second copy's queries.
    """
    diagonal = pattern.diagonal(offset=-(half_length - 1), dim1=-2, dim2=-1)
    return diagonal[..., 2:].mean(dim=(0, -1))


def duplicate_token_score(pattern: Float[Tensor, "batch head q k"], half_length: int) -> Float[Tensor, "head"]:
    """On BOS + span + span: mean attention from the second copy to the same token in the first."""
    diagonal = pattern.diagonal(offset=-half_length, dim1=-2, dim2=-1)
    return diagonal[..., 1:].mean(dim=(0, -1))


def head_scores_on_repeated_tokens(
    model, n_prompts: int = 32, half_length: int | None = None, seed: int = 0
) -> dict[str, Float[Tensor, "layer head"]]:
    """Previous-token, induction and duplicate-token scores of every head on repeated tokens."""
    if half_length is None:
        half_length = (model.cfg.n_ctx - 1) // 2
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else 0
    tokens = repeated_random_tokens(n_prompts, half_length, 3, model.cfg.d_vocab, bos, seed)
    patterns = attention_patterns(model, tokens)
    return {
        "previous_token": torch.stack([previous_token_score(p) for p in patterns]),
        "induction": torch.stack([induction_score(p, half_length) for p in patterns]),
        "duplicate_token": torch.stack([duplicate_token_score(p, half_length) for p in patterns]),
    }
