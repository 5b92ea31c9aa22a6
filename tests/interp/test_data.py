"""Token windows: deterministic, BOS-prefixed, full, streamed from every kind of source."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from interp.models.data import DataSpecError, iter_texts, pack_token_stream, shuffled, token_windows
from interp.models.loading import demo_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return demo_tokenizer()


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_windows_are_bos_prefixed_and_full(tokenizer):
    windows = take(token_windows("demo", tokenizer, 64, seed=0), 50)
    assert all(w.shape == (64,) for w in windows)
    assert all(int(w[0]) == tokenizer.bos_token_id for w in windows)


def test_packing_is_deterministic_for_a_seed(tokenizer):
    first = torch.stack(take(token_windows("demo", tokenizer, 32, seed=3), 20))
    again = torch.stack(take(token_windows("demo", tokenizer, 32, seed=3), 20))
    other = torch.stack(take(token_windows("demo", tokenizer, 32, seed=4), 20))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_pack_keeps_every_token_in_order_and_drops_only_the_tail():
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    windows = list(pack_token_stream(docs, context_size=4, bos_id=1))
    # stream 5 6 7 BOS 8 9 BOS 10 11 12 13 -> bodies of 3 after each BOS; the tail 12 13 is dropped
    assert [w.tolist() for w in windows] == [[1, 5, 6, 7], [1, 1, 8, 9], [1, 1, 10, 11]]


def test_shuffle_is_a_permutation_and_none_keeps_order():
    items = [str(i) for i in range(1000)]
    mixed = list(shuffled(iter(items), seed=1, buffer=64))
    assert sorted(mixed) == sorted(items) and mixed != items
    assert list(shuffled(iter(items), seed=None)) == items


def test_local_txt_jsonl_parquet_and_directory(tmp_path, tokenizer):
    (tmp_path / "a.txt").write_text("hello world " * 50)
    with open(tmp_path / "b.jsonl", "w") as handle:
        for i in range(3):
            handle.write(json.dumps({"text": f"document {i} " * 40}) + "\n")
    pq.write_table(pa.table({"text": ["parquet row " * 30, "another row " * 30]}), tmp_path / "c.parquet")
    assert len(list(iter_texts(tmp_path / "a.txt"))) == 1
    assert len(list(iter_texts(tmp_path / "b.jsonl"))) == 3
    assert len(list(iter_texts(tmp_path / "c.parquet"))) == 2
    assert len(list(iter_texts(tmp_path))) == 6
    windows = list(token_windows(tmp_path, tokenizer, 16, seed=None))
    assert windows and all(w.shape == (16,) for w in windows)


def test_bad_specs_fail_clearly(tmp_path, tokenizer):
    with pytest.raises(DataSpecError, match="does not exist"):
        list(iter_texts(tmp_path / "missing.txt"))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataSpecError, match="no 'text' field"):
        list(iter_texts(tmp_path / "bad.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSpecError, match="holds no"):
        list(iter_texts(tmp_path / "empty"))


def test_demo_corpus_streams_without_loading_everything():
    texts = iter_texts("demo")
    first = next(texts)
    assert "Shakespeare" in first[:200]
