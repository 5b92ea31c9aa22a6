"""The one place that writes result files atomically and reads JSON with checks.

Every writer puts the new file under a temporary name beside the target and ``os.replace``\\s it,
so a reader sees the old file or the new one, never half of one. ``durable`` writes also fsync
the file and its folder (the activation cache's shards and manifest, which a killed run resumes
from). Every temporary name is unique (``.<name>.<pid>.<random>.tmp``: two processes never share
one), and ``sweep_temporary`` removes those whose writer is gone (the folder lock,
``interp.store.locks``, calls it when a writer takes a folder). Imports stay light (no torch) so that
table readers can use this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from interp.store.errors import InputError

# a temporary file: ``.<target name>.<writer pid>.<8 hex>.tmp``, or ``<name>.tmp`` as older versions named it
TMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")
LEGACY_TMP = re.compile(r".+\.(json|safetensors|parquet)\.tmp")
ROW_GROUP_ROWS = 2048  # small row groups + rows sorted by feature: a one-feature query reads ~one group


class FileReadError(InputError):
    """A file the workbench wrote that is missing or cannot be parsed; the message names it."""


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """A unique temporary name beside ``path`` (pid + random: concurrent writers never collide)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temporary(folder: Path | str) -> list[Path]:
    """Remove the temporary files under ``folder`` whose writer process is gone (left by a kill); returns them."""
    removed = []
    for path in Path(folder).rglob("*.tmp"):
        match = TMP.fullmatch(path.name)
        legacy = match is None and LEGACY_TMP.fullmatch(path.name) is not None
        dead = legacy or (match is not None and not _alive(int(match["pid"])))
        if dead and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def replace_atomically(path: Path | str, write: Callable[[Path], None], durable: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``; on any error
    the temporary file is removed and the old ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)
    return path


def write_bytes(path: Path | str, data: bytes, durable: bool = False) -> Path:
    return replace_atomically(path, lambda tmp: tmp.write_bytes(data), durable)


def write_json(path: Path | str, payload, durable: bool = False, sort_keys: bool = True) -> Path:
    """``payload`` as indented JSON (keys sorted unless ``sort_keys=False`` keeps the caller's order)."""
    text = json.dumps(payload, indent=2, sort_keys=sort_keys) + "\n"
    return write_bytes(path, text.encode(), durable)


def write_parquet(frame, path: Path | str, by_feature: bool = True) -> Path:
    """``frame`` as a Parquet file, atomically.

    With ``by_feature``, a table with a ``feature`` column is stably sorted by it and cut into small
    row groups, so DuckDB skips every group whose min/max statistics exclude the feature asked for:
    looking up one feature costs the same on a 1k- or a 64k-feature SAE. Without it the rows are
    stored in the caller's order.
    """
    if by_feature and "feature" in frame.columns:
        frame = frame.sort_values("feature", kind="stable")
        return replace_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False, row_group_size=ROW_GROUP_ROWS))
    return replace_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_tables(tables: dict, folder: Path | str, by_feature: bool = True) -> Path:
    """Each frame as ``<folder>/<name>.parquet`` (each written atomically); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        write_parquet(frame, folder / f"{name}.parquet", by_feature)
    return folder


def write_safetensors(path: Path | str, tensors: dict, metadata: dict[str, str] | None = None,
                      durable: bool = False, return_bytes: bool = False) -> bytes | Path:
    """Tensors as a safetensors file, atomically. Streamed to disk (no in-memory copy of the whole file:
    a large checkpoint would double its peak memory), or, with ``return_bytes``, built in memory and
    returned (the cache checksums its bounded shards that way without reading them back)."""
    from safetensors.torch import save, save_file

    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    if return_bytes:
        data = save(tensors, metadata=metadata)
        write_bytes(path, data, durable)
        return data
    return replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), durable)


def read_json(path: Path | str, what: str = "file", error: type[Exception] = FileReadError):
    """A JSON file written by the workbench; a missing or unparsable one raises ``error`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{what} {path} is not valid JSON ({problem})") from problem


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
