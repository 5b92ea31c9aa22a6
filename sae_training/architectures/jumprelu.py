"""JumpReLU SAE: ``f = pre · 1[pre > θ_j]`` trained with straight-through estimators and an L0 penalty."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sae_training.architectures.base import EnsembleSAE, SAEShape


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """Forward ``pre · 1[pre > θ]``; ``∂/∂pre = 1[pre > θ]``, ``∂/∂θ = −(θ/ε) K((pre−θ)/ε)`` (rectangle K)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        threshold_grad = (-(threshold / eps) * _rectangle((pre - threshold) / eps) * grad).sum(1, keepdim=True)
        return (pre > threshold) * grad, threshold_grad, None


class StepFunction(torch.autograd.Function):
    """Heaviside ``1[pre > θ]`` with pseudo-gradient ``∂/∂θ = −(1/ε) K((pre−θ)/ε)`` (none to ``pre``)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        threshold_grad = (-(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad).sum(1, keepdim=True)
        return None, threshold_grad, None


class JumpReLUSAE(EnsembleSAE):
    """Per-latent threshold θ (a parameter, kept ≥ 0 as in SAELens 6); sparsity ``λ · mean_batch Σ_j H(pre_j − θ_j)``."""

    architecture = "jumprelu"
    saelens_architecture = "jumprelu"

    def __init__(self, shape: SAEShape, seed: int = 0):
        super().__init__(shape, seed)
        self.threshold = nn.Parameter(torch.full((shape.n_members, shape.d_sae), shape.jumprelu_init_threshold))

    def activate(self, pre: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_sae"]:
        return JumpReLUFunction.apply(pre, self.threshold.unsqueeze(1), self.shape.jumprelu_bandwidth)

    def sparsity_loss(self, f: Tensor, pre: Tensor, coefficient: float) -> Float[Tensor, " K"]:
        fired = StepFunction.apply(pre, self.threshold.unsqueeze(1), self.shape.jumprelu_bandwidth)
        return coefficient * fired.sum(-1).mean(-1)

    @torch.no_grad()
    def after_step(self) -> None:
        super().after_step()
        self.threshold.clamp_(min=0.0)

    def member_state(self, i: int, scale: float = 1.0) -> dict[str, Tensor]:
        state = super().member_state(i, scale)
        state["threshold"] = self.threshold[i].detach().clone()
        return state
