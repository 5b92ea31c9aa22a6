"""Hostile data files: every reader turns bad bytes into an InputError naming the file (and line), never a
traceback or text made of garbage; a property loop over random and mutated bytes checks every reader."""

from __future__ import annotations

import gzip
import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interp.models.data import DataSpecError, iter_texts
from interp.store.errors import InputError
from tests.hostile.helpers import assert_one_line_error


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


GOOD_JSONL = b'{"text": "first line"}\n{"text": "second"}\n'
BAD_FILES = {  # name -> (bytes, what the error must say)
    "binary.jsonl": (bytes(range(128, 256)) * 4, ":1: not UTF-8"),
    "garbage.parquet": (b"PAR1" + bytes(range(256)) * 3, "not a readable Parquet file"),
    "malformed.jsonl": (GOOD_JSONL + b'{"text": "unterminated\n', ":3: not valid JSON"),
    "null.jsonl": (GOOD_JSONL + b'{"text": null}\n', ":3: 'text' is null"),
    "number.jsonl": (b'{"text": 12345}\n', ":1: 'text' is int"),
    "bare.jsonl": (b"42\n", ":1: a JSON int, not an object"),
    "list.jsonl": (b'["text"]\n', ":1: a JSON list"),
    "nested.jsonl": (b"[" * 100_000 + b"\n", ":1: not valid JSON"),
    "random.txt": (random.Random(1).randbytes(4096), "not UTF-8"),
    "later_line.txt": ("line one\nline two\n".encode() + b"\xff\xfe" + b"\n", ":3: not UTF-8"),
    "nul.txt": (b"looks like text\x00\x00\x01", "NUL bytes"),
    "garbage.jsonl.gz": (b"\x1f\x8b" + bytes(200), "cannot be read"),
    "truncated.jsonl.gz": (gzip.compress(GOOD_JSONL * 50)[:-20], "cannot be read"),
    "int_column.parquet": (parquet_bytes(pa.table({"text": [1, 2, 3]})), "column 'text' holds int64"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_data_file_is_an_input_error_naming_the_file(tmp_path, name):
    content, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataSpecError) as error:
        list(iter_texts(path))
    message = str(error.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_a_bad_file_inside_a_data_folder_is_named(tmp_path):
    (tmp_path / "a_good.jsonl").write_bytes(GOOD_JSONL)
    (tmp_path / "b_bad.jsonl").write_bytes(b'{"text": "ok"}\n\n7\n')
    with pytest.raises(DataSpecError, match=r"b_bad\.jsonl:3: a JSON int"):
        list(iter_texts(tmp_path))


def test_null_rows_of_a_parquet_text_column_are_skipped_and_strings_kept(tmp_path):
    path = tmp_path / "ok.parquet"
    path.write_bytes(parquet_bytes(pa.table({"text": ["a b", None, "c"]})))
    assert list(iter_texts(path)) == ["a b", "c"]


def test_the_cache_command_reports_a_bad_data_file_in_one_line_and_leaves_no_folder(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_bytes(GOOD_JSONL * 3 + b"{oops\n")
    root = tmp_path / "caches"
    assert_one_line_error(["cache", "--data", data, "--root", root, "--tokens", "4096", "--context-size", "32",
                           "--cache-id", "bad", "--device", "cpu"], f"{data}:7: not valid JSON")
    assert not (root / "bad").exists()  # a failed command leaves no half-made cache behind


# -- property: random and mutated bytes -----------------------------------------------------------------

SEEDS = range(150)


def valid_samples() -> dict[str, bytes]:
    text = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n"
    jsonl = "".join(json.dumps({"text": line}) + "\n" for line in text.splitlines()).encode()
    return {".txt": text.encode(), ".jsonl": jsonl, ".jsonl.gz": gzip.compress(jsonl),
            ".parquet": parquet_bytes(pa.table({"text": text.splitlines()}))}


def mutated(rng: random.Random, sample: bytes) -> bytes:
    """Random bytes, or a valid file truncated, with bytes flipped, or with random bytes spliced in."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 600))
    data = bytearray(sample)
    if kind == 1:
        return bytes(data[: rng.randrange(len(data))])
    if kind == 2:
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    at = rng.randrange(len(data))
    return bytes(data[:at]) + rng.randbytes(rng.randrange(1, 40)) + bytes(data[at:])


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".jsonl.gz", ".parquet"])
def test_every_reader_yields_strings_or_an_input_error_on_random_bytes(tmp_path, suffix):
    sample = valid_samples()[suffix]
    outcomes = {"read": 0, "refused": 0}
    for seed in SEEDS:
        path = tmp_path / f"case{seed}{suffix}"
        path.write_bytes(mutated(random.Random(seed), sample))
        try:
            texts = list(iter_texts(path))
        except InputError as error:
            assert str(path) in str(error), error
            outcomes["refused"] += 1
        else:
            assert all(isinstance(t, str) and "\x00" not in t for t in texts)
            outcomes["read"] += 1
        path.unlink()
    assert outcomes["refused"] > 0  # the loop did reach the error paths
