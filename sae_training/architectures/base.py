"""Ensembles of K sparse autoencoders stored as stacked parameters ``[K, ...]``.

Every architecture subclasses ``EnsembleSAE`` and only defines how pre-activations become codes
(``activate``) and its sparsity term; encode/decode are one batched matmul (``baddbmm``) over all
members, so K SAEs cost about K times one SAE with no Python loop over members.
Forward follows SAELens: ``pre = (x - b_dec) @ W_enc + b_enc``, ``x_hat = f @ W_dec + b_dec``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from interp.store.errors import InputError
from sae_training.architectures.fused_topk import SparseCodes


@dataclass(frozen=True)
class SAEShape:
    """The sizes every architecture shares; its own knobs live in its ``Options`` dataclass."""

    d_in: int
    d_sae: int
    n_members: int = 1

    def __post_init__(self) -> None:
        if min(self.d_in, self.d_sae, self.n_members) <= 0:
            raise InputError(f"d_in, d_sae and n_members must be positive, got {self}")


@dataclass(frozen=True)
class NoOptions:
    """An architecture without options of its own."""


def option(default, help: str, choices: tuple | None = None):
    """A dataclass field of an options class, with the help text (and choices) the CLI and app show."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class KOptions:
    """Options of the TopK family: k per token and how it grows along the ensemble."""

    k: int = option(32, "Active latents per token (member i gets k*(i+1) with k_schedule=multiply).")
    k_schedule: str = option("constant", "constant | multiply (the MFR code's k_i = k*(i+1)).",
                             ("constant", "multiply"))

    def __post_init__(self) -> None:
        if self.k <= 0:
            raise InputError(f"k must be a positive number of latents, got {self.k}")
        if self.k_schedule not in ("constant", "multiply"):
            raise InputError(f"unknown k_schedule '{self.k_schedule}'; use 'constant' or 'multiply'")

    def member_k(self, n_members: int) -> list[int]:
        return [self.k * (i + 1) if self.k_schedule == "multiply" else self.k for i in range(n_members)]


def warmed(coefficient: float, warmup_steps: int, step: int) -> float:
    """``coefficient`` ramped linearly over the first ``warmup_steps`` steps (0-based step)."""
    return coefficient * (min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0)


def reconstruction_mse(x_hat: Float[Tensor, "K batch d_in"], x: Float[Tensor, "batch d_in"],
                       reduction: str = "sum") -> Float[Tensor, " K"]:
    """The one MSE of every architecture: sum over d_in and mean over tokens (SAELens), or ``"mean"``
    also over d_in (the MFR code's ``nn.MSELoss``)."""
    mse = (x_hat - x.unsqueeze(0)).pow(2).sum(-1).mean(-1)
    return mse / x.shape[-1] if reduction == "mean" else mse


@dataclass
class LossParts:
    """Per-member loss terms ``[K]`` and the codes they came from: dense ``f`` or, for the TopK family,
    ``SparseCodes`` (``f`` is then built only when asked for)."""

    mse: Float[Tensor, " K"]
    sparsity: Float[Tensor, " K"]
    aux: Float[Tensor, " K"]
    x_hat: Float[Tensor, "K batch d_in"]
    dense_f: Float[Tensor, "K batch d_sae"] | None = None
    codes: SparseCodes | None = None
    extra: Float[Tensor, " K"] | None = None  # further loss terms (Matryoshka's inner-level MSEs)
    fired_mask: Bool[Tensor, "K d_sae"] | None = None  # set when the loss already knows it (ReLU: column sums)
    target: Float[Tensor, "batch d_out"] | None = None  # what x_hat predicts when it is not the input (transcoders)

    @property
    def total(self) -> Tensor:
        """Sum over members: each member's gradient is that of its own loss (members share no parameters)."""
        total = self.mse + self.sparsity + self.aux
        return (total if self.extra is None else total + self.extra).sum()

    @property
    def f(self) -> Float[Tensor, "K batch d_sae"]:
        return self.dense_f if self.dense_f is not None else self.codes.dense()

    def fired(self) -> Bool[Tensor, "K d_sae"]:
        """Latents that fired on at least one token of the batch."""
        if self.fired_mask is not None:
            return self.fired_mask
        if self.dense_f is not None:
            return (self.dense_f.detach() != 0).any(1)
        return self.codes.fired()


class EnsembleSAE(nn.Module):
    """K SAEs with stacked parameters; subclasses define ``activate`` (and a sparsity term) and an
    ``Options`` frozen dataclass holding their own knobs."""

    architecture: str = ""
    saelens_architecture: str = ""
    Options: type = NoOptions
    unit_norm_decoder: bool = False  # renormalise W_dec rows after each step (TopK family)
    decoder_init_norm: float = 0.1
    per_member_optimizer: bool = False  # True: MemberAdam, so one member can be reset alone (re-initialisation)

    def __init__(self, shape: SAEShape, options=None, seed: int = 0):
        super().__init__()
        self.options = self.Options() if options is None else options
        self.validate(self.options, shape)
        self.shape = shape
        self.init_parameters(torch.Generator().manual_seed(seed))

    @classmethod
    def validate(cls, options, shape: SAEShape) -> None:
        """Refuse options that cannot work at this shape (e.g. k > d_sae), with a one-line InputError."""
        if isinstance(options, KOptions) and max(options.member_k(shape.n_members)) > shape.d_sae:
            raise InputError(f"k={max(options.member_k(shape.n_members))} exceeds d_sae={shape.d_sae}; "
                             "lower k or widen the SAE")

    def init_parameters(self, generator: torch.Generator) -> None:
        """SAELens' initialisation: kaiming-uniform decoder rows rescaled, encoder = decoder transpose."""
        K, d_in, d_sae = self.shape.n_members, self.shape.d_in, self.shape.d_sae
        bound = 1.0 / math.sqrt(d_in)  # kaiming-uniform(a=sqrt(5)) bound for a [d_sae, d_in] weight
        W_dec = (torch.rand(K, d_sae, d_in, generator=generator) * 2 - 1) * bound
        norm = 1.0 if self.unit_norm_decoder else self.decoder_init_norm
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True) * norm
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.transpose(1, 2).clone())
        self.b_enc = nn.Parameter(torch.zeros(K, d_sae))
        self.b_dec = nn.Parameter(torch.zeros(K, d_in))
        if isinstance(self.options, KOptions):
            self.register_buffer("k_per_member", torch.tensor(self.member_k), persistent=False)

    @property
    def member_k(self) -> list[int]:
        return self.options.member_k(self.shape.n_members)

    def sparsity_at(self, step: int) -> float:
        """The sparsity coefficient at (0-based) ``step``; 0 for architectures without one."""
        return 0.0

    @property
    def n_members(self) -> int:
        return self.shape.n_members

    @property
    def d_in(self) -> int:
        return self.shape.d_in

    @property
    def d_sae(self) -> int:
        return self.shape.d_sae

    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "K batch d_sae"]:
        x_in = x.unsqueeze(0) - self.b_dec.unsqueeze(1)
        return torch.baddbmm(self.b_enc.unsqueeze(1), x_in, self.W_enc)

    def activate(self, pre: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_sae"]:
        raise NotImplementedError

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "K batch d_sae"]:
        return self.activate(self.pre_acts(x))

    def decode(self, f: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_in"]:
        return torch.baddbmm(self.b_dec.unsqueeze(1), f, self.W_dec)

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "K batch d_in"]:
        return self.decode(self.encode(x))

    def sparsity_loss(self, f: Tensor, pre: Tensor, coefficient: float) -> Float[Tensor, " K"]:
        return f.new_zeros(self.n_members)

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Float[Tensor, " K"]:
        return x.new_zeros(self.n_members)

    def loss(self, x: Float[Tensor, "batch d_in"], sparsity_coefficient: float = 0.0,
             dead: Tensor | None = None, mse_reduction: str = "sum") -> LossParts:
        """MSE (sum over d_in, mean over tokens, as SAELens; ``"mean"`` also averages d_in as the MFR code)."""
        pre = self.pre_acts(x)
        f = self.activate(pre)
        x_hat = self.decode(f)
        mse = reconstruction_mse(x_hat, x, mse_reduction)
        return LossParts(mse, self.sparsity_loss(f, pre, sparsity_coefficient), self.aux_loss(x, x_hat, pre, dead),
                         x_hat, dense_f=f)

    def reinitialise(self, parts: LossParts) -> list[int]:
        """Members to re-initialise after this batch's forward (done in place); the trainer then resets
        their optimiser state and recomputes the batch. None by default."""
        return []

    @torch.no_grad()
    def after_step(self) -> None:
        """Project back to the constraint set after an optimiser step (unit decoder rows where needed)."""
        if self.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def member_state(self, i: int, scale: float = 1.0) -> dict[str, Tensor]:
        """Member ``i``'s SAELens tensors, with input scaling ``x' = scale * x`` folded in."""
        return {
            "W_enc": (self.W_enc[i] * scale).detach().contiguous(),
            "b_enc": self.b_enc[i].detach().clone(),
            "W_dec": (self.W_dec[i] / scale).detach().contiguous(),
            "b_dec": (self.b_dec[i] / scale).detach().contiguous(),
        }

    def saelens_extra_cfg(self, i: int) -> dict:
        return {}


def scatter_topk(pre: Float[Tensor, "K rows n"], k_per_member: Tensor, relu: bool = True) -> Float[Tensor, "K rows n"]:
    """Keep each row's ``k_i`` largest entries (member i), optionally ReLU them, zero the rest."""
    k_max = int(k_per_member.max())
    if k_max == 0:
        return torch.zeros_like(pre)
    values, indices = pre.topk(k_max, dim=-1, sorted=True)
    if int(k_per_member.min()) != k_max:
        rank = torch.arange(k_max, device=pre.device)
        values = torch.where(rank < k_per_member.view(-1, 1, 1), values, torch.zeros_like(values))
    values = values.relu() if relu else torch.where(torch.isfinite(values), values, torch.zeros_like(values))
    return torch.zeros_like(pre).scatter_(-1, indices, values)
