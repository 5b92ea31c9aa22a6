"""The activation cache's ``manifest.json``, read without torch into a checked ``CacheManifest``.

The cache writer (``interp.cache.writer``) writes the manifest; everything that only needs to know what a
cache holds (the app's listings and forms, the trainer's and the analyses' checks) reads it here, so a
truncated or hand-edited manifest is one clear error naming the file, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interp.store.io import FileReadError, read_json

MANIFEST = "manifest.json"


class ManifestError(FileReadError):
    """A cache manifest that is missing, not JSON, or not shaped as the writer writes it."""


@dataclass(frozen=True)
class CacheManifest:
    """What a cache holds: model, hooks (name -> width), tokens, status, shards (the manifest's own entries)."""

    path: Path
    status: str
    model: str
    hooks: dict[str, int]
    n_tokens: int
    config: dict
    shards: tuple[dict, ...]
    raw: dict

    @property
    def cache_id(self) -> str:
        return self.path.parent.name

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def manifest_path(folder: Path | str) -> Path:
    return Path(folder) / MANIFEST


def parse_manifest(raw, path: Path) -> CacheManifest:
    """``raw`` (parsed JSON) checked field by field; a bad shape raises ``ManifestError`` naming the field."""
    def bad(why: str) -> ManifestError:
        return ManifestError(f"cache manifest {path} is damaged ({why}); rerun the `workbench cache` command "
                             "that made it, or delete that cache folder")

    if not isinstance(raw, dict):
        raise bad(f"a JSON {type(raw).__name__}, not an object")
    config, hooks, shards = raw.get("config"), raw.get("hooks"), raw.get("shards", [])
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise bad("no 'config' object naming a 'model'")
    if not isinstance(hooks, dict) or not hooks or not all(
            isinstance(v, dict) and isinstance(v.get("d"), int) and v["d"] > 0 for v in hooks.values()):
        raise bad("'hooks' must map each hook name to its width 'd'")
    n_tokens, status = raw.get("n_tokens", 0), raw.get("status")
    if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens < 0:
        raise bad(f"'n_tokens' is {n_tokens!r}, not a count")
    if not isinstance(status, str):
        raise bad("no 'status'")
    if not isinstance(shards, list) or not all(isinstance(s, dict) and isinstance(s.get("files"), dict)
                                               for s in shards):
        raise bad("'shards' must be a list of shard entries")
    return CacheManifest(path, status, config["model"], {name: info["d"] for name, info in hooks.items()},
                         n_tokens, config, tuple(shards), raw)


def read_manifest(folder: Path | str, path: Path | str | None = None) -> CacheManifest:
    """The manifest of the cache in ``folder`` (or the part manifest at ``path``), checked."""
    path = Path(path) if path is not None else manifest_path(folder)
    try:
        raw = read_json(path, "cache manifest", ManifestError)
    except ManifestError as error:
        raise ManifestError(f"{error}; rerun the `workbench cache` command that made it (it resumes), or delete "
                            "that cache folder") from None
    return parse_manifest(raw, path)
