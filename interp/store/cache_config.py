"""What an activation cache holds (``CacheConfig``): its options, their defaults and checks, and the hash that
names the cache. No torch here, so the CLI can show the defaults without loading a stage; the writer is
``interp.cache.writer``."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from interp.store.errors import InputError

DEFAULT_HOOK = "blocks.1.hook_resid_post"  # the demo's middle layer, which the CLI's model-fitted default picks too
STORAGE_DTYPE_NAMES = ("bfloat16", "float16", "float32")  # interp.cache.format.STORAGE_DTYPES' keys


@dataclass(frozen=True)
class CacheConfig:
    """What a cache holds; its hash names the cache and guards resumes."""

    model: str = "demo"
    data: str = "demo"
    hooks: tuple[str, ...] = (DEFAULT_HOOK,)
    n_tokens: int = 200_000
    context_size: int = 128
    batch_size: int = 32
    shard_tokens: int = 65_536
    dtype: str = "float32"
    seed: int = 0
    model_dtype: str | None = None  # the model's precision; None: the storage dtype (a model passed in: its own)

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPE_NAMES:
            raise InputError(f"unknown storage dtype '{self.dtype}'; use one of {sorted(STORAGE_DTYPE_NAMES)}")
        if self.model_dtype is not None and self.model_dtype not in STORAGE_DTYPE_NAMES:
            raise InputError(f"unknown model dtype '{self.model_dtype}'; use one of {sorted(STORAGE_DTYPE_NAMES)}")
        if not self.hooks:
            raise InputError("give at least one hook name")
        for name, value, least in (("n_tokens (--tokens)", self.n_tokens, 1), ("batch_size", self.batch_size, 1),
                                   ("context_size", self.context_size, 2)):
            if value < least:
                raise InputError(f"{name} must be at least {least}, got {value}")
        if self.shard_tokens < self.context_size:
            raise InputError(f"shard_tokens ({self.shard_tokens}) must hold at least one window of context_size "
                             f"{self.context_size} tokens; raise --shard-tokens (default 65536)")

    def check_model(self, n_ctx: int) -> None:
        """Refuse windows longer than the model's context (its positional embedding ends at ``n_ctx``)."""
        if self.context_size > n_ctx:
            raise InputError(f"context_size {self.context_size} is longer than the model's context of {n_ctx} "
                             f"tokens; pass --context-size {n_ctx} or less")

    @property
    def windows_per_shard(self) -> int:
        return max(1, self.shard_tokens // self.context_size)

    @property
    def n_windows(self) -> int:
        return math.ceil(self.n_tokens / self.context_size)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_windows / self.windows_per_shard)

    def config_hash(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if not (k == "model_dtype" and v is None)}  # older caches' ids
        payload = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:12]

    def default_cache_id(self) -> str:
        model = Path(self.model).name or self.model
        return f"{model}-{self.config_hash()}"
