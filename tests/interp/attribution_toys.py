"""Hand-set models for attribution tests: a planted two-layer feature path with known edge weights, and a
random model with layer norms, biases and GELU MLPs for the completeness identity."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.features.transcoder import Transcoder

D, VOCAB, TARGET = 8, 8, 5  # residual width, vocabulary, the token the path writes
A_TOKEN, A_SCALE, B_SCALE = 1, 2.0, 6.0  # token that fires A; |A's decoder row|; |B's decoder row|


def e(i: int) -> torch.Tensor:
    return torch.eye(D)[i]


def _planted(layer0: list[tuple[torch.Tensor, torch.Tensor]], extra_unembed: tuple[int, ...] = ()):
    """The planted set-up both toys share: no normalisation, every weight zero but those set here; every token
    writes e7 except ``A_TOKEN`` (e0); layer 1's one head copies e1 -> e2 (constant scores: uniform causal
    attention); the ``TARGET`` unembedding reads e3 (and ``extra_unembed``); layer 0's transcoder features are
    ``layer0`` (encoder column, decoder row), layer 1's feature B (id 1) reads e1 + e2 and writes ``B_SCALE`` e3;
    the real ReLU MLPs are the transcoders, so every error node is 0."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=D, n_ctx=8, d_head=4, n_heads=1, d_mlp=4, d_vocab=VOCAB,
                                  act_fn="relu", normalization_type=None, seed=0)
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:] = e(7)  # every token but A_TOKEN writes e7 (read only by the supernode toy's C and D)
        model.embed.W_E[A_TOKEN] = e(0)
        model.blocks[1].attn.W_V[0, 1, 0] = 1.0  # e1 -> head dim 0
        model.blocks[1].attn.W_O[0, 0, 2] = 1.0  # head dim 0 -> e2
        for direction in (3, *extra_unembed):
            model.unembed.W_U[direction, TARGET] = 1.0
        transcoders = [Transcoder(torch.zeros(D, 4), torch.zeros(4), torch.zeros(4, D), torch.zeros(D), "relu",
                                  hook_in=f"blocks.{layer}.hook_resid_mid", hook_out=f"blocks.{layer}.hook_mlp_out")
                       for layer in range(2)]
        for feature, (reads, writes) in enumerate(layer0):
            transcoders[0].W_enc[:, feature], transcoders[0].W_dec[feature] = reads, writes
        transcoders[1].W_enc[:, 1] = e(1) + e(2)
        transcoders[1].W_dec[1] = B_SCALE * e(3)
        for layer, tc in enumerate(transcoders):
            mlp = model.blocks[layer].mlp
            mlp.W_in.copy_(tc.W_enc)
            mlp.b_in.copy_(tc.b_enc)
            mlp.W_out.copy_(tc.W_dec)
            mlp.b_out.copy_(tc.b_dec)
    return model.eval(), transcoders


def planted_path_model():
    """Feature A (layer 0, id 0) reads e0 (token ``A_TOKEN``'s embedding) and writes ``A_SCALE`` e1; layer 1's
    head copies e1 -> e2; feature B (layer 1, id 1) reads e1 + e2 and writes ``B_SCALE`` e3 = the unembedding of
    ``TARGET``."""
    return _planted([(e(0), A_SCALE * e(1))])


def random_model_and_transcoders(seed: int = 0, d_model: int = 16, n_layers: int = 2, d_sae: int = 48,
                                 activation: str = "topk", skip: bool = True):
    """A random LN + GELU transformer with biases everywhere and random transcoders (so error nodes are large)."""
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=d_model, n_ctx=16, d_head=4, n_heads=4, d_mlp=32,
                                  d_vocab=20, act_fn="gelu", normalization_type="LN", seed=seed)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("b_O", "b_V", "b_in", "b_out", "b_U", ".b")) or "ln" in name and name.endswith("w"):
                p.copy_((1.0 if name.endswith("w") else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
    transcoders = []
    for layer in range(n_layers):
        tc = Transcoder(
            torch.randn(d_model, d_sae, generator=g) / d_model**0.5,
            0.1 * torch.randn(d_sae, generator=g),
            torch.randn(d_sae, d_model, generator=g) / d_sae**0.5,
            0.2 * torch.randn(d_model, generator=g),
            activation,
            torch.full((d_sae,), 0.1) if activation == "jumprelu" else None,
            6 if activation == "topk" else None,
            0.2 * torch.randn(d_model, d_model, generator=g) if skip else None,
            f"blocks.{layer}.ln2.hook_normalized",
            f"blocks.{layer}.hook_mlp_out",
        )
        transcoders.append(tc)
    return model.eval(), transcoders


def planted_supernode_model():
    """The planted path with four layer-0 features: A1 and A2 both read e0 (they always fire together, at
    ``A_TOKEN``) and write nearly the same direction (``A_SCALE`` e1, ``A_SCALE`` (e1 + 0.05 e4)); C reads e7
    (every other token) and writes 2 ``B_SCALE`` e6, which the ``TARGET`` unembedding reads too (unrelated to A);
    D reads e7 like C but writes ``A_SCALE`` e1 like A (same direction as A, never fires with it). B (layer 1)
    reads e1 + e2 as before."""
    return _planted([(e(0), A_SCALE * e(1)), (e(0), A_SCALE * (e(1) + 0.05 * e(4))), (e(7), 2 * B_SCALE * e(6)),
                     (e(7), A_SCALE * e(1))], extra_unembed=(6,))
