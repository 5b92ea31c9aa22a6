"""ReLU SAE with an L1 penalty weighted by decoder row norms (SAELens "standard")."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from sae_training.architectures.base import EnsembleSAE


class ReLUSAE(EnsembleSAE):
    """``f = ReLU(pre)``; sparsity ``λ · mean_batch Σ_j f_j ‖W_dec,j‖`` so inflating the decoder cannot cheat."""

    architecture = "relu"
    saelens_architecture = "standard"

    def activate(self, pre: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_sae"]:
        return pre.relu()

    def sparsity_loss(self, f: Tensor, pre: Tensor, coefficient: float) -> Float[Tensor, " K"]:
        norms = self.W_dec.norm(dim=-1)  # [K, d_sae]; batch mean first, so no [K, batch, d_sae] product
        return coefficient * (f.mean(1) * norms).sum(-1)
