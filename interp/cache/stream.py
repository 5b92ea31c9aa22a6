"""``ShuffledStream`` (``interp.cache.store.ActivationStore``'s engine): shuffled ``[batch, d]`` training batches
through a bounded shuffle buffer, endlessly (epochs),
from cache shards, live from a model, or from a tensor in memory.

Its position is one integer, and a store opened at ``start_batch=N`` seeks there instead of replaying: the buffer's
control flow depends only on the chunks' sizes, so the first N batches are simulated on row ids (which chunk, which
row) without reading a shard or running a forward pass, and only the chunks whose rows still sit in the buffer at N
are then fetched (at most a buffer's worth). The batches after N equal those of an uninterrupted store exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.cache.format import CacheError
from interp.store.errors import InputError

ROW_BITS = 32  # a row id packs (chunk serial << ROW_BITS) | row within the chunk


@dataclass
class LazyChunk:
    """``size`` rows of the stream, known before they are read or computed; ``data()`` fetches them once."""

    size: int
    fetch: Callable[[], Float[Tensor, "size d"]]
    _data: Tensor | None = field(default=None, repr=False)

    def data(self) -> Float[Tensor, "size d"]:
        if self._data is None:
            self._data = self.fetch()
            if self._data.shape[0] != self.size:
                raise CacheError(f"a chunk announced {self.size} rows but holds {self._data.shape[0]}")
        return self._data


def as_lazy(chunk: LazyChunk | Tensor) -> LazyChunk:
    """A plain tensor chunk (a source that computes as it goes) as an already-fetched ``LazyChunk``."""
    return chunk if isinstance(chunk, LazyChunk) else LazyChunk(chunk.shape[0], lambda: chunk, chunk)


class _Values:
    """The real shuffle buffer: activations."""

    def __init__(self, rows: int, d: int):
        self.values = torch.empty((rows, d))

    def write(self, at: int, chunk: LazyChunk, serial: int, offset: int, take: int) -> None:
        self.values[at : at + take] = chunk.data()[offset : offset + take]

    def gather(self, index: Int[Tensor, " n"]) -> Float[Tensor, "n d"]:
        return self.values[index]

    def keep(self, index: Int[Tensor, " n"]) -> None:
        self.values[: len(index)] = self.values[index]


class _RowIds:
    """The buffer while seeking: where each row came from, and the chunks that rows still point into."""

    def __init__(self, rows: int):
        self.ids = torch.empty(rows, dtype=torch.long)
        self.chunks: dict[int, LazyChunk] = {}

    def write(self, at: int, chunk: LazyChunk, serial: int, offset: int, take: int) -> None:
        self.chunks[serial] = chunk
        self.ids[at : at + take] = (serial << ROW_BITS) + torch.arange(offset, offset + take)

    def gather(self, index: Int[Tensor, " n"]) -> None:
        return None  # a skipped batch is never looked at

    def keep(self, index: Int[Tensor, " n"]) -> None:
        self.ids[: len(index)] = self.ids[index]
        live = set((self.ids[: len(index)] >> ROW_BITS).unique().tolist())
        self.chunks = {serial: chunk for serial, chunk in self.chunks.items() if serial in live}

    def materialise(self, filled: int, d: int) -> _Values:
        """The activations buffer these ids stand for: each chunk still referenced is fetched once."""
        values = _Values(self.ids.shape[0], d)
        ids = self.ids[:filled]
        serials = ids >> ROW_BITS
        for serial in serials.unique().tolist():
            where = torch.nonzero(serials == serial).flatten()
            values.values[where] = self.chunks[serial].data()[ids[where] & ((1 << ROW_BITS) - 1)]
        return values


class ShuffledStream:
    """Shuffled ``[batch, d]`` batches through a bounded shuffle buffer, endlessly (epochs).

    ``chunk_source(epoch)`` yields ``LazyChunk``s (sizes known up front: seeking fetches nothing it skips) or plain
    tensors (computed as they are enumerated). ``position`` counts batches yielded; a store built with the same
    arguments and ``start_batch=position`` continues with exactly the batches an uninterrupted one would give.
    """

    def __init__(
        self,
        chunk_source: Callable[[int], Iterator[LazyChunk | Tensor]],
        d_in: int,
        batch_size: int = 4096,
        buffer_tokens: int = 262_144,
        seed: int = 0,
        start_batch: int = 0,
        max_epochs: int | None = None,
    ):
        if buffer_tokens < 2 * batch_size:
            raise InputError(f"buffer_tokens ({buffer_tokens}) must be at least twice batch_size ({batch_size})")
        self._chunk_source = chunk_source
        self.d_in = d_in
        self.batch_size = batch_size
        self.buffer_tokens = buffer_tokens
        self.seed = seed
        self.max_epochs = max_epochs
        self.start_batch = start_batch
        self.position = start_batch
        self._iterator = self._batches()

    def _batches(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        buffer: _Values | _RowIds = (
            _RowIds(self.buffer_tokens) if self.start_batch else _Values(self.buffer_tokens, self.d_in)
        )
        skipped, serial, epoch = 0, 0, 0

        def emit(batch_of):
            """The batch at this point of the stream, or None while seeking (then the buffer may turn real)."""
            nonlocal skipped
            if skipped < self.start_batch:
                skipped += 1
                return None
            return batch_of(buffer)

        while self.max_epochs is None or epoch < self.max_epochs:
            filled, yielded_any = 0, False
            for chunk in map(as_lazy, self._chunk_source(epoch)):
                serial += 1
                offset = 0
                while offset < chunk.size:
                    take = min(self.buffer_tokens - filled, chunk.size - offset)
                    buffer.write(filled, chunk, serial, offset, take)
                    filled += take
                    offset += take
                    if filled == self.buffer_tokens:
                        # the batches of the permuted buffer, gathered through the permutation: no second
                        # full-size buffer (the permuted copy doubled the store's peak memory)
                        order = torch.randperm(filled, generator=generator)
                        half = (filled // 2 // self.batch_size) * self.batch_size
                        for start in range(0, half, self.batch_size):
                            yielded_any = True
                            index = order[start : start + self.batch_size]
                            batch = emit(lambda b, index=index: b.gather(index))
                            if batch is not None:
                                yield batch
                            buffer = self._maybe_materialise(buffer, skipped, filled)
                        buffer.keep(order[half:filled])
                        filled -= half
            if filled:
                order = torch.randperm(filled, generator=generator)
                rest = None
                for start in range(0, filled - self.batch_size + 1, self.batch_size):
                    yielded_any = True
                    if skipped >= self.start_batch and rest is None:
                        rest = buffer.gather(order)
                    batch = emit(lambda b, start=start, rest=rest: rest[start : start + self.batch_size].clone())
                    if batch is not None:
                        yield batch
                    buffer = self._maybe_materialise(buffer, skipped, filled)
            if not yielded_any:
                raise CacheError(f"the data holds fewer than {self.batch_size} activations: no batch to yield")
            epoch += 1

    def _maybe_materialise(self, buffer: _Values | _RowIds, skipped: int, filled: int) -> _Values | _RowIds:
        """Once the seek has skipped ``start_batch`` batches, the id buffer becomes the real one."""
        if isinstance(buffer, _RowIds) and skipped == self.start_batch:
            return buffer.materialise(filled, self.d_in)
        return buffer

    def __iter__(self) -> ShuffledStream:
        return self

    def __next__(self) -> Float[Tensor, "batch d"]:
        batch = next(self._iterator)
        self.position += 1
        return batch

    def next_batch(self) -> Float[Tensor, "batch d"]:
        return next(self)
