"""Token windows: text sources streamed, tokenized and packed into BOS-prefixed windows.

A text spec is one of:
- ``demo``: the bundled Shakespeare corpus (``interp/demo/corpus``);
- a local ``.txt`` / ``.jsonl`` / ``.parquet`` file, or a directory of them;
- a Hugging Face dataset name (``name`` or ``name:config``), streamed through ``datasets``.

Documents are read one at a time, never the whole corpus, and packing is deterministic for a
given seed: the seed permutes document order inside a bounded buffer.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InputError

DEMO_CORPUS = Path(__file__).parent / "demo" / "corpus" / "shakespeare.jsonl.gz"
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet", ".jsonl.gz")
SHUFFLE_BUFFER_DOCS = 256
TEXT_FIELD = "text"


class DataSpecError(InputError):
    """A text spec that names nothing readable."""


def _jsonl_texts(path: Path) -> Iterator[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if TEXT_FIELD not in record:
                raise DataSpecError(
                    f"{path}:{line_number} has no '{TEXT_FIELD}' field; each JSONL record needs one"
                )
            yield record[TEXT_FIELD]


def _parquet_texts(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    if TEXT_FIELD not in parquet.schema_arrow.names:
        raise DataSpecError(
            f"{path} has no '{TEXT_FIELD}' column (columns: {parquet.schema_arrow.names})"
        )
    for batch in parquet.iter_batches(columns=[TEXT_FIELD], batch_size=256):
        yield from (text for text in batch.column(0).to_pylist() if text)


def _file_texts(path: Path) -> Iterator[str]:
    name = path.name
    if name.endswith(".txt"):
        yield path.read_text(encoding="utf-8", errors="replace")
    elif name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        yield from _jsonl_texts(path)
    elif name.endswith(".parquet"):
        yield from _parquet_texts(path)
    else:
        raise DataSpecError(f"{path}: unsupported file type; use one of {TEXT_SUFFIXES}")


def _hf_texts(spec: str) -> Iterator[str]:
    try:
        import datasets  # noqa: F401 - optional dependency
    except ImportError as error:
        raise DataSpecError(
            f"'{spec}' is neither 'demo' nor an existing file or directory, and the `datasets` "
            "package is not installed to read it as a Hugging Face dataset "
            "(pip install datasets, or pass a local .txt/.jsonl/.parquet path)"
        ) from error
    name, _, config = spec.partition(":")
    try:
        dataset = datasets.load_dataset(name, config or None, split="train", streaming=True)
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds; re-raise with guidance
        raise DataSpecError(
            f"could not open Hugging Face dataset '{spec}' ({error}); offline, only datasets "
            "already in the local Hugging Face cache can be read; or pass a local file"
        ) from error
    for record in dataset:
        yield record[TEXT_FIELD]


def iter_texts(spec: str | Path) -> Iterator[str]:
    """Yield the documents of a text spec one by one, in a fixed order."""
    if str(spec) == "demo":
        yield from _jsonl_texts(DEMO_CORPUS)
        return
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
        if not files:
            raise DataSpecError(f"directory {path} holds no {TEXT_SUFFIXES} files")
        for file in files:
            yield from _file_texts(file)
    elif path.is_file():
        yield from _file_texts(path)
    elif path.suffix in (".txt", ".jsonl", ".parquet", ".gz"):
        raise DataSpecError(f"text file {path} does not exist")
    else:
        yield from _hf_texts(str(spec))


def shuffled(items: Iterable[str], seed: int | None, buffer: int = SHUFFLE_BUFFER_DOCS) -> Iterator[str]:
    """Bounded-buffer shuffle: deterministic for a seed, identity order when seed is None."""
    if seed is None:
        yield from items
        return
    rng = random.Random(seed)
    pool: list[str] = []
    for item in items:
        pool.append(item)
        if len(pool) >= buffer:
            yield pool.pop(rng.randrange(len(pool)))
    rng.shuffle(pool)
    yield from pool


def bos_token_id(tokenizer) -> int:
    """The tokenizer's BOS id, or a clear error if it has none."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise DataSpecError("the tokenizer has no BOS token; windows are BOS-prefixed by design")
    return int(bos)


def pack_token_stream(
    token_lists: Iterable[list[int]], context_size: int, bos_id: int
) -> Iterator[Int[Tensor, "ctx"]]:
    """Pack documents' tokens into full windows: BOS then ``context_size - 1`` tokens.

    Documents are joined end to end (a BOS separates them inside a window); the tail that
    does not fill a window is dropped, so every window is full.
    """
    if context_size < 2:
        raise InputError(f"context_size must be >= 2, got {context_size}")
    body = context_size - 1
    pending: list[int] = []
    first = True
    for tokens in token_lists:
        if not first:
            pending.append(bos_id)
        first = False
        pending.extend(tokens)
        while len(pending) >= body:
            yield torch.tensor([bos_id, *pending[:body]], dtype=torch.long)
            del pending[:body]


def token_windows(
    spec: str | Path,
    tokenizer,
    context_size: int,
    seed: int | None = 0,
    max_windows: int | None = None,
) -> Iterator[Int[Tensor, "ctx"]]:
    """Stream BOS-prefixed, full ``[context_size]`` windows of token ids from a text spec."""
    bos_id = bos_token_id(tokenizer)
    texts = shuffled(iter_texts(spec), seed)
    token_lists = (tokenizer.encode(text, add_special_tokens=False) for text in texts)
    for index, window in enumerate(pack_token_stream(token_lists, context_size, bos_id)):
        if max_windows is not None and index >= max_windows:
            return
        yield window


def batched_windows(
    windows: Iterable[Int[Tensor, "ctx"]], batch_size: int
) -> Iterator[Int[Tensor, "batch ctx"]]:
    """Group windows into ``[batch, ctx]`` tensors (the last batch may be smaller)."""
    batch: list[Tensor] = []
    for window in windows:
        batch.append(window)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)
