"""The training run's configuration: one frozen dataclass, saved as ``runs/<run_id>/config.json``."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from interp.store.cache_config import DEFAULT_HOOK
from interp.store.errors import InputError
from interp.store.io import write_json
from interp.store.run_folder import CONFIG
from sae_training.architectures import SAEShape, architecture_class, make_options


class ConfigError(InputError):
    """A training configuration that cannot run, or that does not match the run being resumed."""


# names of architecture options in config.json files written before options moved into the architectures
LEGACY_OPTION_NAMES = {
    "relu": {"sparsity_coefficient": "l1_coefficient", "sparsity_warmup_steps": "l1_warmup_steps"},
    "jumprelu": {"sparsity_coefficient": "l0_coefficient", "sparsity_warmup_steps": "l0_warmup_steps",
                 "jumprelu_init_threshold": "init_threshold", "jumprelu_bandwidth": "bandwidth"},
}
LEGACY_KEYS = ("k", "k_schedule", "aux_k_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth",
               "sparsity_coefficient", "sparsity_warmup_steps")

# architecture -> the SAELens transcoder activation it is saved as (SAELens 6 has no TopK transcoder: "topk" is ours)
TRANSCODER_ACTIVATIONS = {"topk": "topk", "batchtopk": "jumprelu", "relu": "relu", "jumprelu": "jumprelu"}


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Everything that determines a run's result (so a resume can check it is the same run): the common
    training fields plus ``options``, the chosen architecture's own options dataclass.

    ``TrainConfig(architecture="topk", k=16, ...)``: an architecture option given by name goes into
    ``options``; one that the architecture does not have is refused, naming its options.
    """

    # data: an activation cache directory, or live from `model` on `data`
    hook: str = DEFAULT_HOOK
    # a transcoder: read `hook` (an MLP's input), predict `target_hook` (its output); optional affine skip
    target_hook: str | None = None
    skip_connection: bool = False
    cache: str | None = None
    model: str | None = None
    data: str = "demo"
    context_size: int = 128
    # architecture
    architecture: str = "topk"
    options: object = None  # the architecture's Options dataclass (a dict is converted)
    d_in: int | None = None  # None: taken from the data; a number is checked against it
    d_sae: int = 4096
    n_members: int = 1
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

    RESUME_FREE = (
        "log_every",
        "mmcs_log_every",
        "checkpoint_every",
        "eval_batches",
        "eval_ce_batches",
        "device",
        "autocast",
        "wandb_project",
    )

    def __init__(self, **values) -> None:
        own = {f.name for f in fields(self)}
        architecture = values.get("architecture", "topk")
        flat = {key: values.pop(key) for key in list(values) if key not in own}
        options = values.pop("options", None)
        if flat:
            if options is not None:
                raise ConfigError(f"give architecture options either in `options` or by name, not both: {sorted(flat)}")
            options = flat
        architecture_class(architecture)
        object.__setattr__(self, "options", make_options(architecture, options))
        for f in fields(self):
            if f.name != "options":
                object.__setattr__(
                    self, f.name, values.get(f.name, f.default if f.default is not MISSING else f.default_factory())
                )  # type: ignore[misc]
        self.__post_init__()

    def __post_init__(self) -> None:
        self._check_types()
        positive = {
            "d_sae": self.d_sae,
            "n_members": self.n_members,
            "n_tokens": self.n_tokens,
            "batch_size": self.batch_size,
            "context_size": self.context_size,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if self.d_in is not None and self.d_in <= 0:
            raise ConfigError(f"d_in must be positive (or left out to take it from the data), got {self.d_in}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite positive number, got {self.lr}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError(f"grad_clip must be a finite number >= 0 (0 = no clipping), got {self.grad_clip}")
        if not all(0 <= b < 1 for b in self.adam_betas) or len(self.adam_betas) != 2:
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        architecture_class(self.architecture).validate(self.options, SAEShape(1, self.d_sae, self.n_members))
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
        self._check_transcoder()

    def _check_transcoder(self) -> None:

        if self.target_hook is None:
            if self.skip_connection:
                raise ConfigError("skip_connection is a transcoder option: set target_hook (the MLP's output) too")
            return
        if self.architecture not in TRANSCODER_ACTIVATIONS:
            raise ConfigError(
                f"a transcoder can be trained as {sorted(TRANSCODER_ACTIVATIONS)}, not '{self.architecture}'"
            )
        if self.target_hook == self.hook:
            raise ConfigError(f"target_hook equals hook ({self.hook}): that is an SAE; leave target_hook out")
        if self.model is not None:
            raise ConfigError("a transcoder trains from an activation cache holding both hooks (`cache`), not live")

    @classmethod
    def default(cls, name: str):
        """A field's default: the one place the CLI, the app and the API take it from."""
        (field,) = [f for f in fields(cls) if f.name == name]
        return field.default if field.default is not MISSING else field.default_factory()  # type: ignore[misc]

    @property
    def n_steps(self) -> int:
        return self.n_tokens // self.batch_size

    def _check_types(self) -> None:
        """Refuse a field of the wrong type (a hand-edited config.json) with its name."""
        expected = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}
        for f in fields(self):
            value, kind = getattr(self, f.name), f.type
            optional = "None" in str(kind)
            base = {"int": int, "float": float, "str": str, "bool": bool}.get(str(kind).split(" ")[0])
            if value is None and optional or base is None:
                continue
            if not isinstance(value, expected[base]) or (base is not bool and isinstance(value, bool)):
                raise ConfigError(f"config field '{f.name}' must be a {base.__name__}, got {value!r}")

    @property
    def option_values(self) -> dict:
        return asdict(self.options)

    def shape(self, d_in: int) -> SAEShape:
        return SAEShape(d_in=d_in, d_sae=self.d_sae, n_members=self.n_members)

    def to_dict(self) -> dict:
        return asdict(self)

    def resume_key(self) -> dict:
        """The fields that determine the result; the transcoder fields only when set, so an SAE's key (and
        hash, and the checkpoints that carry it) is what it was before they existed."""
        unset = {"target_hook": None, "skip_connection": False}
        return {
            k: v for k, v in self.to_dict().items() if k not in self.RESUME_FREE and not (k in unset and v == unset[k])
        }

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.resume_key(), sort_keys=True).encode()).hexdigest()[:10]

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        if not isinstance(values, dict):
            raise ConfigError(f"a training config is a JSON object, got {type(values).__name__}")
        values = dict(values)
        if "options" not in values and any(key in values for key in LEGACY_KEYS):
            values = _from_legacy(values)
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        if isinstance(values.get("adam_betas"), list):
            values["adam_betas"] = tuple(values["adam_betas"])
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(
                f"{path} is not a readable JSON config ({error}); restore it or start a new run"
            ) from None
        try:
            return cls.from_dict(values)
        except InputError as error:
            raise ConfigError(f"{path}: {error}") from None


def _from_legacy(values: dict) -> dict:
    """A config.json written before architecture options moved into ``options``: keep the chosen
    architecture's options (renamed), drop the others (they had no effect on that architecture)."""
    architecture = values.get("architecture", "topk")
    if architecture not in LEGACY_OPTION_NAMES and architecture not in ("topk", "batchtopk"):
        return values
    renames = LEGACY_OPTION_NAMES.get(architecture, {})
    own = {spec for spec in (f.name for f in fields(make_options(architecture)))}
    options = {}
    for key in LEGACY_KEYS:
        if key in values:
            value = values.pop(key)
            name = renames.get(key, key)
            if name in own:
                options[name] = value
    return {**values, "options": options}


def _flat(values: dict) -> dict:
    """The resume key with the architecture options as ``options.<name>`` (JSON types, for comparing)."""
    values = json.loads(json.dumps(values))
    options = values.pop("options", None) or {}
    return {**values, **{f"options.{k}": v for k, v in options.items()}}


def config_changes(old: dict, new: dict) -> str:
    """``"name: old -> new"`` for every field that differs between two resume keys ('' when none)."""
    old, new = _flat(old), _flat(new)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)


def check_same_run(saved: TrainConfig, requested: TrainConfig) -> None:
    """Refuse to resume a run with a config that changes its result."""
    detail = config_changes(saved.resume_key(), requested.resume_key())
    if detail:
        raise ConfigError(f"cannot resume: the config changed ({detail}); use the saved config or start a new run id")


def check_checkpoint_config(state: dict, requested: TrainConfig, run_dir: Path) -> None:
    """Refuse a checkpoint written under another config (e.g. ``config.json`` edited by hand since)."""
    if state.get("config_hash") == requested.config_hash():
        return
    if "config_json" in state:
        detail = config_changes(json.loads(state["config_json"]), requested.resume_key())
    else:
        detail = f"config hash {state.get('config_hash')} -> {requested.config_hash()}"
    raise ConfigError(
        f"cannot resume {run_dir}: its checkpoint was written under another config ({detail}); "
        f"restore {CONFIG} or start a new run id"
    )
