"""Hostile cache options and stale data: one-line errors, and a cache never calls itself complete over
data that changed after it was written."""

from __future__ import annotations

import json
import os

import pytest

from interp.cache.format import MANIFEST, CacheError
from interp.cache.writer import CacheConfig, build_cache
from interp.store.errors import InputError
from tests.hostile.helpers import assert_one_line_error

HOOK = "blocks.0.hook_resid_post"


@pytest.mark.parametrize("options, expected", [
    (["--shard-tokens", "0"], "shard_tokens (0) must hold at least one window"),
    (["--shard-tokens", "-100"], "shard_tokens (-100)"),
    (["--shard-tokens", "100"], "shard_tokens (100) must hold at least one window of context_size 128"),
    (["--tokens", "0"], "n_tokens (--tokens) must be at least 1"),
    (["--batch-size", "-3"], "batch_size must be at least 1"),
    (["--context-size", "1"], "context_size must be at least 2"),
    (["--context-size", "100000"], "shard_tokens (65536) must hold at least one window of context_size 100000"),
    (["--context-size", "256"], "context_size 256 is longer than the model's context of 128 tokens"),
    (["--cache-id", "../escaped"], "cache id '../escaped' is not a folder name"),
    (["--cache-id", "."], "cache id '.' is not a folder name"),
])
def test_bad_cache_options_are_one_line_errors_and_write_nothing(tmp_path, options, expected):
    root = tmp_path / "ws" / "cached_activations"
    assert_one_line_error(["cache", "--root", root, "--device", "cpu", *options], expected)
    assert not root.exists() or not any(root.iterdir())
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "ws"])  # nothing escaped next to the root


def small_cache(tmp_path, model, data, **changes):
    config = CacheConfig(model="tiny", data=str(data), hooks=(HOOK,), n_tokens=32 * 8, context_size=32,
                         batch_size=4, shard_tokens=32 * 4, **changes)
    return build_cache(config, root=tmp_path / "caches", cache_id="c", device="cpu", progress=False, model=model)


def corpus(n_lines: int = 400) -> str:
    return "".join(f"line {i} of a small corpus with some words in it\n" for i in range(n_lines))


def test_changed_data_makes_a_complete_cache_refuse_to_call_itself_complete(tmp_path, tiny_model):
    data = tmp_path / "data.txt"
    data.write_text(corpus())
    directory = small_cache(tmp_path, tiny_model, data)
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["status"] == "complete"
    [entry] = manifest["data_fingerprint"]["files"]
    assert entry["name"] == "data.txt" and entry["size"] == data.stat().st_size and len(entry["sha256"]) == 64
    os.utime(data, ns=(1, 1))  # same content, new mtime: not a change (the content hash decides)
    assert small_cache(tmp_path, tiny_model, data) == directory
    data.write_text(corpus().replace("small", "SMALL"))  # same size, other content
    with pytest.raises(CacheError, match=r"data .* changed since .* content of data.txt changed.*delete that folder"):
        small_cache(tmp_path, tiny_model, data)
    data.write_text(corpus(401))
    with pytest.raises(CacheError, match="data.txt is .* bytes, was"):
        small_cache(tmp_path, tiny_model, data)


def test_changed_data_refuses_a_resume_too(tmp_path, tiny_model):
    data = tmp_path / "folder"
    data.mkdir()
    (data / "a.txt").write_text(corpus())
    directory = small_cache(tmp_path, tiny_model, data)
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest.update(status="running", shards=manifest["shards"][:1])  # as if killed after the first shard
    (directory / MANIFEST).write_text(json.dumps(manifest))
    (data / "b.txt").write_text(corpus())
    with pytest.raises(CacheError, match=r"new files \['b.txt'\]"):
        small_cache(tmp_path, tiny_model, data)
    (data / "b.txt").unlink()
    assert json.loads((small_cache(tmp_path, tiny_model, data) / MANIFEST).read_text())["status"] == "complete"


def test_a_cache_that_fails_before_its_first_shard_removes_its_folder(tmp_path, tiny_model):
    data = tmp_path / "tiny.txt"
    data.write_text("too short")
    with pytest.raises(CacheError, match="yielded no full window"):
        small_cache(tmp_path, tiny_model, data)
    assert not (tmp_path / "caches" / "c").exists()


def test_a_cache_id_is_a_name_in_the_api_too(tmp_path, tiny_model):
    config = CacheConfig(model="tiny", hooks=(HOOK,), n_tokens=64, context_size=32, shard_tokens=64)
    for bad in ("..", "../x", str(tmp_path / "abs"), ".hidden"):
        with pytest.raises(InputError, match="is not a folder name"):
            build_cache(config, root=tmp_path / "caches", cache_id=bad, progress=False, model=tiny_model)
    assert not (tmp_path / "caches").exists() and not (tmp_path / "x").exists()
