"""ReLU SAE with an L1 penalty weighted by decoder row norms (SAELens "standard").

Training runs through ``fused_dense.ReLUStep`` (forward and backward written out: no input-gradient matmul
for ``b_dec``, no dense gradient of the L1 term) while the codes are dense, and through
``sparse_relu`` (one dense matmul, the rest on the active entries) when the batch's code density is below
``sparse_relu.SPARSE_BELOW``; ``encode``/``decode`` stay the plain dense ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from interp.store.errors import InputError
from sae_training.architectures import sparse_relu
from sae_training.architectures.base import EnsembleSAE, LossParts, option, reconstruction_mse, warmed
from sae_training.architectures.fused_dense import ReLUStep
from sae_training.architectures.fused_topk import dense_pre_acts, sparse_decode


@dataclass(frozen=True)
class L1Options:
    """An L1 sparsity coefficient and its linear warm-up (ReLU, Gated)."""

    l1_coefficient: float = option(1.0, "L1 sparsity coefficient (weighted by decoder row norms).")
    l1_warmup_steps: int = option(0, "Steps over which the L1 coefficient ramps up from 0.")

    def __post_init__(self) -> None:
        if not (self.l1_coefficient >= 0 and self.l1_warmup_steps >= 0):
            raise InputError(f"l1_coefficient and l1_warmup_steps must be >= 0, got {self.l1_coefficient}, "
                             f"{self.l1_warmup_steps}")


class ReLUSAE(EnsembleSAE):
    """``f = ReLU(pre)``; sparsity ``λ · mean_batch Σ_j f_j ‖W_dec,j‖`` so inflating the decoder cannot cheat."""

    architecture = "relu"
    saelens_architecture = "standard"
    Options = L1Options

    def sparsity_at(self, step: int) -> float:
        return warmed(self.options.l1_coefficient, self.options.l1_warmup_steps, step)

    def activate(self, pre: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_sae"]:
        return pre.relu()

    def sparsity_loss(self, f: Tensor, pre: Tensor, coefficient: float) -> Float[Tensor, " K"]:
        norms = self.W_dec.norm(dim=-1)  # [K, d_sae]; batch mean first, so no [K, batch, d_sae] product
        return coefficient * (f.mean(1) * norms).sum(-1)

    def loss(self, x: Float[Tensor, "batch d_in"], sparsity_coefficient: float = 0.0,
             dead: Tensor | None = None, mse_reduction: str = "sum") -> LossParts:
        """As ``EnsembleSAE.loss`` with ``sparsity_loss``, through the sparse step when this batch's codes are
        sparse (``sparse_relu.SPARSE_BELOW``), else ``ReLUStep``; both start from the same dense pre-activations,
        so the choice depends only on the weights and the batch (a resumed run takes the same path). The batch
        sums of ``f`` also give the fired latents (a sum of non-negative floats is > 0 exactly when one is)."""
        x = x.detach()
        pre = dense_pre_acts(x, self.b_dec, self.W_enc, self.b_enc)
        active = pre > 0
        counts = active.flatten(1).sum(1)
        codes = dense_f = None
        if int(counts.sum()) < sparse_relu.SPARSE_BELOW * pre.numel():
            codes = sparse_relu.sparse_relu_codes(pre, active, counts, x, self.b_dec, self.W_enc, self.b_enc)
            x_hat = sparse_decode(codes, self.W_dec, self.b_dec)[0]
            f_sum = sparse_relu.code_sums(codes)
        else:
            del active
            dense_f, x_hat, f_sum = ReLUStep.apply(x, self.b_dec, self.W_enc, self.b_enc, self.W_dec, pre)
        mse = reconstruction_mse(x_hat, x, mse_reduction)
        sparsity = sparsity_coefficient * (f_sum / x.shape[0] * self.W_dec.norm(dim=-1)).sum(-1)
        return LossParts(mse, sparsity, mse.new_zeros(self.n_members), x_hat, dense_f=dense_f, codes=codes,
                         fired_mask=f_sum.detach() > 0)
