"""The training run's configuration: one frozen dataclass, saved as ``runs/<run_id>/config.json``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from interp.errors import InputError
from sae_training.architectures import SAEShape, architecture_class


class ConfigError(InputError):
    """A training configuration that cannot run, or that does not match the run being resumed."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result (so a resume can check it is the same run)."""

    # data: an activation cache directory, or live from `model` on `data`
    hook: str = "blocks.1.hook_resid_post"
    cache: str | None = None
    model: str | None = None
    data: str = "demo"
    context_size: int = 128
    # architecture
    architecture: str = "topk"
    d_in: int | None = None  # None: taken from the data; a number is checked against it
    d_sae: int = 4096
    k: int = 32
    k_schedule: str = "constant"
    n_members: int = 1
    aux_k_coefficient: float = 1.0
    jumprelu_init_threshold: float = 0.01
    jumprelu_bandwidth: float = 0.05
    # MFR
    mfr_coefficient: float = 0.0
    mfr_warmup_steps: int = 100
    mfr_match_every: int = 1  # steps between Hungarian re-matchings (1 = every step, as the paper)
    # optimisation
    n_tokens: int = 10_000_000
    batch_size: int = 4096
    lr: float = 3e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    lr_warmup_steps: int = 0
    lr_decay_steps: int = 0
    sparsity_coefficient: float = 0.0  # L1 (relu) or L0 (jumprelu) coefficient
    sparsity_warmup_steps: int = 0
    grad_clip: float = 1.0
    mse_reduction: str = "sum"  # "sum" over d_in (SAELens) or "mean" (MFR code's nn.MSELoss)
    normalize_activations: str = "expected_average_only_in"  # or "none"
    b_dec_init: str = "geometric_median"  # "mean" | "zeros"
    dead_window: int = 1000  # steps without firing after which a latent counts as dead
    buffer_tokens: int = 262_144
    seed: int = 0
    # bookkeeping (excluded from the resume check)
    log_every: int = 10
    # without MFR, a logged MMCS costs one Hungarian matching per member pair (seconds at d_sae 16k): every N steps
    mmcs_log_every: int = 100
    checkpoint_every: int = 1000
    eval_batches: int = 8
    eval_ce_batches: int = 4
    device: str = "cpu"
    autocast: bool = True
    wandb_project: str | None = None

    RESUME_FREE = ("log_every", "mmcs_log_every", "checkpoint_every", "eval_batches", "eval_ce_batches", "device", "autocast",
                   "wandb_project")

    def __post_init__(self) -> None:
        architecture_class(self.architecture)
        if self.cache is not None and self.model is not None:
            raise ConfigError("give one data source: `cache` (an activation cache) or `model` (live), not both")
        if self.n_tokens < self.batch_size:
            raise ConfigError(f"n_tokens ({self.n_tokens}) is less than one batch ({self.batch_size})")
        if self.mse_reduction not in ("sum", "mean"):
            raise ConfigError(f"mse_reduction must be 'sum' or 'mean', got '{self.mse_reduction}'")
        if self.normalize_activations not in ("none", "expected_average_only_in"):
            raise ConfigError("normalize_activations must be 'none' or 'expected_average_only_in'")
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ConfigError("b_dec_init must be 'geometric_median', 'mean' or 'zeros'")
        if self.mfr_coefficient < 0 or self.mfr_match_every < 1:
            raise ConfigError("mfr_coefficient must be >= 0 and mfr_match_every >= 1")
        if self.mfr_coefficient > 0 and self.n_members < 2:
            raise ConfigError("MFR needs an ensemble: set n_members (--ensemble) to 2 or more")

    @property
    def n_steps(self) -> int:
        return self.n_tokens // self.batch_size

    def shape(self, d_in: int) -> SAEShape:
        return SAEShape(d_in=d_in, d_sae=self.d_sae, n_members=self.n_members, k=self.k,
                        k_schedule=self.k_schedule, aux_k_coefficient=self.aux_k_coefficient,
                        jumprelu_init_threshold=self.jumprelu_init_threshold,
                        jumprelu_bandwidth=self.jumprelu_bandwidth)

    def to_dict(self) -> dict:
        return asdict(self)

    def resume_key(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUME_FREE}

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.resume_key(), sort_keys=True).encode()).hexdigest()[:10]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        if "adam_betas" in values:
            values = {**values, "adam_betas": tuple(values["adam_betas"])}
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def check_same_run(saved: TrainConfig, requested: TrainConfig) -> None:
    """Refuse to resume a run with a config that changes its result."""
    old, new = json.loads(json.dumps(saved.resume_key())), json.loads(json.dumps(requested.resume_key()))
    changed = sorted(k for k in old if old[k] != new.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old[k]!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(f"cannot resume: the config changed ({detail}); "
                          "use the saved config or start a new run id")
