"""Training data for SAEs: shuffled batches from a cache, a live model, or an in-memory tensor,
plus the statistics computed once before training (input scale, geometric median for ``b_dec``)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from interp.cache.store import ActivationStore, CacheFolder, cache_source
from interp.cache.stream import LazyChunk
from sae_training.config import ConfigError, TrainConfig
from sae_training.transcoder import paired_chunks, paired_width


def open_store(config: TrainConfig, *, seed: int, start_batch: int = 0, rank: int = 0, world_size: int = 1,
               activations: Tensor | None = None, model=None) -> ActivationStore:
    """Batches of ``batch_size / world_size`` rows for this rank.

    A cache is split by shards (rank r reads shards r, r+W, ...); an in-memory tensor and a live model
    are shuffled identically on every rank, which then takes its own slice of each global batch.
    """
    if config.batch_size % world_size:
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by the {world_size} ranks")
    local = config.batch_size // world_size
    buffer = max(config.buffer_tokens, 2 * config.batch_size)
    if activations is not None and hasattr(activations, "open_stream"):  # fresh points per batch (synthetic)
        if world_size > 1:
            raise ConfigError("a generated stream of activations runs in one process only")
        return activations.open_stream(seed, start_batch, config.batch_size)
    if activations is not None:
        data = activations.float()
        d_in = data.shape[1]

        def source(epoch: int) -> Iterator[LazyChunk]:  # the whole tensor, reshuffled each epoch, fetched lazily
            order = torch.Generator().manual_seed(seed + epoch)
            return iter([LazyChunk(len(data), lambda: data[torch.randperm(len(data), generator=order)])])

        store = ActivationStore(source, d_in, config.batch_size, buffer, seed, start_batch)
        return _RankSlice(store, rank, local) if world_size > 1 else store
    if config.cache is not None and config.target_hook is not None:
        return _paired_store(config, seed, start_batch, rank, world_size, local)
    if config.cache is not None:
        cache = CacheFolder(config.cache)
        if config.hook not in cache.hooks:
            raise ConfigError(f"cache {config.cache} has no hook '{config.hook}'; it holds {cache.hooks}")
        mine = list(range(rank, cache.n_shards, world_size))
        if not mine:
            raise ConfigError(f"cache {config.cache} has {cache.n_shards} shards, fewer than the {world_size} ranks")

        def source(epoch: int) -> Iterator[Tensor]:
            order = torch.randperm(len(mine), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
            return cache_source(cache, config.hook, [mine[i] for i in order], exclude_bos=True)

        return ActivationStore(source, cache.d(config.hook), local, max(config.buffer_tokens, 2 * local),
                               seed, start_batch)
    store = ActivationStore.from_model(model, config.hook, config.data, config.context_size, config.batch_size,
                                       buffer, seed, start_batch=start_batch)
    return _RankSlice(store, rank, local) if world_size > 1 else store


def _paired_store(config: TrainConfig, seed: int, start_batch: int, rank: int, world_size: int,
                  local: int) -> ActivationStore:
    """A transcoder's ``[input | target]`` rows from a cache holding both hooks, split by shards like an SAE's."""

    cache = CacheFolder(config.cache)
    width = paired_width(cache, config.hook, config.target_hook)
    mine = list(range(rank, cache.n_shards, world_size))
    if not mine:
        raise ConfigError(f"cache {config.cache} has {cache.n_shards} shards, fewer than the {world_size} ranks")

    def source(epoch: int) -> Iterator[Tensor]:
        order = torch.randperm(len(mine), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        return paired_chunks(cache, config.hook, config.target_hook, [mine[i] for i in order])

    return ActivationStore(source, width, local, max(config.buffer_tokens, 2 * local), seed, start_batch)


class _RankSlice:
    """Rank ``r``'s rows ``[r*local, (r+1)*local)`` of each global batch; same ``position`` semantics."""

    def __init__(self, store: ActivationStore, rank: int, local: int):
        self.store, self.rank, self.local, self.d_in = store, rank, local, store.d_in

    @property
    def position(self) -> int:
        return self.store.position

    def __iter__(self):
        return self

    def __next__(self) -> Tensor:
        return next(self.store)[self.rank * self.local:(self.rank + 1) * self.local]


def take_rows(store, n_rows: int) -> Float[Tensor, "rows d"]:
    rows, taken = [], 0
    while taken < n_rows:
        batch = next(store)
        rows.append(batch)
        taken += len(batch)
    return torch.cat(rows)[:n_rows]


def input_scale(sample: Float[Tensor, "rows d"]) -> float:
    """SAELens ``expected_average_only_in``: ``sqrt(d_in) / E‖x‖`` so that inputs have norm ≈ sqrt(d_in)."""
    return math.sqrt(sample.shape[1]) / float(sample.norm(dim=-1).mean().clamp_min(1e-12))


def geometric_median(points: Float[Tensor, "rows d"], max_iter: int = 100, eps: float = 1e-6,
                     tol: float = 1e-7) -> Float[Tensor, " d"]:
    """Weiszfeld's algorithm from the mean (SAELens v5 ``b_dec_init_method="geometric_median"``)."""
    median = points.mean(0)
    for _ in range(max_iter):
        weights = 1.0 / (points - median).norm(dim=-1).clamp_min(eps)
        updated = (weights.unsqueeze(1) * points).sum(0) / weights.sum()
        if (updated - median).norm() <= tol * max(1.0, float(median.norm())):
            return updated
        median = updated
    return median


def find_bad_shard(config: TrainConfig) -> str:
    """Name the first cache shard holding NaN/inf at the hook (after a non-finite batch)."""
    if config.cache is None:
        return "the live activations"
    cache = CacheFolder(config.cache, verify=False)
    for shard in range(cache.n_shards):
        if not torch.isfinite(cache.activations(config.hook, shard).float()).all():
            return f"shard {shard} of {config.cache} ({config.hook})"
    return f"cache {config.cache}"
