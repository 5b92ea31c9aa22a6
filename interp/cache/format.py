"""On-disk primitives of the activation cache: atomic writes, checksums, memory-mapped shards.

A shard is a safetensors file, written durably through ``interp.store.io`` (temporary name, fsync,
rename), so a reader never sees half a file; readers memory-map the data region after checking the
header and the file size, so a truncated or corrupted shard fails with the file's name.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import torch

from interp.store.cache_manifest import MANIFEST  # noqa: F401 - re-exported: the writer and readers name it by this
from interp.store.errors import CacheError  # noqa: F401 - re-exported: the cache's readers raise it
from interp.store.io import sha256_file, write_json, write_safetensors  # noqa: F401  (sha256_file: part of this API)

TOKENS_DIR = "tokens"
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SAFETENSORS_DTYPES = {
    "F32": (np.float32, None),
    "F16": (np.float16, None),
    "BF16": (np.uint16, torch.bfloat16),
    "I64": (np.int64, None),
    "I32": (np.int32, None),
}


def atomic_write_json(path: Path, payload: dict) -> None:
    """The manifest's writer: sorted, indented JSON, fsynced (``interp.store.io.write_json``, durable)."""
    write_json(path, payload, durable=True)


def write_shard(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Atomically and durably write a safetensors shard; returns its sha256."""
    return hashlib.sha256(write_safetensors(path, tensors, durable=True, return_bytes=True)).hexdigest()


def read_header(path: Path) -> tuple[dict, int]:
    """Parse a safetensors header; returns (header, data_offset). Checks the file size."""
    if not path.exists():
        raise CacheError(f"shard {path} is missing")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CacheError(f"shard {path} is truncated ({size} bytes)")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > size - 8:
            raise CacheError(f"shard {path} is truncated or not a safetensors file")
        try:
            header = json.loads(handle.read(header_length))
        except json.JSONDecodeError as error:
            raise CacheError(f"shard {path} has a corrupted header ({error})") from error
    data_offset = 8 + header_length
    data_end = max((info["data_offsets"][1] for name, info in header.items() if name != "__metadata__"), default=0)
    if size != data_offset + data_end:
        raise CacheError(f"shard {path} is truncated: {size} bytes, header expects {data_offset + data_end}")
    return header, data_offset


def memmap_tensor(path: Path, name: str) -> torch.Tensor:
    """A read-only memory-mapped view of one tensor of a safetensors file."""
    header, data_offset = read_header(path)
    if name not in header:
        raise CacheError(
            f"shard {path} holds no tensor '{name}' (has {sorted(k for k in header if k != '__metadata__')})"
        )
    info = header[name]
    if info["dtype"] not in SAFETENSORS_DTYPES:
        raise CacheError(f"shard {path}: unsupported dtype {info['dtype']}")
    numpy_dtype, view_dtype = SAFETENSORS_DTYPES[info["dtype"]]
    start, end = info["data_offsets"]
    shape = tuple(info["shape"])
    count = int(np.prod(shape)) if shape else 1
    if (end - start) != count * np.dtype(numpy_dtype).itemsize:
        raise CacheError(f"shard {path}: tensor '{name}' size does not match its shape {shape}")
    array = np.memmap(path, dtype=numpy_dtype, mode="r", offset=data_offset + start, shape=shape)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmap: torch warns it is not writable
        tensor = torch.from_numpy(array)
    return tensor.view(view_dtype) if view_dtype is not None else tensor


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"
