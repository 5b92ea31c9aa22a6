"""BatchTopK SAE: keep the ``k · batch`` largest activations of the whole batch; infer with a learnt threshold."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from sae_training.architectures.base import EnsembleSAE, LossParts, reconstruction_mse, scatter_topk
from sae_training.architectures.fused_topk import (
    SparseCodes,
    batch_topk_entries,
    dense_pre_acts,
    encode_at,
    sparse_decode,
)
from sae_training.architectures.topk import TopKOptions, sparse_topk_aux_loss, topk_aux_loss

THRESHOLD_LR = 0.01  # SAELens topk_threshold_lr


class BatchTopKSAE(EnsembleSAE):
    """Training: batch-level TopK on ReLU(pre), tracking ``θ ← 0.99 θ + 0.01 · min kept``.
    Eval (``.eval()``): JumpReLU with that θ, which is how it is saved for SAELens.
    ``loss`` in training takes the sparse path of ``fused_topk`` (same values and gradients as ``activate``)."""

    architecture = "batchtopk"
    saelens_architecture = "jumprelu"
    Options = TopKOptions
    unit_norm_decoder = True

    def init_parameters(self, generator: torch.Generator) -> None:
        super().init_parameters(generator)
        self.register_buffer("threshold", torch.zeros(self.shape.n_members))

    def activate(self, pre: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_sae"]:
        if not self.training:
            return pre * (pre > self.threshold.view(-1, 1, 1))
        K, batch, d_sae = pre.shape
        flat = pre.relu().reshape(K, 1, batch * d_sae)
        f = scatter_topk(flat, self.k_per_member * batch).reshape(K, batch, d_sae)
        self.update_threshold(f.flatten(1))
        return f

    @torch.no_grad()
    def update_threshold(self, kept: Float[Tensor, "K n"]) -> None:
        """``θ ← 0.99 θ + 0.01 · (smallest positive kept activation)`` per member (unchanged if none)."""
        smallest = torch.where(kept > 0, kept, torch.full_like(kept, float("inf"))).amin(dim=1)
        found = torch.isfinite(smallest)
        updated = (1 - THRESHOLD_LR) * self.threshold + THRESHOLD_LR * smallest.to(self.threshold.dtype)
        self.threshold.copy_(torch.where(found, updated, self.threshold))

    def decode_widths(self) -> tuple[int, ...]:
        """The prefix widths the loss decodes (the last is d_sae); Matryoshka adds its inner levels."""
        return (self.d_sae,)

    def batch_codes(self, x: Float[Tensor, "batch d_in"]) -> tuple[SparseCodes, Tensor]:
        """The ``k_i · batch`` largest ReLU pre-activations of member i's batch (zeros past them when k is
        ragged), token-major, and the detached dense pre-activations (for AuxK)."""
        pre = dense_pre_acts(x, self.b_dec, self.W_enc, self.b_enc)
        K, batch, d_sae = pre.shape
        keep = [k * batch for k in self.member_k]
        chosen = [batch_topk_entries(pre[m].reshape(-1), keep[m]) for m in range(K)]
        flat = torch.stack([torch.cat([c, c.new_full((max(keep) - len(c),), batch * d_sae - 1)]) for c in chosen])
        tokens, latents = flat // d_sae, flat % d_sae
        values = encode_at(pre, x, self.b_dec, self.W_enc, self.b_enc, tokens, latents).relu()
        if min(keep) != max(keep):  # padding entries (past member i's k_i · batch) are zeros
            values = values * (torch.arange(max(keep), device=x.device) < torch.tensor(keep, device=x.device)
                               .view(-1, 1))
        return SparseCodes(values, tokens, latents, batch, d_sae), pre

    def loss(self, x: Float[Tensor, "batch d_in"], sparsity_coefficient: float = 0.0,
             dead: Tensor | None = None, mse_reduction: str = "sum") -> LossParts:
        """As ``EnsembleSAE.loss`` with ``activate`` and ``topk_aux_loss`` (plus the inner levels' MSEs when
        ``decode_widths`` has more than one), from the sparse codes."""
        if not self.training:
            return super().loss(x, sparsity_coefficient, dead, mse_reduction)
        x = x.detach()
        codes, pre = self.batch_codes(x)
        self.update_threshold(codes.values.detach())
        levels = sparse_decode(codes, self.W_dec, self.b_dec, self.decode_widths())
        x_hat = levels[-1]
        mse = reconstruction_mse(x_hat, x, mse_reduction)
        parts = LossParts(mse, mse.new_zeros(self.n_members), sparse_topk_aux_loss(self, x, x_hat, pre, dead),
                          x_hat, codes=codes)
        if len(levels) > 1:
            parts.extra = sum(reconstruction_mse(level, x, mse_reduction) for level in levels[:-1])
        return parts

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Float[Tensor, " K"]:
        return topk_aux_loss(self, x, x_hat, pre, dead)

    def member_state(self, i: int, scale: float = 1.0) -> dict[str, Tensor]:
        state = super().member_state(i, scale)
        state["threshold"] = torch.full((self.d_sae,), float(self.threshold[i]))
        return state
