"""TopK SAE (keep the k largest pre-activations per token, then ReLU) with the AuxK dead-latent loss."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from sae_training.architectures.base import EnsembleSAE, scatter_topk


def topk_aux_loss(sae: EnsembleSAE, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Float[Tensor, " K"]:
    """SAELens AuxK: the top ``min(d_in/2, n_dead)`` dead latents reconstruct the detached residual.

    ``aux = c · min(n_dead / (d_in/2), 1) · mean_batch ‖decode(aux_acts) − (x − x_hat)‖²``, 0 with no dead latent.
    """
    zeros = x.new_zeros(sae.n_members)
    if dead is None or sae.shape.aux_k_coefficient == 0 or not bool(dead.any()):
        return zeros
    half = sae.d_in // 2
    n_dead = dead.sum(-1)
    k_aux = n_dead.clamp(max=half)
    masked = pre.masked_fill(~dead.unsqueeze(1), float("-inf"))
    aux_acts = scatter_topk(masked, k_aux, relu=False)
    residual = (x.unsqueeze(0) - x_hat).detach()
    error = (sae.decode(aux_acts) - residual).pow(2).sum(-1).mean(-1)
    scale = (n_dead.to(x.dtype) / half).clamp(max=1.0)
    return sae.shape.aux_k_coefficient * scale * error


class TopKSAE(EnsembleSAE):
    """Member i keeps its ``k_i`` largest pre-activations per token (negatives become 0); unit decoder rows."""

    architecture = "topk"
    saelens_architecture = "topk"
    unit_norm_decoder = True
    uses_k = True

    def activate(self, pre: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_sae"]:
        return scatter_topk(pre, self.k_per_member)

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Float[Tensor, " K"]:
        return topk_aux_loss(self, x, x_hat, pre, dead)

    def saelens_extra_cfg(self, i: int) -> dict:
        return {"k": int(self.k_per_member[i]), "rescale_acts_by_decoder_norm": False}

