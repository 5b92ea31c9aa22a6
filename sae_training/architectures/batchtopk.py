"""BatchTopK SAE: keep the ``k · batch`` largest activations of the whole batch; infer with a learnt threshold."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from sae_training.architectures.base import EnsembleSAE, scatter_topk
from sae_training.architectures.topk import TopKOptions, topk_aux_loss

THRESHOLD_LR = 0.01  # SAELens topk_threshold_lr


class BatchTopKSAE(EnsembleSAE):
    """Training: batch-level TopK on ReLU(pre), tracking ``θ ← 0.99 θ + 0.01 · min kept``.
    Eval (``.eval()``): JumpReLU with that θ, which is how it is saved for SAELens."""

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
        with torch.no_grad():
            smallest = torch.where(f > 0, f, torch.full_like(f, float("inf"))).amin(dim=(1, 2))
            found = torch.isfinite(smallest)
            updated = (1 - THRESHOLD_LR) * self.threshold + THRESHOLD_LR * smallest.to(self.threshold.dtype)
            self.threshold.copy_(torch.where(found, updated, self.threshold))
        return f

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Float[Tensor, " K"]:
        return topk_aux_loss(self, x, x_hat, pre, dead)

    def member_state(self, i: int, scale: float = 1.0) -> dict[str, Tensor]:
        state = super().member_state(i, scale)
        state["threshold"] = torch.full((self.d_sae,), float(self.threshold[i]))
        return state
