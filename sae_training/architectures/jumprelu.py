"""JumpReLU SAE: ``f = pre · 1[pre > θ_j]`` trained with straight-through estimators and an L0 penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.store.errors import InputError
from sae_training.architectures.base import EnsembleSAE, option, warmed


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


@dataclass(frozen=True)
class JumpReLUOptions:
    """The L0 coefficient (and warm-up) and the threshold's initial value and kernel bandwidth."""

    l0_coefficient: float = option(1.0, "L0 sparsity coefficient (straight-through step function).")
    l0_warmup_steps: int = option(0, "Steps over which the L0 coefficient ramps up from 0.")
    init_threshold: float = option(0.01, "Initial threshold of every latent.")
    bandwidth: float = option(0.05, "Width of the rectangle kernel of the straight-through estimators.")

    def __post_init__(self) -> None:
        if not (self.l0_coefficient >= 0 and self.l0_warmup_steps >= 0 and self.init_threshold >= 0
                and self.bandwidth > 0):
            raise InputError("l0_coefficient, l0_warmup_steps and init_threshold must be >= 0 and bandwidth > 0, "
                             f"got {self}")


class JumpReLUSAE(EnsembleSAE):
    """Per-latent threshold θ (a parameter, kept ≥ 0 as in SAELens 6);
    sparsity ``λ · mean_batch Σ_j H(pre_j − θ_j)``."""

    architecture = "jumprelu"
    saelens_architecture = "jumprelu"
    Options = JumpReLUOptions

    def init_parameters(self, generator: torch.Generator) -> None:
        super().init_parameters(generator)
        self.threshold = nn.Parameter(
            torch.full((self.shape.n_members, self.shape.d_sae), float(self.options.init_threshold))
        )

    def sparsity_at(self, step: int) -> float:
        return warmed(self.options.l0_coefficient, self.options.l0_warmup_steps, step)

    def activate(self, pre: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_sae"]:
        return JumpReLUFunction.apply(pre, self.threshold.unsqueeze(1), self.options.bandwidth)

    def sparsity_loss(self, f: Tensor, pre: Tensor, coefficient: float) -> Float[Tensor, " K"]:
        fired = StepFunction.apply(pre, self.threshold.unsqueeze(1), self.options.bandwidth)
        return coefficient * fired.sum(-1).mean(-1)

    @torch.no_grad()
    def after_step(self) -> None:
        super().after_step()
        self.threshold.clamp_(min=0.0)

    def member_state(self, i: int, scale: float = 1.0) -> dict[str, Tensor]:
        state = super().member_state(i, scale)
        state["threshold"] = self.threshold[i].detach().clone()
        return state
