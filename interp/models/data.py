"""Token windows: text sources streamed, tokenized and packed into BOS-prefixed windows.

A text spec is one of:
- ``demo``: the bundled Shakespeare corpus (``interp/models/demo/corpus``);
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

from interp.store.errors import InputError
from interp.store.io import sha256_file

DEMO_CORPUS = Path(__file__).parent / "demo" / "corpus" / "shakespeare.jsonl.gz"
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet", ".jsonl.gz")
SHUFFLE_BUFFER_DOCS = 256
LARGE_TEXT_BYTES = 1 << 20  # a .txt file above this is read in pieces, not held (and tokenized) as one document
TEXT_PIECE_BYTES = 1 << 16  # the size of those pieces, cut at whitespace (or a UTF-8 character boundary)
TEXT_FIELD = "text"


class DataSpecError(InputError):
    """A text spec that names nothing readable."""


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _text(value, where: str) -> str:
    """A record's text, or an error naming the record: ``text`` must be a string."""
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise DataSpecError(f"{where}: '{TEXT_FIELD}' is {kind}, not a string; fix or drop that record")
    return value


def _decoded(raw: bytes, path: Path, line_number: int) -> str:
    """``raw`` as UTF-8, or an error naming the file, line and byte: binary data is never read as text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = line_number + raw[: error.start].count(b"\n")
        raise DataSpecError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); convert the file to "
                            "UTF-8, or remove it if it is not text") from None
    if "\x00" in text:
        line = line_number + raw[: raw.index(b"\x00")].count(b"\n")
        raise DataSpecError(f"{path}:{line}: holds NUL bytes, so it is binary data, not text; remove it")
    return text


def _cut(data: bytes) -> int:
    """Where to end a piece of ``data``: after its last whitespace in the second half, else before the last
    UTF-8 character start (never inside a character)."""
    cut = max(data.rfind(b"\n", len(data) // 2), data.rfind(b" ", len(data) // 2)) + 1
    if cut > 0:
        return cut
    cut = len(data) - 1
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut or len(data)


def _txt_texts(path: Path) -> Iterator[str]:
    """A text file as one document; a large one (a 10 MB single line, say) as pieces of about
    ``TEXT_PIECE_BYTES`` streamed from disk, so memory and tokenizing time stay bounded by what is used."""
    if path.stat().st_size <= LARGE_TEXT_BYTES:
        yield _decoded(path.read_bytes(), path, 1)
        return
    line, rest = 1, b""
    with open(path, "rb") as handle:
        while block := handle.read(TEXT_PIECE_BYTES):
            data = rest + block
            cut = _cut(data)
            piece, rest = data[:cut], data[cut:]
            yield _decoded(piece, path, line)
            line += piece.count(b"\n")
    if rest:
        yield _decoded(rest, path, line)


def _jsonl_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)``; a damaged gzip stream becomes an error naming the file."""
    import zlib

    opener = gzip.open if path.name.endswith(".gz") else open
    line_number = 0
    try:
        with opener(path, "rb") as handle:
            for line_number, line in enumerate(handle, 1):
                yield line_number, line
    except (OSError, EOFError, zlib.error) as error:
        raise DataSpecError(f"{path}:{line_number + 1}: cannot be read ({_first_line(error)}); is it a "
                            f"{'gzip-compressed ' if opener is gzip.open else ''}JSONL file?") from None


def _jsonl_texts(path: Path) -> Iterator[str]:
    for line_number, raw in _jsonl_records(path):
        line = _decoded(raw, path, line_number)
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, absurd numbers, absurd nesting
            reason = (
                f"{error.msg} at column {error.colno}"
                if isinstance(error, json.JSONDecodeError)
                else _first_line(error)
            )
            raise DataSpecError(
                f"{where}: not valid JSON ({reason}); each line of a "
                f'.jsonl file is one object like {{"{TEXT_FIELD}": "..."}}'
            ) from None
        if not isinstance(record, dict):
            raise DataSpecError(
                f"{where}: a JSON {type(record).__name__}, not an object; each line needs "
                f'the form {{"{TEXT_FIELD}": "..."}}'
            )
        if TEXT_FIELD not in record:
            raise DataSpecError(f"{where} has no '{TEXT_FIELD}' field; each JSONL record needs one")
        yield _text(record[TEXT_FIELD], where)


def _parquet_texts(path: Path) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataSpecError(
            f"{path} is not a readable Parquet file ({_first_line(error)}); rewrite it, or remove "
            "it from the data folder"
        ) from None
    if TEXT_FIELD not in schema.names:
        raise DataSpecError(f"{path} has no '{TEXT_FIELD}' column (columns: {schema.names})")
    kind = schema.field(TEXT_FIELD).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataSpecError(f"{path}: column '{TEXT_FIELD}' holds {kind}, not strings")
    row = 0
    try:
        for batch in parquet.iter_batches(columns=[TEXT_FIELD], batch_size=256):
            texts = batch.column(0).to_pylist()
            row += len(texts)
            yield from (text for text in texts if text)  # null rows carry no text: skipped
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataSpecError(
            f"{path}: rows after {row} cannot be read ({_first_line(error)}); the file is damaged: rewrite it"
        ) from None


def _file_texts(path: Path) -> Iterator[str]:
    name = path.name
    if name.endswith(".txt"):
        yield from _txt_texts(path)
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
    for index, record in enumerate(dataset):
        if TEXT_FIELD not in record:
            raise DataSpecError(f"dataset '{spec}' has no '{TEXT_FIELD}' column (record {index}: {sorted(record)})")
        yield _text(record[TEXT_FIELD], f"dataset '{spec}' record {index}")


def local_files(spec: str | Path) -> list[Path] | None:
    """The files a text spec reads, in reading order; None for a Hugging Face dataset name."""
    if str(spec) == "demo":
        return [DEMO_CORPUS]
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
        if not files:
            raise DataSpecError(f"directory {path} holds no {TEXT_SUFFIXES} files")
        return files
    if path.is_file():
        return [path]
    if path.suffix in (".txt", ".jsonl", ".parquet", ".gz"):
        raise DataSpecError(f"text file {path} does not exist")
    return None


def iter_texts(spec: str | Path) -> Iterator[str]:
    """Yield the documents of a text spec one by one, in a fixed order."""
    files = local_files(spec)
    if files is None:
        yield from _hf_texts(str(spec))
        return
    for file in files:
        yield from _file_texts(file)


def _file_entry(path: Path, name: str, content_hash: bool = True) -> dict:
    stat = path.stat()
    entry = {"name": name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {**entry, "sha256": sha256_file(path)} if content_hash else entry


def _names(spec: str | Path, files: list[Path]) -> list[str]:
    base = Path(spec) if Path(spec).is_dir() else None
    return [str(f.relative_to(base)) if base else f.name for f in files]


def data_fingerprint(spec: str | Path) -> dict:
    """What a text spec's local files are now (name, size, mtime, sha256 of each), so a cache can tell
    when its data changed; a Hugging Face dataset is recorded by name only (it cannot be hashed offline)."""
    files = local_files(spec)
    if files is None:
        return {"kind": "huggingface", "spec": str(spec)}
    return {"kind": "local", "files": [_file_entry(f, n) for f, n in zip(files, _names(spec, files))]}


def data_changes(recorded: dict, spec: str | Path) -> str | None:
    """Why ``spec``'s files differ from the ``recorded`` fingerprint (None when they are the same).

    A file whose size and mtime are unchanged is trusted; any other is hashed, so a copy or a ``touch``
    that keeps the content is not a change.
    """
    try:
        files = local_files(spec)
    except DataSpecError as error:
        return str(error)
    if recorded.get("kind") != ("huggingface" if files is None else "local"):
        return f"it was {recorded.get('kind')} data"
    if files is None:
        return None
    then = {entry["name"]: entry for entry in recorded["files"]}
    now = dict(zip(_names(spec, files), files))
    if set(then) != set(now):
        added, removed = sorted(set(now) - set(then)), sorted(set(then) - set(now))
        return "; ".join(
            filter(None, [f"new files {added}" if added else "", f"files gone {removed}" if removed else ""])
        )
    for name, path in now.items():
        quick = _file_entry(path, name, content_hash=False)
        if quick["size"] != then[name]["size"]:
            return f"{name} is {quick['size']} bytes, was {then[name]['size']}"
        if quick["mtime_ns"] != then[name]["mtime_ns"] and _file_entry(path, name)["sha256"] != then[name]["sha256"]:
            return f"the content of {name} changed"
    return None


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


def pack_token_stream(token_lists: Iterable[list[int]], context_size: int, bos_id: int) -> Iterator[Int[Tensor, "ctx"]]:
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


def batched_windows(windows: Iterable[Int[Tensor, "ctx"]], batch_size: int) -> Iterator[Int[Tensor, "batch ctx"]]:
    """Group windows into ``[batch, ctx]`` tensors (the last batch may be smaller)."""
    batch: list[Tensor] = []
    for window in windows:
        batch.append(window)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)
