"""The TopK training hot spot as two autograd functions (after EleutherAI/sparsify's ``fused_encoder``).

``TopKEncode``: encode, keep the top-k and return ``(values, indices)``; its backward builds the
gradient of the pre-activations from the k selected entries and skips the gradient of the input (a
full ``[batch, d_sae] @ [d_sae, d_in]`` matmul that autograd would do for ``b_dec``), which is
``-W_enc @ Σ grad`` instead. ``SparseDecode``: ``x_hat`` as a sum of k gathered ``W_dec`` rows per token
(``embedding_bag``) instead of a dense ``[batch, d_sae] @ [d_sae, d_in]`` matmul.

Both backwards use dense batched matmuls for the weight gradients: on CPU at k/d_sae ≈ 1/64 these beat
scattering k rows per token (``index_add_``), which is memory bound (measured, see README).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


def _flat_rows(indices: Int[Tensor, "K batch k"], d_sae: int) -> Int[Tensor, "K*batch k"]:
    """Indices into the members' rows stacked as one ``[K·d_sae, ...]`` table."""
    offset = torch.arange(indices.shape[0], device=indices.device).view(-1, 1, 1) * d_sae
    return (indices + offset).flatten(0, 1)


class TopKEncode(torch.autograd.Function):
    """``values, indices = topk(ReLU((x - b_dec) @ W_enc + b_enc), k_i)`` per member; also returns the
    detached pre-activations (for AuxK). ``x`` is data: it gets no gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k_per_member: Tensor, k_max: int,
                ragged: bool):
        x_in = x.unsqueeze(0) - b_dec.unsqueeze(1)  # [K, batch, d_in]
        pre = torch.baddbmm(b_enc.unsqueeze(1), x_in, W_enc)  # [K, batch, d_sae]
        values, indices = pre.topk(k_max, dim=-1, sorted=ragged)
        if ragged:  # member i keeps its first k_i (sorted) entries
            rank = torch.arange(k_max, device=pre.device)
            values = values.masked_fill(rank >= k_per_member.view(-1, 1, 1), 0.0)
        values = values.relu()
        ctx.save_for_backward(x_in, W_enc, values, indices)
        ctx.mark_non_differentiable(indices, pre)
        return values, indices, pre

    @staticmethod
    def backward(ctx, grad_values: Tensor, _grad_indices, _grad_pre):
        x_in, W_enc, values, indices = ctx.saved_tensors
        grad = grad_values * (values > 0)  # ReLU, and the ragged entries masked to 0
        grad_pre = dense_codes(grad, indices, W_enc.shape[-1])  # [K, batch, d_sae], k nonzeros per row
        grad_b_enc = grad_pre.sum(1)
        grad_W_enc = torch.bmm(x_in.transpose(1, 2), grad_pre)
        grad_b_dec = -torch.bmm(W_enc, grad_b_enc.unsqueeze(-1)).squeeze(-1)  # x_in = x - b_dec
        return None, grad_b_dec, grad_W_enc, grad_b_enc, None, None, None


def topk_encode(x: Float[Tensor, "batch d_in"], b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k_per_member: Tensor,
                member_k: list[int]) -> tuple[Float[Tensor, "K batch k"], Int[Tensor, "K batch k"], Tensor]:
    """Top-k codes ``(values, indices, detached pre-activations)``; member i has zeros past its k_i.
    ``member_k`` is ``k_per_member`` as Python ints (no device sync)."""
    if x.requires_grad:
        raise ValueError("topk_encode treats x as data; pass x.detach() (use the dense `encode` for input grads)")
    return TopKEncode.apply(x, b_dec, W_enc, b_enc, k_per_member, max(member_k), min(member_k) != max(member_k))


class SparseDecode(torch.autograd.Function):
    """``b_dec + Σ_j values_j · W_dec[indices_j]`` per member: the dense decode restricted to the k codes."""

    @staticmethod
    def forward(ctx, values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor):
        K, d_sae, d_in = W_dec.shape
        summed = F.embedding_bag(_flat_rows(indices, d_sae), W_dec.reshape(K * d_sae, d_in),
                                 per_sample_weights=values.flatten(0, 1), mode="sum")
        ctx.save_for_backward(values, indices, W_dec)
        return summed.view(K, -1, d_in) + b_dec.unsqueeze(1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        values, indices, W_dec = ctx.saved_tensors
        grad_values = grad_W_dec = None
        if ctx.needs_input_grad[0]:
            grad_values = torch.bmm(grad_out, W_dec.transpose(1, 2)).gather(-1, indices)
        if ctx.needs_input_grad[2]:
            grad_W_dec = torch.bmm(dense_codes(values, indices, W_dec.shape[1]).transpose(1, 2), grad_out)
        return grad_values, None, grad_W_dec, grad_out.sum(1)


def sparse_decode(values: Float[Tensor, "K batch k"], indices: Int[Tensor, "K batch k"],
                  W_dec: Float[Tensor, "K d_sae d_in"], b_dec: Float[Tensor, "K d_in"]) -> Float[Tensor, "K batch d_in"]:
    """``decode`` of the codes ``scatter(values at indices)`` without building them."""
    return SparseDecode.apply(values.to(W_dec.dtype), indices, W_dec, b_dec)


def gather_pre_acts(x: Float[Tensor, "batch d_in"], b_dec: Tensor, W_enc: Tensor, b_enc: Tensor,
                    indices: Int[Tensor, "K batch k"]) -> Float[Tensor, "K batch k"]:
    """Pre-activations at the given latents only, differentiable: ``(x - b_dec) · W_enc[:, j] + b_enc[j]``."""
    K, d_in, d_sae = W_enc.shape
    x_in = x.unsqueeze(0) - b_dec.unsqueeze(1)
    rows = _flat_rows(indices, d_sae)
    columns = W_enc.transpose(1, 2).reshape(K * d_sae, d_in)[rows.flatten()].view(*indices.shape, d_in)
    return torch.einsum("kbd,kbjd->kbj", x_in, columns) + b_enc.reshape(-1)[rows].view(indices.shape)


def dense_codes(values: Tensor, indices: Tensor, d_sae: int) -> Float[Tensor, "K batch d_sae"]:
    return values.new_zeros(*values.shape[:-1], d_sae).scatter_(-1, indices, values)


def fired_latents(values: Tensor, indices: Tensor, d_sae: int) -> Float[Tensor, "K d_sae"]:
    """Which latents fired on any token of the batch, ``[K, d_sae]`` bool, without dense codes."""
    flat = _flat_rows(indices, d_sae).flatten()
    counts = values.new_zeros(values.shape[0] * d_sae).index_add_(0, flat, (values != 0).to(values.dtype).flatten())
    return counts.view(-1, d_sae) > 0
