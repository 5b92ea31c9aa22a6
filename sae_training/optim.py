"""Optimisers of the trainer: fused ``torch.optim.Adam`` over the stacked ensemble, or ``MemberAdam``
(one Adam per member, as the MFR code's per-SAE optimisers) when an architecture re-initialises members."""

from __future__ import annotations

import torch
from torch import Tensor


class MemberAdam(torch.optim.Optimizer):
    """Adam on stacked ``[K, ...]`` parameters with one step count per member, so ``reset_members`` gives a
    member a fresh optimiser (zero moments, step 0) without touching the others. The update is
    ``torch.optim.Adam``'s (no weight decay): K independent Adams, one per member."""

    def __init__(self, params, n_members: int, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.n_members = n_members

    def _state(self, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(self.n_members, dtype=torch.float64, device=p.device)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state(p)
                state["step"] += 1
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                shape = (-1,) + (1,) * (p.dim() - 1)
                bias1 = (1 - beta1 ** state["step"]).to(p.dtype).view(shape)
                bias2 = (1 - beta2 ** state["step"]).to(p.dtype).view(shape)
                denom = (state["exp_avg_sq"].sqrt() / bias2.sqrt()).add_(group["eps"])
                p.sub_(group["lr"] * state["exp_avg"] / denom / bias1)

    def reset_members(self, members: list[int]) -> None:
        for state in self.state.values():
            for i in members:
                state["step"][i] = 0
                state["exp_avg"][i] = 0
                state["exp_avg_sq"][i] = 0


def make_optimizer(sae, config) -> torch.optim.Optimizer:
    if sae.per_member_optimizer:
        return MemberAdam(sae.parameters(), sae.n_members, lr=config.lr, betas=config.adam_betas)
    # fused Adam: one kernel over the stacked parameters (CPU and CUDA), instead of ~10 foreach passes
    return torch.optim.Adam(sae.parameters(), lr=config.lr, betas=config.adam_betas, fused=True)
