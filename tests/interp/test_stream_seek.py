"""Resume without replay: a store opened at batch N seeks there (simulating the buffer on row ids), yields the
batches an uninterrupted store yields after N, and fetches only the chunks still in the buffer at N."""

from __future__ import annotations

import pytest
import torch

from interp.cache.store import ActivationStore
from interp.cache.stream import LazyChunk, ShuffledStream


class CountingSource:
    """Chunks of uneven sizes (sizes known up front); counts the chunks actually fetched."""

    def __init__(self, sizes: list[int], d: int = 3):
        self.sizes, self.d, self.fetched = sizes, d, 0

    def __call__(self, epoch: int):
        for i, size in enumerate(self.sizes):
            def fetch(i=i, size=size):
                self.fetched += 1
                rows = torch.arange(size, dtype=torch.float32)[:, None] + 1000 * i + 100_000 * epoch
                return rows.expand(size, self.d) * torch.tensor([1.0, -1.0, 0.5])
            yield LazyChunk(size, fetch)


SIZES = [37, 5, 64, 23, 80, 11, 50, 9, 70, 40]  # 389 rows an epoch; batch 16, buffer 96


def stream(source, start: int = 0) -> ShuffledStream:
    return ShuffledStream(source, 3, batch_size=16, buffer_tokens=96, seed=3, start_batch=start)


def test_every_resume_point_continues_with_the_uninterrupted_batches():
    straight = stream(CountingSource(SIZES))
    expected = [next(straight) for _ in range(80)]  # about three epochs: mid-buffer, epoch ends, remainders
    for start in range(0, 60):
        resumed = stream(CountingSource(SIZES), start)
        got = [next(resumed) for _ in range(80 - start)]
        assert resumed.position == 80
        assert all(torch.equal(a, b) for a, b in zip(expected[start:], got, strict=True)), f"resume at {start}"


def test_a_seek_fetches_only_the_chunks_left_in_the_buffer():
    replay = CountingSource(SIZES)
    first = stream(replay)
    for _ in range(50):
        next(first)
    source = CountingSource(SIZES)
    resumed = stream(source, 50)
    next(resumed)
    # the buffer holds 96 rows: at most the chunks those rows come from, plus the one being read
    assert source.fetched <= 96 // min(SIZES) + 2
    assert source.fetched < replay.fetched / 2


def test_a_plain_tensor_source_still_resumes_exactly():
    data = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))

    def source(epoch):
        return iter([data[torch.randperm(300, generator=torch.Generator().manual_seed(epoch))]])

    straight = ShuffledStream(source, 4, 20, 80, seed=1)
    expected = [next(straight) for _ in range(40)]
    resumed = ShuffledStream(source, 4, 20, 80, seed=1, start_batch=17)
    assert all(torch.equal(a, next(resumed)) for a in expected[17:])


def test_a_chunk_that_lies_about_its_size_is_refused():
    from interp.cache.format import CacheError

    def source(epoch):
        yield LazyChunk(50, lambda: torch.zeros(40, 3))

    with pytest.raises(CacheError, match="announced 50 rows but holds 40"):
        next(ShuffledStream(source, 3, 8, 32))


def test_a_live_store_resumes_without_running_the_model_on_skipped_batches(tiny_model):
    """The forwards a seek runs depend on the buffer, not on how far it seeks; a replay's grow with the position."""
    calls = []
    handle = tiny_model.hook_embed.register_forward_hook(lambda *args: calls.append(1))
    args = dict(data="demo", context_size=32, batch_size=31, buffer_tokens=31 * 4, model_batch_size=2)

    def forwards(make) -> tuple[int, object]:
        calls.clear()
        result = make()
        return len(calls), result

    try:
        straight = ActivationStore.from_model(tiny_model, "blocks.0.hook_resid_post", **args)
        replay_forwards, expected = forwards(lambda: [next(straight) for _ in range(125)])
        calls.clear()
        replayed = ActivationStore.from_model(tiny_model, "blocks.0.hook_resid_post", **args)
        for _ in range(121):
            next(replayed)
        replay_to_120 = len(calls)
        seeks = {}
        for start in (25, 120):
            resumed = ActivationStore.from_model(tiny_model, "blocks.0.hook_resid_post", start_batch=start, **args)
            seeks[start], first = forwards(lambda resumed=resumed: next(resumed))
            got = [first] + [next(resumed) for _ in range(124 - start)]
            assert all(torch.equal(a, b) for a, b in zip(expected[start:], got, strict=True)), start
    finally:
        handle.remove()
    # a seek fetches the chunks whose rows are still in the 124-row buffer (a few, each 62 rows): as many at 120 as
    # at 25, against the ~60 forwards a replay to batch 120 runs
    assert max(seeks.values()) <= 12 and abs(seeks[120] - seeks[25]) <= 6
    assert seeks[120] < replay_to_120 / 4 and replay_forwards >= replay_to_120
