"""Matryoshka BatchTopK SAE (Bussmann et al. 2025) as SAELens trains it: BatchTopK codes, plus the MSE of
every inner prefix of the dictionary, so the first latents must reconstruct on their own.

Levels are nested prefix widths ``w_1 < w_2 < … < d_sae``; the loss adds, for each inner level w,
``MSE(b_dec + f[:, :w] W_dec[:w], x)`` to the BatchTopK loss (MSE of the full SAE + AuxK). Inference and the
SAELens export are BatchTopK's: JumpReLU with the learnt threshold (SAELens saves its Matryoshka the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.store.errors import InputError
from sae_training.architectures.base import LossParts, SAEShape, option, reconstruction_mse
from sae_training.architectures.batchtopk import BatchTopKSAE
from sae_training.architectures.topk import TopKOptions


@dataclass(frozen=True)
class MatryoshkaOptions(TopKOptions):
    """BatchTopK's options plus the nested level widths."""

    widths: tuple[int, ...] = option((), "Nested level widths, strictly increasing, each < d_sae (d_sae is the "
                                     "last level); empty: d_sae/4, d_sae/2.")

    def levels(self, d_sae: int) -> list[int]:
        inner = list(self.widths) if self.widths else [d_sae // 4, d_sae // 2]
        return [w for w in inner if w != d_sae] + [d_sae]


class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK with nested reconstruction losses; ``levels`` are the prefix widths (the last is d_sae)."""

    architecture = "matryoshka"
    Options = MatryoshkaOptions

    @classmethod
    def validate(cls, options, shape: SAEShape) -> None:
        super().validate(options, shape)
        levels = options.levels(shape.d_sae)
        if min(levels) <= 0 or any(a >= b for a, b in zip(levels, levels[1:])):
            raise InputError(f"matryoshka widths {list(options.widths)} must be positive, strictly increasing "
                             f"and below d_sae={shape.d_sae} (nested prefixes; d_sae is the last level)")

    def decode_widths(self) -> tuple[int, ...]:
        return tuple(self.options.levels(self.d_sae))

    def inner_mse(self, f: Float[Tensor, "K batch d_sae"], x: Float[Tensor, "batch d_in"],
                  reduction: str) -> Float[Tensor, " K"]:
        """Sum over the inner levels of the prefix reconstruction's MSE, from dense codes (the eval-mode loss;
        training gets the same from ``BatchTopKSAE.loss``' sparse prefix decodes)."""
        total = x.new_zeros(self.n_members)
        decoded, previous = self.b_dec.unsqueeze(1).expand(-1, x.shape[0], -1), 0
        for width in self.options.levels(self.d_sae)[:-1]:
            decoded = torch.baddbmm(decoded, f[:, :, previous:width], self.W_dec[:, previous:width])
            total = total + reconstruction_mse(decoded, x, reduction)
            previous = width
        return total

    def loss(self, x: Float[Tensor, "batch d_in"], sparsity_coefficient: float = 0.0,
             dead: Tensor | None = None, mse_reduction: str = "sum") -> LossParts:
        parts = super().loss(x, sparsity_coefficient, dead, mse_reduction)
        if not self.training:
            parts.extra = self.inner_mse(parts.f, x, mse_reduction)
        return parts
