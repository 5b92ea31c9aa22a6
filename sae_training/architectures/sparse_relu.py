"""The ReLU-family training step on sparse codes, for when the codes are sparse (a trained ReLU-L1 SAE fires a
few dozen of its tens of thousands of latents per token).

Only the encoder's forward stays a dense matmul (every pre-activation is needed to know which are positive);
the decode, the value gradients and both weight gradients run on the active entries through ``fused_topk``'s
``EncodeAt`` and ``SparseDecode`` (CSR products, ``sampled_addmm``, ``embedding_bag``), as the TopK path does.
The dense fused step (``fused_dense.ReLUStep``) costs five ``[batch, d_in] x [d_in, d_sae]`` matmuls whatever the
codes; this one costs one plus work proportional to the active entries. Which one runs is chosen per batch from the
code density of the shared dense pre-activations (``SPARSE_BELOW``): at initialisation about half the codes are
positive and the dense step is faster.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sae_training.architectures.fused_topk import SparseCodes, encode_at

# Code density (active entries / (batch x d_sae)) below which the sparse step is used. Measured at d_in 768,
# d_sae 24,576, batch 4,096, 1 CPU thread (benchmarks/bench_train.py --sparse-crossover): see README.
SPARSE_BELOW = 0.015


def _inactive_positions(active: Bool[Tensor, " n"], count: int) -> Int[Tensor, " count"]:
    """``count`` distinct flat positions where ``active`` is False, searching a growing prefix (most are
    inactive when this is called, so a short prefix usually suffices)."""
    length = min(active.numel(), 2 * count + 1024)
    while True:
        found = (~active[:length]).nonzero().squeeze(1)
        if found.numel() >= count or length == active.numel():
            return found[:count]
        length = min(active.numel(), 2 * length)


def positive_entries(active: Bool[Tensor, "K batch d_sae"], counts: Int[Tensor, " K"]
                     ) -> tuple[Int[Tensor, "K n"], Int[Tensor, "K n"]]:
    """``(tokens, latents)`` of every active entry per member (``counts`` of them), token-major, padded to the
    largest member's count with distinct inactive positions (there the ReLU value and gradient are 0)."""
    K, _, d_sae = active.shape
    flat_active = active.view(K, -1)
    n = int(counts.max())
    keys = []
    for m in range(K):
        real = flat_active[m].nonzero().squeeze(1)
        if real.numel() < n:
            real = torch.cat([real, _inactive_positions(flat_active[m], n - real.numel())]).sort().values
        keys.append(real)
    flat = torch.stack(keys)
    return flat // d_sae, flat % d_sae


def sparse_relu_codes(pre: Float[Tensor, "K batch d_sae"], active: Bool[Tensor, "K batch d_sae"],
                      counts: Int[Tensor, " K"], x: Float[Tensor, "batch d_in"], b_dec: Tensor, W_enc: Tensor,
                      b_enc: Tensor) -> SparseCodes:
    """ReLU codes as ``SparseCodes`` whose values carry gradients to ``b_dec``, ``W_enc`` and ``b_enc``, from the
    detached dense pre-activations ``pre``, their positive mask ``active`` and its count per member."""
    tokens, latents = positive_entries(active, counts)
    values = encode_at(pre, x, b_dec, W_enc, b_enc, tokens, latents).relu()
    return SparseCodes(values, tokens, latents, x.shape[0], pre.shape[-1])


def code_sums(codes: SparseCodes) -> Float[Tensor, "K d_sae"]:
    """``Σ_batch f`` per latent (differentiable through the values): the L1 term's batch sum."""
    out = codes.values.new_zeros(codes.values.shape[0], codes.d_sae)
    return out.scatter_add(1, codes.latents, codes.values)
