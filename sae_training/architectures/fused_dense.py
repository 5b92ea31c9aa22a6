"""The dense (ReLU-L1, Gated) training steps as one autograd function each: forward and backward written
out, so a step runs the fewest ``[batch, d_in] x [d_in, d_sae]`` matmuls and dense ``[K, batch, d_sae]``
passes it can.

What autograd would add and these skip: the input-gradient matmul that only feeds ``b_dec`` (``-W_enc @ Σ
grad`` instead), the L1 term's ``[K, batch, d_sae]`` gradient (its column sums enter the pre-activation
gradient through the ``baddbmm`` bias), separate ReLU-mask tensors (masks are applied in place). Gated
also shares one encoder matmul between its gate and magnitude paths: ``(x − b_dec)(W_enc ⊙ exp r_mag)``
is ``((x − b_dec) W_enc) ⊙ exp r_mag``, and ``W_enc``'s gradient through both paths is one matmul on
``grad_gate + grad_mag ⊙ exp r_mag``. SAELens' Gated computes the gate matmul twice (encode and aux loss).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def _keep_where_positive_(values: Tensor, source: Tensor) -> Tensor:
    """``values`` zeroed in place where ``source <= 0`` (ReLU's backward mask): aten's ``threshold_backward``
    writing into ``values``, one pass and no bool mask (``masked_fill_(source == 0, 0)`` took ~10x longer)."""
    return torch.ops.aten.threshold_backward.grad_input(values, source, 0.0, grad_input=values)


def _weight_grad(grad_pre: Float[Tensor, "K batch d_sae"], x_in: Tensor) -> Float[Tensor, "K d_in d_sae"]:
    """``x_inᵀ @ grad_pre`` computed as ``[K, d_sae, d_in]`` and returned transposed: ``W_enc``'s own
    strides (it is stored as the decoder's transpose), so accumulating it needs no copy."""
    return torch.bmm(grad_pre.transpose(1, 2), x_in).transpose(1, 2)


class ReLUStep(torch.autograd.Function):
    """``f = ReLU((x − b_dec) W_enc + b_enc)``, ``x_hat = f W_dec + b_dec`` and ``Σ_batch f`` (for the L1
    term); ``f`` is returned for logging and takes no gradient; ``x`` is data. ``pre``: the detached
    pre-activations of these parameters when already computed (overwritten in place by ``f``)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")  # backward runs under the forward's autocast state
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, pre: Tensor | None = None):
        x_in = x.unsqueeze(0) - b_dec.unsqueeze(1)
        f = (torch.baddbmm(b_enc.unsqueeze(1), x_in, W_enc) if pre is None else pre).relu_()
        x_hat = torch.baddbmm(b_dec.unsqueeze(1), f, W_dec)
        ctx.save_for_backward(x_in, W_enc, W_dec, f)
        ctx.mark_non_differentiable(f)
        return f, x_hat, f.sum(1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, _grad_f, grad_x_hat: Tensor, grad_sum: Tensor):
        x_in, W_enc, W_dec, f = ctx.saved_tensors
        grad_W_dec = torch.bmm(f.transpose(1, 2), grad_x_hat)
        grad_pre = torch.baddbmm(grad_sum.unsqueeze(1), grad_x_hat, W_dec.transpose(1, 2))
        _keep_where_positive_(grad_pre, f)  # ReLU: f > 0 exactly where the pre-activation is
        grad_b_enc = grad_pre.sum(1)
        grad_W_enc = _weight_grad(grad_pre, x_in)
        grad_b_dec = grad_x_hat.sum(1) - torch.bmm(W_enc, grad_b_enc.unsqueeze(-1)).squeeze(-1)
        return None, grad_b_dec, grad_W_enc, grad_b_enc, grad_W_dec, None


class GatedStep(torch.autograd.Function):
    """Gated SAE: ``base = (x − b_dec) W_enc``, gate ``π = base + b_gate``, magnitude
    ``base ⊙ exp(r_mag) + b_mag``, ``f = 1[π > 0] · ReLU(magnitude)``. Returns ``f`` (no gradient),
    ``x_hat = f W_dec + b_dec``, the gate-path reconstruction ``ReLU(π) W_dec + b_dec`` and ``Σ_batch ReLU(π)``."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")  # backward runs under the forward's autocast state
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_gate: Tensor, r_mag: Tensor, b_mag: Tensor,
                W_dec: Tensor):
        x_in = x.unsqueeze(0) - b_dec.unsqueeze(1)
        base = torch.bmm(x_in, W_enc)
        scale = r_mag.exp().unsqueeze(1)
        f = torch.addcmul(b_mag.unsqueeze(1), base, scale).relu_()
        via_gate = (base + b_gate.unsqueeze(1)).relu_()
        _keep_where_positive_(f, via_gate)  # zero where the gate is closed (π <= 0)
        x_hat = torch.baddbmm(b_dec.unsqueeze(1), f, W_dec)
        x_via_gate = torch.baddbmm(b_dec.unsqueeze(1), via_gate, W_dec)
        ctx.save_for_backward(x_in, W_enc, W_dec, scale, base, f, via_gate)
        ctx.mark_non_differentiable(f)
        return f, x_hat, x_via_gate, via_gate.sum(1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, _grad_f, grad_x_hat: Tensor, grad_via: Tensor, grad_sum: Tensor):
        x_in, W_enc, W_dec, scale, base, f, via_gate = ctx.saved_tensors
        W_dec_t = W_dec.transpose(1, 2)
        grad_W_dec = torch.baddbmm(torch.bmm(f.transpose(1, 2), grad_x_hat), via_gate.transpose(1, 2), grad_via)
        grad_mag = _keep_where_positive_(torch.bmm(grad_x_hat, W_dec_t), f)  # f > 0: gate open, magnitude > 0
        grad_gate = _keep_where_positive_(torch.baddbmm(grad_sum.unsqueeze(1), grad_via, W_dec_t), via_gate)
        grad_b_mag = grad_mag.sum(1)
        grad_r_mag = (grad_mag * base).sum(1) * scale.squeeze(1)
        grad_b_gate = grad_gate.sum(1)
        grad_base = grad_gate.addcmul_(grad_mag, scale)  # both paths through W_enc: one matmul
        del grad_mag, grad_gate
        grad_W_enc = _weight_grad(grad_base, x_in)
        grad_b_dec = (grad_x_hat.sum(1) + grad_via.sum(1)
                      - torch.bmm(W_enc, grad_base.sum(1).unsqueeze(-1)).squeeze(-1))
        return None, grad_b_dec, grad_W_enc, grad_b_gate, grad_r_mag, grad_b_mag, grad_W_dec
