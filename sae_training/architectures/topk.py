"""TopK SAE (keep the k largest pre-activations per token, then ReLU) with the AuxK dead-latent loss.

Training uses the sparse path of ``fused_topk`` (no dense ``[K, batch, d_sae]`` codes, no dense matmul but the
encoder's forward); ``encode``/``decode``/``forward`` stay dense for analyses and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.store.errors import InputError
from sae_training.architectures.base import EnsembleSAE, KOptions, LossParts, option, reconstruction_mse, scatter_topk
from sae_training.architectures.fused_topk import SparseCodes, encode_at, sparse_decode, token_major, topk_codes


@dataclass(frozen=True)
class TopKOptions(KOptions):
    """TopK / BatchTopK: k, its schedule along the ensemble, and the AuxK dead-latent loss."""

    aux_k_coefficient: float = option(1.0, "AuxK dead-latent loss coefficient (0 turns it off).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.aux_k_coefficient >= 0:
            raise InputError(f"aux_k_coefficient must be >= 0, got {self.aux_k_coefficient}")


def aux_active(sae: EnsembleSAE, dead: Tensor | None) -> bool:
    """AuxK applies only with a positive coefficient and at least one dead latent."""
    return dead is not None and sae.options.aux_k_coefficient != 0 and bool(dead.any())


def aux_budget(sae: EnsembleSAE, dead: Tensor) -> tuple[int, Tensor, Tensor]:
    """``d_in // 2``, the dead count per member and ``k_aux = min(d_in // 2, n_dead)``."""
    half = sae.d_in // 2
    n_dead = dead.sum(-1)
    return half, n_dead, n_dead.clamp(max=half)


def topk_aux_loss(sae: EnsembleSAE, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Float[Tensor, " K"]:
    """SAELens AuxK: the top ``min(d_in/2, n_dead)`` dead latents reconstruct the detached residual.

    ``aux = c · min(n_dead / (d_in/2), 1) · mean_batch ‖decode(aux_acts) − (x − x_hat)‖²``, 0 with no dead latent.
    """
    if not aux_active(sae, dead):
        return x.new_zeros(sae.n_members)
    half, n_dead, k_aux = aux_budget(sae, dead)
    masked = pre.masked_fill(~dead.unsqueeze(1), float("-inf"))
    aux_acts = scatter_topk(masked, k_aux, relu=False)
    residual = (x.unsqueeze(0) - x_hat).detach()
    error = (sae.decode(aux_acts) - residual).pow(2).sum(-1).mean(-1)
    scale = (n_dead.to(x.dtype) / half).clamp(max=1.0)
    return sae.options.aux_k_coefficient * scale * error


def sparse_topk_aux_loss(sae: EnsembleSAE, x: Tensor, x_hat: Tensor, pre: Tensor,
                         dead: Tensor | None) -> Float[Tensor, " K"]:
    """``topk_aux_loss`` from detached ``pre``: pick the dead latents' top-k on it, read only those
    pre-activations with gradient (``EncodeAt``) and decode them sparsely (same value and gradients as the dense
    one, and no ``[K, batch, k_aux, d_in]`` gather)."""
    if not aux_active(sae, dead):
        return x.new_zeros(sae.n_members)
    half, n_dead, k_aux = aux_budget(sae, dead)
    k_max = min(half, sae.d_sae)
    masked = pre.masked_fill(~dead.unsqueeze(1), float("-inf"))
    top, indices = masked.topk(k_max, dim=-1, sorted=True)
    del masked
    keep = torch.isfinite(top) & (torch.arange(k_max, device=x.device) < k_aux.view(-1, 1, 1))
    tokens, latents = token_major(indices)
    values = encode_at(pre, x, sae.b_dec, sae.W_enc, sae.b_enc, tokens, latents) * keep.flatten(1)
    codes = SparseCodes(values, tokens, latents, x.shape[0], sae.d_sae)
    residual = (x.unsqueeze(0) - x_hat).detach()
    error = (sparse_decode(codes, sae.W_dec, sae.b_dec)[0] - residual).pow(2).sum(-1).mean(-1)
    scale = (n_dead.to(x.dtype) / half).clamp(max=1.0)
    return sae.options.aux_k_coefficient * scale * error


class TopKSAE(EnsembleSAE):
    """Member i keeps its ``k_i`` largest pre-activations per token (negatives become 0); unit decoder rows."""

    architecture = "topk"
    saelens_architecture = "topk"
    Options = TopKOptions
    unit_norm_decoder = True

    def activate(self, pre: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_sae"]:
        return scatter_topk(pre, self.k_per_member)

    def loss(self, x: Float[Tensor, "batch d_in"], sparsity_coefficient: float = 0.0,
             dead: Tensor | None = None, mse_reduction: str = "sum") -> LossParts:
        """As ``EnsembleSAE.loss`` (dense), computed from the top-k codes only."""
        x = x.detach()
        codes, pre = topk_codes(x, self.b_dec, self.W_enc, self.b_enc, self.member_k)
        x_hat = sparse_decode(codes, self.W_dec, self.b_dec)[0]
        mse = reconstruction_mse(x_hat, x, mse_reduction)
        aux = sparse_topk_aux_loss(self, x, x_hat, pre, dead)
        return LossParts(mse, mse.new_zeros(self.n_members), aux, x_hat, codes=codes)

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Float[Tensor, " K"]:
        """AuxK from dense codes (the transcoder's loss, which has no sparse path of its own)."""
        return topk_aux_loss(self, x, x_hat, pre, dead)

    def saelens_extra_cfg(self, i: int) -> dict:
        return {"k": int(self.k_per_member[i]), "rescale_acts_by_decoder_norm": False}
