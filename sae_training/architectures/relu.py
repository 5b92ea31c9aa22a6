"""ReLU SAE with an L1 penalty weighted by decoder row norms (SAELens "standard").

Training encodes through ``ReLUEncode``: its backward gets ``b_dec``'s encoder gradient as
``-W_enc @ Σ grad`` instead of autograd's full ``[batch, d_sae] @ [d_sae, d_in]`` input-gradient matmul.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from dataclasses import dataclass

from interp.errors import InputError
from sae_training.architectures.base import EnsembleSAE, LossParts, option, reconstruction_mse, warmed


class ReLUEncode(torch.autograd.Function):
    """``ReLU((x - b_dec) @ W_enc + b_enc)`` per member; ``x`` is data (no gradient)."""

    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor):
        x_in = x.unsqueeze(0) - b_dec.unsqueeze(1)
        f = torch.baddbmm(b_enc.unsqueeze(1), x_in, W_enc).relu_()
        ctx.save_for_backward(x_in, W_enc, f)
        return f

    @staticmethod
    def backward(ctx, grad_f: Tensor):
        x_in, W_enc, f = ctx.saved_tensors
        grad_pre = grad_f * (f > 0)
        grad_b_enc = grad_pre.sum(1)
        grad_W_enc = torch.bmm(x_in.transpose(1, 2), grad_pre)
        return None, -torch.bmm(W_enc, grad_b_enc.unsqueeze(-1)).squeeze(-1), grad_W_enc, grad_b_enc


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
        """As ``EnsembleSAE.loss``, with the encoder through ``ReLUEncode``."""
        x = x.detach()
        f = ReLUEncode.apply(x, self.b_dec, self.W_enc, self.b_enc)
        x_hat = self.decode(f)
        mse = reconstruction_mse(x_hat, x, mse_reduction)
        return LossParts(mse, self.sparsity_loss(f, f, sparsity_coefficient), mse.new_zeros(self.n_members), x_hat,
                         dense_f=f)
