"""Gated SAE (Rajamanoharan et al. 2024) as SAELens trains it: a gate path decides which latents fire,
a magnitude path (the same ``W_enc`` rescaled by ``exp(r_mag)``) decides how much.

``f = 1[(x − b_dec) W_enc + b_gate > 0] · ReLU((x − b_dec)(W_enc ⊙ exp(r_mag)) + b_mag)``. Loss: MSE +
``λ · mean_batch Σ_j ReLU(π_gate)_j ‖W_dec,j‖`` + the gate path's own reconstruction error
``‖ReLU(π_gate) W_dec + b_dec − x‖²`` (SAELens' auxiliary loss; the decoder is not detached there, as in
SAELens). Saved as SAELens "gated" (W_enc, b_gate, r_mag, b_mag, W_dec, b_dec). Training runs through
``fused_dense.GatedStep`` (one encoder matmul for both paths; backward written out).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sae_training.architectures.base import EnsembleSAE, LossParts, reconstruction_mse, warmed
from sae_training.architectures.fused_dense import GatedStep
from sae_training.architectures.relu import L1Options


class GatedSAE(EnsembleSAE):
    """Gate and magnitude paths sharing ``W_enc``; no ``b_enc`` (``b_gate`` and ``b_mag`` instead)."""

    architecture = "gated"
    saelens_architecture = "gated"
    Options = L1Options

    def init_parameters(self, generator: torch.Generator) -> None:
        super().init_parameters(generator)
        del self.b_enc
        K, d_sae = self.shape.n_members, self.shape.d_sae
        self.b_gate = nn.Parameter(torch.zeros(K, d_sae))
        self.r_mag = nn.Parameter(torch.zeros(K, d_sae))
        self.b_mag = nn.Parameter(torch.zeros(K, d_sae))

    def sparsity_at(self, step: int) -> float:
        return warmed(self.options.l1_coefficient, self.options.l1_warmup_steps, step)

    def paths(self, x: Float[Tensor, "batch d_in"]) -> tuple[Tensor, Tensor]:
        """Gate and magnitude pre-activations ``[K, batch, d_sae]``."""
        x_in = x.unsqueeze(0) - self.b_dec.unsqueeze(1)
        gate = torch.baddbmm(self.b_gate.unsqueeze(1), x_in, self.W_enc)
        magnitude = torch.baddbmm(self.b_mag.unsqueeze(1), x_in, self.W_enc * self.r_mag.exp().unsqueeze(1))
        return gate, magnitude

    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "K batch d_sae"]:
        return self.paths(x)[1]

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "K batch d_sae"]:
        gate, magnitude = self.paths(x)
        return (gate > 0).to(magnitude.dtype) * magnitude.relu()

    def loss(self, x: Float[Tensor, "batch d_in"], sparsity_coefficient: float = 0.0,
             dead: Tensor | None = None, mse_reduction: str = "sum") -> LossParts:
        """MSE + ``λ · mean_batch Σ_j ReLU(π_gate)_j ‖W_dec,j‖`` + the gate path's reconstruction MSE, through
        ``GatedStep`` (equal to the same terms built from ``paths``)."""
        x = x.detach()
        f, x_hat, x_via_gate, via_gate_sum = GatedStep.apply(x, self.b_dec, self.W_enc, self.b_gate, self.r_mag,
                                                             self.b_mag, self.W_dec)
        sparsity = sparsity_coefficient * (via_gate_sum / x.shape[0] * self.W_dec.norm(dim=-1)).sum(-1)
        aux = reconstruction_mse(x_via_gate, x, mse_reduction)
        return LossParts(reconstruction_mse(x_hat, x, mse_reduction), sparsity, aux, x_hat, dense_f=f,
                         fired_mask=f.amax(1) > 0)

    def member_state(self, i: int, scale: float = 1.0) -> dict[str, Tensor]:
        state = {"W_enc": (self.W_enc[i] * scale).detach().contiguous(),
                 "W_dec": (self.W_dec[i] / scale).detach().contiguous(),
                 "b_dec": (self.b_dec[i] / scale).detach().contiguous()}
        for name in ("b_gate", "r_mag", "b_mag"):
            state[name] = getattr(self, name)[i].detach().clone()
        return state
