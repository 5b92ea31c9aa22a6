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


def planted_path_model():
    """No normalisation, ReLU MLPs equal to their transcoders (error nodes are 0), two heads with constant
    scores (uniform causal attention). Feature A (layer 0, id 0) reads e0 (token ``A_TOKEN``'s embedding) and
    writes ``A_SCALE`` e1; layer 1's head copies e1 -> e2; feature B (layer 1, id 1) reads e1 + e2 and writes
    ``B_SCALE`` e3 = the unembedding of ``TARGET``."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=D, n_ctx=8, d_head=4, n_heads=1, d_mlp=4, d_vocab=VOCAB,
                                  act_fn="relu", normalization_type=None, seed=0)
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:] = e(7)  # every token but A_TOKEN writes a direction nothing reads
        model.embed.W_E[A_TOKEN] = e(0)
        model.blocks[1].attn.W_V[0, 1, 0] = 1.0  # e1 -> head dim 0
        model.blocks[1].attn.W_O[0, 0, 2] = 1.0  # head dim 0 -> e2
        model.unembed.W_U[3, TARGET] = 1.0
        transcoders = [Transcoder(torch.zeros(D, 4), torch.zeros(4), torch.zeros(4, D), torch.zeros(D), "relu",
                                  hook_in=f"blocks.{layer}.hook_resid_mid", hook_out=f"blocks.{layer}.hook_mlp_out")
                       for layer in range(2)]
        transcoders[0].W_enc[:, 0] = e(0)
        transcoders[0].W_dec[0] = A_SCALE * e(1)
        transcoders[1].W_enc[:, 1] = e(1) + e(2)
        transcoders[1].W_dec[1] = B_SCALE * e(3)
        for layer, tc in enumerate(transcoders):  # the real MLPs are the transcoders: nothing is left to error
            mlp = model.blocks[layer].mlp
            mlp.W_in.copy_(tc.W_enc)
            mlp.b_in.copy_(tc.b_enc)
            mlp.W_out.copy_(tc.W_dec)
            mlp.b_out.copy_(tc.b_dec)
    return model.eval(), transcoders


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
    cfg = HookedTransformerConfig(n_layers=2, d_model=D, n_ctx=8, d_head=4, n_heads=1, d_mlp=4, d_vocab=VOCAB,
                                  act_fn="relu", normalization_type=None, seed=0)
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:] = e(7)
        model.embed.W_E[A_TOKEN] = e(0)
        model.blocks[1].attn.W_V[0, 1, 0] = 1.0
        model.blocks[1].attn.W_O[0, 0, 2] = 1.0
        model.unembed.W_U[3, TARGET] = 1.0
        model.unembed.W_U[6, TARGET] = 1.0
        transcoders = [Transcoder(torch.zeros(D, 4), torch.zeros(4), torch.zeros(4, D), torch.zeros(D), "relu",
                                  hook_in=f"blocks.{layer}.hook_resid_mid", hook_out=f"blocks.{layer}.hook_mlp_out")
                       for layer in range(2)]
        first = transcoders[0]
        first.W_enc[:, 0], first.W_dec[0] = e(0), A_SCALE * e(1)  # A1
        first.W_enc[:, 1], first.W_dec[1] = e(0), A_SCALE * (e(1) + 0.05 * e(4))  # A2
        first.W_enc[:, 2], first.W_dec[2] = e(7), 2 * B_SCALE * e(6)  # C
        first.W_enc[:, 3], first.W_dec[3] = e(7), A_SCALE * e(1)  # D
        transcoders[1].W_enc[:, 1] = e(1) + e(2)
        transcoders[1].W_dec[1] = B_SCALE * e(3)
        for layer, tc in enumerate(transcoders):
            mlp = model.blocks[layer].mlp
            mlp.W_in.copy_(tc.W_enc)
            mlp.b_in.copy_(tc.b_enc)
            mlp.W_out.copy_(tc.W_dec)
            mlp.b_out.copy_(tc.b_dec)
    return model.eval(), transcoders
