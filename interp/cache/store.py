"""Read activation caches: verified, memory-mapped shards and shuffled training batches.

``CacheFolder`` opens a cache directory and checks it (status, hooks, shard files, sizes,
dtypes, sha256). ``ActivationStore`` streams shuffled ``[batch, d]`` batches through a bounded
shuffle buffer, from cache shards or live from a model with no disk; its position is a single
integer, so a training run can checkpoint it and resume exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.cache.format import (
    MANIFEST,
    STORAGE_DTYPES,
    TOKENS_DIR,
    CacheError,
    memmap_tensor,
    sha256_file,
)
from interp.cache.stream import LazyChunk, ShuffledStream
from interp.cache.writer import stop_layer_for
from interp.models.data import batched_windows, token_windows
from interp.models.loading import check_hooks
from interp.store.errors import DictionaryError, InputError


class CacheFolder:
    """A complete activation cache on disk (``cached_activations/<id>/``); every shard is verified before it is
    used. Not TransformerLens' ``ActivationCache``, which holds one forward pass in memory."""

    def __init__(self, directory: Path | str, verify: bool = True, allow_incomplete: bool = False):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.exists():
            raise CacheError(f"no cache at {self.directory}: {manifest_path} is missing (run `workbench cache` first)")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise CacheError(f"{manifest_path} is not valid JSON ({error})") from error
        if self.manifest.get("status") != "complete" and not allow_incomplete:
            raise CacheError(
                f"cache {self.directory} is incomplete (status '{self.manifest.get('status')}'); "
                "rerun the same `workbench cache` command to resume it"
            )
        if not self.manifest.get("shards"):
            raise CacheError(f"cache {self.directory} holds no shards")
        self.verify = verify
        self._verified: set[str] = set()

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    def d(self, hook: str) -> int:
        return int(self._hook_info(hook)["d"])

    def _hook_info(self, hook: str) -> dict:
        if hook not in self.manifest["hooks"]:
            raise CacheError(f"cache {self.directory} has no hook '{hook}'; it holds {self.hooks}")
        return self.manifest["hooks"][hook]

    def _open(self, entry: dict, key: str, tensor: str) -> Tensor:
        relative = entry["files"][key]["path"]
        path = self.directory / relative
        if self.verify and relative not in self._verified:
            if not path.exists():
                raise CacheError(f"shard {path} is missing")
            digest = sha256_file(path)
            if digest != entry["files"][key]["sha256"]:
                raise CacheError(f"shard {path} fails its checksum (corrupted or modified); recreate the cache")
            self._verified.add(relative)
        return memmap_tensor(path, tensor)

    def activations(self, hook: str, shard: int) -> Float[Tensor, "tokens d"]:
        """One shard's activations at a hook, memory-mapped, shape and dtype checked."""
        info = self._hook_info(hook)
        entry = self.manifest["shards"][shard]
        tensor = self._open(entry, hook, "activations")
        expected = (entry["n_tokens"], info["d"])
        if tuple(tensor.shape) != expected or tensor.dtype != STORAGE_DTYPES[info["dtype"]]:
            raise CacheError(
                f"shard {self.directory / entry['files'][hook]['path']} has shape {tuple(tensor.shape)} "
                f"{tensor.dtype}, the manifest says {expected} {info['dtype']}"
            )
        return tensor

    def tokens(self, shard: int) -> dict[str, Tensor]:
        """One shard's ``token_ids``, ``sequence`` and ``position`` (each ``[tokens]``)."""
        entry = self.manifest["shards"][shard]
        return {name: self._open(entry, TOKENS_DIR, name) for name in ("token_ids", "sequence", "position")}

    def read_all(self, hook: str, dtype: torch.dtype = torch.float32) -> Float[Tensor, "tokens d"]:
        """Every activation of a hook in memory (small caches, tests, notebooks)."""
        return torch.cat([self.activations(hook, i).to(dtype) for i in range(self.n_shards)])


@dataclass
class TokenChunk:
    """Activations of whole sequences with their token ids and (sequence, position)."""

    activations: Float[Tensor, "tokens d_in"]
    token_ids: Int[Tensor, "tokens"]
    sequence: Int[Tensor, "tokens"]
    position: Int[Tensor, "tokens"]


def cache_chunks(cache: CacheFolder, hook: str, max_rows: int | None = 4096,
                 shards: list[int] | None = None) -> Iterator[TokenChunk]:
    """The cache's tokens shard by shard (in order, or in the order ``shards`` gives), in chunks of whole
    sequences of at most ``max_rows`` (or one sequence); ``max_rows=None``: one chunk per shard."""
    if cache.n_tokens == 0:
        raise DictionaryError(f"cache {cache.directory} holds no tokens; build it with `workbench cache`")
    for shard in range(cache.n_shards) if shards is None else shards:
        acts, tokens = cache.activations(hook, shard), cache.tokens(shard)
        sequence = tokens["sequence"].long()
        if max_rows is None:
            yield _chunk(acts, tokens, sequence, 0, len(sequence))
            continue
        bounds = torch.nonzero(torch.diff(sequence)).flatten().add(1).tolist() + [len(sequence)]
        begin = end = 0
        for bound in bounds:
            if bound - begin > max_rows and end > begin:
                yield _chunk(acts, tokens, sequence, begin, end)
                begin = end
            end = bound
        if end > begin:
            yield _chunk(acts, tokens, sequence, begin, end)


def _chunk(acts, tokens, sequence, begin: int, end: int) -> TokenChunk:
    return TokenChunk(acts[begin:end].float(), tokens["token_ids"][begin:end].long(), sequence[begin:end],
                      tokens["position"][begin:end].long())


def model_chunks(model, hook: str, data: str = "demo", context_size: int = 128, n_tokens: int | None = 65_536,
                 batch_size: int = 16, seed: int | None = 0) -> Iterator[TokenChunk]:
    """A live token stream: run the model on windows from ``data`` and yield each batch's activations
    (``n_tokens=None``: every window of the data)."""
    check_hooks(model, [hook])
    n_windows = None if n_tokens is None else max(1, n_tokens // context_size)
    windows = token_windows(data, model.tokenizer, context_size, seed=seed, max_windows=n_windows)
    for index, batch in enumerate(batched_windows(windows, batch_size)):
        with torch.no_grad():
            _, acts = model.run_with_cache(batch.to(model.cfg.device), names_filter=hook,
                                           stop_at_layer=stop_layer_for((hook,)))
        b, ctx = batch.shape
        yield TokenChunk(acts[hook].reshape(b * ctx, -1).float().cpu(), batch.reshape(-1),
                         (torch.arange(b) + index * batch_size).repeat_interleave(ctx), torch.arange(ctx).repeat(b))


def cache_source(cache: CacheFolder, hook: str, order: list[int], exclude_bos: bool) -> Iterator[LazyChunk]:
    """Whole shards in ``order`` as lazy float32 chunks (BOS rows dropped): sizes from the token files, the
    activations read only when a chunk is fetched (a seeking store skips the shards it passes)."""
    if cache.n_tokens == 0:
        raise DictionaryError(f"cache {cache.directory} holds no tokens; build it with `workbench cache`")
    for shard in order:
        keep = cache.tokens(shard)["position"] != 0 if exclude_bos else None
        size = int(keep.sum()) if keep is not None else int(cache.manifest["shards"][shard]["n_tokens"])

        def fetch(shard=shard, keep=keep) -> Tensor:
            acts = cache.activations(hook, shard).float()
            return acts[keep] if keep is not None else acts

        yield LazyChunk(size, fetch)


def live_source(model, hook: str, data: str, context_size: int, batch_size: int, seed: int,
                exclude_bos: bool) -> Iterator[LazyChunk]:
    """Windows of ``data`` in batches as lazy chunks: sizes from the token ids, the forward pass run only when a
    chunk is fetched (a seeking store tokenises the windows it passes but runs no model on them)."""
    windows = token_windows(data, model.tokenizer, context_size, seed=seed, max_windows=None)
    for batch in batched_windows(windows, batch_size):
        b, ctx = batch.shape

        def fetch(batch=batch, b=b, ctx=ctx) -> Tensor:
            with torch.no_grad():
                _, acts = model.run_with_cache(batch.to(model.cfg.device), names_filter=hook,
                                               stop_at_layer=stop_layer_for((hook,)))
            rows = acts[hook].reshape(b * ctx, -1).float().cpu()
            return rows[torch.arange(ctx).repeat(b) != 0] if exclude_bos else rows

        yield LazyChunk(b * (ctx - 1) if exclude_bos else b * ctx, fetch)


class ActivationStore(ShuffledStream):
    """Shuffled ``[batch, d]`` batches from a cache or live from a model (``interp.cache.stream.ShuffledStream``):
    ``start_batch=position`` continues exactly, by seeking (no shard read, no forward pass for skipped batches)."""

    @classmethod
    def from_cache(cls, cache: CacheFolder | Path | str, hook: str, batch_size: int = 4096,
                   buffer_tokens: int = 262_144, seed: int = 0, exclude_bos: bool = True,
                   start_batch: int = 0, max_epochs: int | None = None) -> ActivationStore:
        cache = cache if isinstance(cache, CacheFolder) else CacheFolder(cache)
        d_in = cache.d(hook)

        def source(epoch: int) -> Iterator[LazyChunk]:
            order = torch.randperm(cache.n_shards, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
            return cache_source(cache, hook, order, exclude_bos)

        return cls(source, d_in, batch_size, buffer_tokens, seed, start_batch, max_epochs)

    @classmethod
    def from_model(cls, model, hook: str, data: str = "demo", context_size: int = 128, batch_size: int = 4096,
                   buffer_tokens: int = 262_144, seed: int = 0, exclude_bos: bool = True,
                   model_batch_size: int = 32, start_batch: int = 0,
                   max_epochs: int | None = None) -> ActivationStore:
        """Live activations from the model: same interface, no disk."""
        check_hooks(model, [hook])
        if not 2 <= context_size <= model.cfg.n_ctx:
            raise InputError(f"context_size must be between 2 and the model's context of {model.cfg.n_ctx} "
                             f"tokens, got {context_size}")
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.zeros((1, 2), dtype=torch.long, device=model.cfg.device),
                                            names_filter=hook)
        d_in = cache[hook][0, 0].numel()

        def source(epoch: int) -> Iterator[LazyChunk]:
            return live_source(model, hook, data, context_size, model_batch_size, seed + epoch, exclude_bos)

        return cls(source, d_in, batch_size, buffer_tokens, seed, start_batch, max_epochs)
