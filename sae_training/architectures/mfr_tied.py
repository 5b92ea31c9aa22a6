"""The MFR code's tied TopK SAE (PAPERS.md §1.2), for reproducing the paper's set-up.

Per member one weight ``W [d_sae, d_in]`` and bias ``c``: ``pre = x @ Wᵀ + c`` (no input centring, no
``b_dec``), ``f = pre · 1[pre ≥ k_i-th largest]`` (TopK *without* ReLU: kept values may be negative, ties
keep more than k), decoder = the row-normalised encoder, ``x_hat = f @ normalize(W)``. Orthogonal init,
zero bias, ``k_i = k·(i+1)`` by default, no unit-norm projection (the normalisation is in the forward).
Optional "freq_cubic" re-initialisation (the code between Jul and Sep 2024): a member whose firing rates
deviate too much from a target (``mean_j(|p_j − t| / t)³ > threshold``) gets fresh orthogonal weights,
zero bias and a fresh Adam, and the batch is recomputed. Trained with one Adam per member (``MemberAdam``).

SAELens export: architecture "topk" with ``W_enc = Wᵀ``, ``W_dec = normalize(W)``, ``b_dec = 0``, k = k_i.
SAELens' TopK ReLUs the kept values, so its encode equals ours wherever the k_i-th largest
pre-activation of a row is positive (decode is always equal).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from interp.store.errors import InputError
from sae_training.architectures.base import EnsembleSAE, KOptions, LossParts, option


@dataclass(frozen=True)
class TiedOptions(KOptions):
    """k (default schedule: the MFR code's k·(i+1)) and the optional freq_cubic re-initialisation."""

    k_schedule: str = option("multiply", "constant | multiply (the MFR code's k_i = k*(i+1)).",
                             ("constant", "multiply"))
    reinit: str = option("off", "off | freq_cubic: re-initialise a member whose firing rates stray from the "
                         "target (the MFR code of Jul-Sep 2024).", ("off", "freq_cubic"))
    reinit_threshold: float = option(1.0, "freq_cubic: re-initialise when mean(|p - t| / t)^3 exceeds this.")
    reinit_target_density: float = option(0.0625, "freq_cubic: target firing rate t (the code's 1/16).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reinit not in ("off", "freq_cubic"):
            raise InputError(f"unknown reinit '{self.reinit}'; use 'off' or 'freq_cubic'")
        if not (self.reinit_threshold > 0 and 0 < self.reinit_target_density < 1):
            raise InputError("reinit_threshold must be > 0 and reinit_target_density in (0, 1), "
                             f"got {self.reinit_threshold}, {self.reinit_target_density}")


def signed_topk(pre: Float[Tensor, "K batch d_sae"], member_k: list[int]) -> Float[Tensor, "K batch d_sae"]:
    """``pre · 1[pre ≥ k_i-th largest of its row]`` per member i (no ReLU; ties keep more)."""
    top = pre.topk(max(member_k), dim=-1).values  # [K, batch, k_max], sorted
    rank = torch.tensor(member_k, device=pre.device).sub(1).view(-1, 1, 1).expand(-1, pre.shape[1], 1)
    threshold = top.gather(-1, rank)
    return pre * (pre >= threshold)


class TiedTopKSAE(EnsembleSAE):
    """Tied TopK SAE of the MFR code; ``W_enc``/``W_dec``/``b_dec`` are views of ``W`` (and zeros)."""

    architecture = "mfr_tied"
    saelens_architecture = "topk"
    Options = TiedOptions
    per_member_optimizer = True

    def init_parameters(self, generator: torch.Generator) -> None:
        K, d_in, d_sae = self.shape.n_members, self.shape.d_in, self.shape.d_sae
        W = torch.empty(K, d_sae, d_in)
        for i in range(K):
            nn.init.orthogonal_(W[i], generator=generator)
        self.W = nn.Parameter(W)
        self.b_enc = nn.Parameter(torch.zeros(K, d_sae))
        self.register_buffer("b_dec", torch.zeros(K, d_in), persistent=False)
        self.register_buffer("k_per_member", torch.tensor(self.member_k), persistent=False)

    @property
    def W_enc(self) -> Float[Tensor, "K d_in d_sae"]:
        return self.W.transpose(1, 2)

    @property
    def W_dec(self) -> Float[Tensor, "K d_sae d_in"]:
        return F.normalize(self.W, dim=-1)

    def activate(self, pre: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_sae"]:
        return signed_topk(pre, self.member_k)

    @torch.no_grad()
    def reinitialise(self, parts: LossParts) -> list[int]:
        if self.options.reinit == "off":
            return []
        target = self.options.reinit_target_density
        rates = (parts.f.detach() != 0).float().mean(1)  # [K, d_sae]
        deviation = ((rates - target).abs() / target).pow(3).mean(-1)
        members = [i for i in range(self.n_members) if float(deviation[i]) > self.options.reinit_threshold]
        for i in members:  # the global RNG, which checkpoints save: a resume re-draws the same weights
            nn.init.orthogonal_(self.W[i])
            self.b_enc[i].zero_()
        return members

    def member_state(self, i: int, scale: float = 1.0) -> dict[str, Tensor]:
        return {
            "W_enc": (self.W[i].T * scale).detach().contiguous(),
            "b_enc": self.b_enc[i].detach().clone(),
            "W_dec": (self.W_dec[i] / scale).detach().contiguous(),
            "b_dec": torch.zeros(self.d_in),
        }

    def saelens_extra_cfg(self, i: int) -> dict:
        return {"k": self.member_k[i], "rescale_acts_by_decoder_norm": False, "apply_b_dec_to_input": False}
