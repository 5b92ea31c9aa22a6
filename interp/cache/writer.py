"""Write a sharded, resumable activation cache (format: DESIGN.md, "On-disk formats").

Each shard covers a fixed run of whole token windows, so the windows of shard ``i`` are known
before it is computed: a killed run re-reads its manifest, skips the windows of the shards it
already has and continues, giving the same bytes as an uninterrupted run. The forward pass stops
after the last layer a hook needs, and a background thread writes (and fsyncs) the previous
shard while the model computes the next.
"""

from __future__ import annotations

import json
import math
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from interp.cache.format import (
    MANIFEST,
    STORAGE_DTYPES,
    TOKENS_DIR,
    CacheError,
    atomic_write_json,
    sha256_file,
    shard_name,
    write_shard,
)
from interp.models.data import batched_windows, data_changes, data_fingerprint, token_windows
from interp.models.loading import check_hooks, load_model, model_fingerprint, resolve_device
from interp.models.memory import MemoryEstimate, check_fits_memory, estimate_memory, model_size
from interp.store.cache_config import CacheConfig  # noqa: F401 - re-exported: the cache's writer API
from interp.store.cache_manifest import read_manifest
from interp.store.errors import InputError
from interp.store.locks import writing
from interp.store.names import check_name

FORMAT_VERSION = 1


def model_torch_dtype(config: CacheConfig) -> torch.dtype:
    """The precision the model runs in for ``config`` (its ``model_dtype``, else the storage dtype)."""
    return STORAGE_DTYPES[config.model_dtype or config.dtype]


def cache_memory_estimate(config: CacheConfig) -> MemoryEstimate | None:
    """Memory to cache ``config`` (weights, conversion copy, one forward, shard buffers); None if the model's
    size cannot be read before loading it (a TransformerLens name)."""
    size = model_size(config.model)
    if size is None:
        return None
    return estimate_memory(size, model_torch_dtype(config), config.batch_size, config.context_size,
                           len(config.hooks), config.shard_tokens, STORAGE_DTYPES[config.dtype])


def stop_layer_for(hooks: tuple[str, ...]) -> int | None:
    """The ``stop_at_layer`` that runs every block a hook needs and nothing after it.

    Block and embedding hooks never need the final layer norm or the unembedding (often the
    most expensive matmul of a small model), so those are skipped; any other hook
    (``ln_final.*``) needs the whole model (None).
    """
    needed = -1
    for hook in hooks:
        if hook.startswith("blocks."):
            needed = max(needed, int(hook.split(".")[1]))
        elif hook not in ("hook_embed", "hook_pos_embed", "hook_tokens"):
            return None
    return needed + 1


def hook_width(shape: tuple[int, ...]) -> int:
    """Flattened width of one position's activation (``hook_z`` heads are concatenated)."""
    return math.prod(shape[2:])


@dataclass
class _Shard:
    index: int
    activations: dict[str, torch.Tensor]
    token_ids: torch.Tensor
    sequence: torch.Tensor
    position: torch.Tensor
    n_tokens: int = field(default=0)


def _library_versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {}
    for package in ("torch", "transformer-lens", "safetensors", "interp-workbench"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


class CacheWriter:
    """Runs the model over the data and writes shards; ``run()`` resumes when the cache exists."""

    def __init__(self, config: CacheConfig, root: Path | str = "cached_activations", cache_id: str | None = None,
                 device: str | None = None, model=None, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is outside a world of {world_size} processes")
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.directory = Path(root) / (check_name(cache_id, "cache id") if cache_id else config.default_cache_id())
        if model is None:
            estimate = cache_memory_estimate(config)
            if estimate is not None:
                check_fits_memory(estimate, resolve_device(device), f"caching with '{config.model}'")
            model = load_model(config.model, device=device, dtype=model_torch_dtype(config))
        elif config.model_dtype is not None and model.cfg.dtype != model_torch_dtype(config):  # None: as given
            raise InputError(f"the model given runs at {model.cfg.dtype} but the cache config asks for "
                             f"{model_torch_dtype(config)}; load it at that dtype or set model_dtype")
        self.model = model
        config.check_model(self.model.cfg.n_ctx)
        check_hooks(self.model, list(config.hooks))
        self.storage_dtype = STORAGE_DTYPES[config.dtype]
        self.stop_at_layer = stop_layer_for(config.hooks)
        self.widths = self._probe_widths()
        self.repaired: list[str] = []  # shards found damaged on opening an existing cache, computed again

    def _probe_widths(self) -> dict[str, int]:
        shapes: dict[str, tuple[int, ...]] = {}

        def record(activation, hook):
            shapes[hook.name] = tuple(activation.shape)

        probe = torch.zeros((1, 2), dtype=torch.long, device=self.model.cfg.device)
        with torch.no_grad(), self.model.hooks(fwd_hooks=[(name, record) for name in self.config.hooks]):
            self.model(probe, stop_at_layer=self.stop_at_layer)
        return {name: hook_width(shapes[name]) for name in self.config.hooks}

    # -- manifest -------------------------------------------------------------------------------
    def _fresh_manifest(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "status": "running",
            "config": asdict(self.config),
            "config_hash": self.config.config_hash(),
            "model_fingerprint": model_fingerprint(self.model),
            "d_model": self.model.cfg.d_model,
            "hooks": {name: {"d": width, "dtype": self.config.dtype} for name, width in self.widths.items()},
            "shards": [],
            "n_tokens": 0,
            "data_fingerprint": data_fingerprint(self.config.data),
            "versions": _library_versions(),
        }

    @property
    def manifest_path(self) -> Path:
        """``manifest.json``; with several ranks each keeps its own part until rank 0 merges them."""
        if self.world_size == 1:
            return self.directory / MANIFEST
        return self.directory / f"manifest.rank{self.rank}-of-{self.world_size}.json"

    def _load_or_create_manifest(self, path: Path) -> dict:
        if not path.exists():
            return self._fresh_manifest()
        manifest = read_manifest(self.directory, path).raw  # a truncated or garbled manifest: one clear error
        if manifest.get("config_hash") != self.config.config_hash():
            raise CacheError(
                f"{path} was written with a different configuration ({manifest.get('config')}); "
                "use another --cache-id, or delete that folder to start over"
            )
        if manifest.get("model_fingerprint") != model_fingerprint(self.model):
            raise CacheError(f"{path} was written by different model weights; use another --cache-id")
        recorded = manifest.get("data_fingerprint")
        changed = data_changes(recorded, self.config.data) if recorded is not None else None
        if changed:
            raise CacheError(f"the data '{self.config.data}' changed since {self.directory} was cached ({changed}), "
                             "so its activations are stale: delete that folder, or pass another --cache-id, to "
                             "cache the new data")
        return self._verified(manifest)

    def _verified(self, manifest: dict) -> dict:
        """``manifest`` without the shards whose files are missing or fail their checksum (they are computed
        again, as after a kill); each one dropped is noted in ``self.repaired``."""
        kept = []
        for shard in manifest["shards"]:
            bad = next((entry["path"] for entry in shard["files"].values()
                        if not (self.directory / entry["path"]).is_file()
                        or sha256_file(self.directory / entry["path"]) != entry["sha256"]), None)
            if bad is None:
                kept.append(shard)
            else:
                self.repaired.append(f"shard {shard['index']} ({bad} is missing or fails its checksum)")
        if len(kept) < len(manifest["shards"]):
            manifest = {**manifest, "shards": kept, "n_tokens": sum(s["n_tokens"] for s in kept),
                        "status": "running"}
            manifest.pop("exhausted_data", None)
        return manifest

    # -- compute --------------------------------------------------------------------------------
    def _windows(self, skip: int) -> Iterator[torch.Tensor]:
        windows = token_windows(self.config.data, self.model.tokenizer, self.config.context_size,
                                seed=self.config.seed, max_windows=self.config.n_windows)
        for index, window in enumerate(windows):
            if index >= skip:
                yield window

    def _compute_shard(self, index: int, windows: list[torch.Tensor]) -> _Shard:
        ctx = self.config.context_size
        n_tokens = len(windows) * ctx
        device = self.model.cfg.device
        shard = _Shard(  # activations fill on the model's device and come to the host once per shard, not per batch
            index=index,
            activations={name: torch.empty((n_tokens, width), dtype=self.storage_dtype, device=device)
                         for name, width in self.widths.items()},
            token_ids=torch.stack(windows).flatten(),
            sequence=torch.arange(len(windows)).repeat_interleave(ctx) + index * self.config.windows_per_shard,
            position=torch.arange(ctx).repeat(len(windows)),
            n_tokens=n_tokens,
        )
        cursor = 0

        def capture(activation, hook):
            flat = activation.detach().reshape(-1, self.widths[hook.name])
            shard.activations[hook.name][cursor:cursor + flat.shape[0]].copy_(flat)

        hooks = [(name, capture) for name in self.config.hooks]
        with torch.no_grad(), self.model.hooks(fwd_hooks=hooks):
            for batch in batched_windows(windows, self.config.batch_size):
                self.model(batch.to(device), stop_at_layer=self.stop_at_layer)
                cursor += batch.numel()
        shard.activations = {name: acts.cpu() for name, acts in shard.activations.items()}
        return shard

    def _write_shard(self, shard: _Shard, manifest: dict) -> None:
        files = {}
        for name, activations in shard.activations.items():
            relative = f"{name}/{shard_name(shard.index)}"
            digest = write_shard(self.directory / relative, {"activations": activations})
            files[name] = {"path": relative, "sha256": digest}
        relative = f"{TOKENS_DIR}/{shard_name(shard.index)}"
        token_tensors = {"token_ids": shard.token_ids, "sequence": shard.sequence, "position": shard.position}
        files[TOKENS_DIR] = {"path": relative, "sha256": write_shard(self.directory / relative, token_tensors)}
        manifest["shards"].append({"index": shard.index, "n_tokens": shard.n_tokens, "files": files})
        manifest["shards"].sort(key=lambda entry: entry["index"])  # a repaired shard goes back in its place
        manifest["n_tokens"] += shard.n_tokens
        atomic_write_json(self.manifest_path, manifest)

    def run(self, progress: bool = True, on_shard: Callable[[int], None] | None = None) -> Path:
        """Compute every missing shard; returns the cache directory. Safe to call again after a kill.

        A run that fails before its first shard removes the folder it created (nothing in it is worth
        keeping); a killed one leaves a ``running`` manifest that the same command resumes.
        """
        if self.world_size > 1:  # the ranks write one folder together, each its own shards and part manifest
            return self._run(progress, on_shard)
        created = not self.directory.exists()
        with writing(self.directory, "activation cache"):  # one writer per cache, before any write; a busy
            try:  # folder is refused here and never removed
                return self._run(progress, on_shard)
            except BaseException:
                if created and not any(self.directory.rglob("*.safetensors")):
                    shutil.rmtree(self.directory, ignore_errors=True)
                raise

    def _run(self, progress: bool, on_shard: Callable[[int], None] | None) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / MANIFEST
        if self.world_size > 1 and final.exists():
            self._load_or_create_manifest(final)  # refuses a different config or model
            if read_manifest(self.directory).complete:
                return self.directory
        manifest = self._load_or_create_manifest(self.manifest_path)
        if manifest["status"] == "complete":
            return self._merge_parts() if self.world_size > 1 and self.rank == 0 else self.directory
        done = {shard["index"] for shard in manifest["shards"]}
        todo = [i for i in range(self.config.n_shards) if i % self.world_size == self.rank and i not in done]
        atomic_write_json(self.manifest_path, manifest)
        first = todo[0] if todo else self.config.n_shards
        windows = self._windows(skip=first * self.config.windows_per_shard)
        pending: queue.Queue = queue.Queue(maxsize=1)
        failure: list[BaseException] = []

        def write_loop() -> None:
            while (shard := pending.get()) is not None:
                try:
                    if not failure:
                        self._write_shard(shard, manifest)
                        if on_shard is not None:
                            on_shard(shard.index)
                except BaseException as error:  # surfaced in the main thread
                    failure.append(error)

        writer = threading.Thread(target=write_loop, name="cache-writer", daemon=True)
        writer.start()
        total = self.config.n_windows * self.config.context_size // self.world_size
        rank = f" rank {self.rank}/{self.world_size}" if self.world_size > 1 else ""
        bar = tqdm(
            total=total,
            initial=manifest["n_tokens"],
            unit="tok",
            unit_scale=True,
            desc=f"cache {self.directory.name}{rank}",
            disable=not progress,
        )
        start, computed = time.perf_counter(), 0
        try:
            for index in range(first, self.config.n_shards):
                chunk = [w for _, w in zip(range(self.config.windows_per_shard), windows)]
                if not chunk:
                    manifest["exhausted_data"] = True
                    break
                if index not in todo:  # another rank's shard (or done): its windows are only skipped
                    continue
                shard = self._compute_shard(index, chunk)
                if failure:
                    break
                pending.put(shard)
                computed += shard.n_tokens
                bar.update(shard.n_tokens)
                bar.set_postfix(tok_per_s=f"{computed / (time.perf_counter() - start):,.0f}")
        finally:
            pending.put(None)
            writer.join()
            bar.close()
        if failure:
            raise failure[0]
        if self.world_size == 1 and manifest["n_tokens"] == 0:
            raise CacheError(f"data '{self.config.data}' yielded no full window of {self.config.context_size} tokens")
        manifest["status"] = "complete"
        atomic_write_json(self.manifest_path, manifest)
        return self._merge_parts() if self.world_size > 1 and self.rank == 0 else self.directory

    def _merge_parts(self, poll_seconds: float = 0.5) -> Path:
        """Rank 0: wait for every rank's complete part manifest, then write the one ``manifest.json``
        (shards in index order, exactly what one process would have written) and remove the parts."""
        parts = [self.directory / f"manifest.rank{r}-of-{self.world_size}.json" for r in range(self.world_size)]
        while True:
            loaded = [json.loads(p.read_text()) if p.exists() else None for p in parts]
            if all(part is not None and part["status"] == "complete" for part in loaded):
                break
            time.sleep(poll_seconds)
        shards = sorted((shard for part in loaded for shard in part["shards"]), key=lambda shard: shard["index"])
        if [shard["index"] for shard in shards] != list(range(len(shards))):
            raise CacheError(
                f"the ranks' shards of {self.directory} are not contiguous "
                f"({[shard['index'] for shard in shards]}); rerun the same command to fill the gaps"
            )
        if not shards:
            raise CacheError(f"data '{self.config.data}' yielded no full window of {self.config.context_size} tokens")
        manifest = {
            **loaded[0],
            "shards": shards,
            "n_tokens": sum(shard["n_tokens"] for shard in shards),
            "status": "complete",
        }
        manifest.pop("exhausted_data", None)
        if any(part.get("exhausted_data") for part in loaded):
            manifest["exhausted_data"] = True
        atomic_write_json(self.directory / MANIFEST, manifest)
        for part in parts:
            part.unlink()
        return self.directory


def rank_from_env() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` as ``torchrun`` sets them; ``(0, 1)`` outside it."""
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def build_cache(
    config: CacheConfig,
    root: Path | str = "cached_activations",
    cache_id: str | None = None,
    device: str | None = None,
    progress: bool = True,
    model=None,
    rank: int | None = None,
    world_size: int | None = None,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Create or resume the cache described by ``config``; returns its directory.

    Under ``torchrun`` (or given ``rank``/``world_size``) each process computes the shards whose index
    is its rank modulo the world size and records them in its own part manifest; rank 0 waits for
    all parts and writes ``manifest.json``. The files are byte-identical to a one-process cache. Every
    shard an existing manifest lists is verified first; a missing or damaged one is computed again (each
    one passed to ``report``).
    """
    env_rank, env_world = rank_from_env()
    rank, world_size = (env_rank if rank is None else rank), (env_world if world_size is None else world_size)
    writer = CacheWriter(
        config, root=root, cache_id=cache_id, device=device, model=model, rank=rank, world_size=world_size
    )
    directory = writer.run(progress=progress)
    for note in writer.repaired if report is not None else ():
        report(f"recomputed {note}")
    return directory
