"""Activation cache: round trip, resume after SIGKILL, verification, errors, bounded reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from interp.cache.format import MANIFEST, CacheError, atomic_write_json
from interp.cache.store import ActivationStore, CacheFolder
from interp.cache.writer import CacheConfig, build_cache, stop_layer_for
from interp.models.data import batched_windows, token_windows
from interp.models.loading import ModelSpecError

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.0.attn.hook_z")


def tiny_config(**overrides) -> CacheConfig:
    values = dict(model="tiny-test", data="demo", hooks=HOOKS, n_tokens=32 * 40, context_size=32,
                  batch_size=4, shard_tokens=32 * 8, dtype="float32", seed=0)
    values.update(overrides)
    return CacheConfig(**values)


def shard_digests(directory: Path) -> list[dict]:
    manifest = json.loads((directory / MANIFEST).read_text())
    return [{key: value["sha256"] for key, value in shard["files"].items()} for shard in manifest["shards"]]


def test_round_trip_equals_run_with_cache(tmp_path, tiny_model):
    config = tiny_config()
    directory = build_cache(config, root=tmp_path, cache_id="c", progress=False, model=tiny_model)
    cache = CacheFolder(directory)
    assert cache.n_tokens == 32 * 40 and cache.n_shards == 5
    windows = torch.stack(list(token_windows("demo", tiny_model.tokenizer, 32, seed=0, max_windows=40)))
    with torch.no_grad():
        _, reference = tiny_model.run_with_cache(windows, names_filter=lambda name: name in HOOKS)
    for hook in HOOKS:
        expected = reference[hook].reshape(40 * 32, -1)
        torch.testing.assert_close(cache.read_all(hook), expected, rtol=1e-5, atol=1e-5)
    tokens = torch.cat([cache.tokens(i)["token_ids"] for i in range(cache.n_shards)])
    assert torch.equal(tokens, windows.flatten())
    positions = torch.cat([cache.tokens(i)["position"] for i in range(cache.n_shards)])
    sequences = torch.cat([cache.tokens(i)["sequence"] for i in range(cache.n_shards)])
    assert torch.equal(positions, torch.arange(32).repeat(40))
    assert torch.equal(sequences, torch.arange(40).repeat_interleave(32))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_storage(tmp_path, tiny_model, dtype):
    config = tiny_config(dtype=dtype, hooks=("blocks.0.hook_resid_post",), n_tokens=32 * 8)
    directory = build_cache(config, root=tmp_path, cache_id=dtype, progress=False, model=tiny_model)
    stored = CacheFolder(directory).activations("blocks.0.hook_resid_post", 0)
    assert stored.dtype == getattr(torch, dtype)
    full = build_cache(tiny_config(hooks=("blocks.0.hook_resid_post",), n_tokens=32 * 8), root=tmp_path,
                       cache_id="f32", progress=False, model=tiny_model)
    reference = CacheFolder(full).activations("blocks.0.hook_resid_post", 0)
    torch.testing.assert_close(stored.float(), reference, rtol=2e-2, atol=2e-2)


def test_forward_stops_after_last_needed_layer():
    assert stop_layer_for(("blocks.0.hook_resid_post",)) == 1
    assert stop_layer_for(("blocks.0.hook_resid_post", "blocks.2.attn.hook_z")) == 3
    assert stop_layer_for(("blocks.3.hook_resid_post",)) == 4  # skips ln_final + unembed
    assert stop_layer_for(("hook_embed",)) == 0
    assert stop_layer_for(("ln_final.hook_normalized",)) is None


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_model
    from interp.cache.writer import CacheConfig, CacheWriter
    import interp.store.io as atomic_io
    config = CacheConfig(**{config!r})
    mode = {mode!r}
    if mode == "during_rename":
        real_replace, calls = os.replace, []
        def dying_replace(src, dst):
            calls.append(dst)
            if len(calls) == 7:   # shard 1's first file is on disk under its temporary name
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
        atomic_io.os.replace = dying_replace
    def on_shard(index):
        if mode == "after_shard" and index == 1:   # shard 1 written; the main thread is mid-shard 2
            os.kill(os.getpid(), signal.SIGKILL)
    CacheWriter(config, root={root!r}, cache_id="c", model=make_tiny_model()).run(progress=False, on_shard=on_shard)
""")


@pytest.mark.parametrize("mode", ["after_shard", "during_rename"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_model, mode):
    from dataclasses import asdict

    config = tiny_config()
    reference = build_cache(config, root=tmp_path / "ref", cache_id="c", progress=False, model=tiny_model)
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parents[1]), config=asdict(config),
                                mode=mode, root=str(tmp_path / "killed"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]
    killed = tmp_path / "killed" / "c"
    with pytest.raises(CacheError, match="incomplete"):
        CacheFolder(killed)
    partial = json.loads((killed / MANIFEST).read_text())
    assert 0 < len(partial["shards"]) < config.n_shards
    resumed = build_cache(config, root=tmp_path / "killed", cache_id="c", progress=False, model=tiny_model)
    assert shard_digests(resumed) == shard_digests(reference)
    cache = CacheFolder(resumed)
    tokens = torch.cat([cache.tokens(i)["sequence"] * 32 + cache.tokens(i)["position"] for i in range(cache.n_shards)])
    assert torch.equal(tokens.sort().values, torch.arange(config.n_windows * 32))  # every token exactly once
    assert not list(killed.rglob("*.tmp"))  # a temporary file left by the kill was replaced, never read


def test_corrupted_truncated_and_missing_shards_are_detected(tmp_path, tiny_model):
    directory = build_cache(tiny_config(), root=tmp_path, cache_id="c", progress=False, model=tiny_model)
    hook = HOOKS[0]
    shard0 = directory / hook / "shard_00000.safetensors"
    data = bytearray(shard0.read_bytes())
    data[-5] ^= 0xFF
    shard0.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="shard_00000.*fails its checksum"):
        CacheFolder(directory).activations(hook, 0)
    shard1 = directory / hook / "shard_00001.safetensors"
    shard1.write_bytes(shard1.read_bytes()[:-100])
    with pytest.raises(CacheError, match="shard_00001"):
        CacheFolder(directory).activations(hook, 1)
    with pytest.raises(CacheError, match="truncated"):
        CacheFolder(directory, verify=False).activations(hook, 1)
    (directory / hook / "shard_00002.safetensors").unlink()
    with pytest.raises(CacheError, match="shard_00002.*missing"):
        CacheFolder(directory).activations(hook, 2)
    with pytest.raises(CacheError, match="no hook 'blocks.9.hook_resid_post'"):
        CacheFolder(directory).activations("blocks.9.hook_resid_post", 0)


def test_shape_or_dtype_mismatch_with_manifest_is_detected(tmp_path, tiny_model):
    directory = build_cache(tiny_config(n_tokens=32 * 8), root=tmp_path, cache_id="c", progress=False, model=tiny_model)
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["hooks"][HOOKS[0]]["dtype"] = "float16"
    atomic_write_json(directory / MANIFEST, manifest)
    with pytest.raises(CacheError, match="manifest says"):
        CacheFolder(directory).activations(HOOKS[0], 0)


def test_unknown_hook_lists_valid_names(tmp_path, tiny_model):
    with pytest.raises(ModelSpecError, match="unknown hook.*blocks.0.hook_resid_post"):
        build_cache(tiny_config(hooks=("blocks.0.hook_nonsense",)), root=tmp_path, progress=False, model=tiny_model)


def test_resume_with_a_changed_config_is_refused(tmp_path, tiny_model):
    build_cache(tiny_config(n_tokens=32 * 8), root=tmp_path, cache_id="c", progress=False, model=tiny_model)
    with pytest.raises(CacheError, match="different configuration"):
        build_cache(tiny_config(n_tokens=32 * 16), root=tmp_path, cache_id="c", progress=False, model=tiny_model)


def test_unwritable_directory_leaves_no_corrupt_manifest(tmp_path, tiny_model, monkeypatch):
    config = tiny_config()
    directory = tmp_path / "c"
    calls = []
    import interp.store.io as atomic_io

    real_replace = os.replace

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) > 6:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        build_cache(config, root=tmp_path, cache_id="c", progress=False, model=tiny_model)
    monkeypatch.undo()
    manifest = json.loads((directory / MANIFEST).read_text())  # still valid JSON
    assert manifest["status"] == "running"
    for shard in manifest["shards"]:  # every shard the manifest lists is whole
        for entry in shard["files"].values():
            assert (directory / entry["path"]).exists()
    assert not list(directory.rglob("*.tmp"))
    resumed = build_cache(config, root=tmp_path, cache_id="c", progress=False, model=tiny_model)
    assert CacheFolder(resumed).n_tokens == config.n_windows * 32


def test_store_batches_are_a_bounded_shuffle_of_the_cache(tmp_path, tiny_model):
    directory = build_cache(tiny_config(), root=tmp_path, cache_id="c", progress=False, model=tiny_model)
    hook = HOOKS[0]
    cache = CacheFolder(directory)
    keep = torch.cat([cache.tokens(i)["position"] != 0 for i in range(cache.n_shards)])
    everything = cache.read_all(hook)[keep]
    store = ActivationStore.from_cache(cache, hook, batch_size=31, buffer_tokens=31 * 8, seed=0, max_epochs=1)
    batches = list(store)
    seen = torch.cat(batches)
    assert all(b.shape == (31, 32) for b in batches)
    assert seen.shape[0] == (everything.shape[0] // 31) * 31
    # the yielded rows are a sub-multiset of the cached rows (identical prefixes give identical rows)
    from collections import Counter

    def rows(t):
        return Counter(tuple(row) for row in t.mul(1e4).round().long().tolist())

    cached, yielded = rows(everything), rows(seen)
    assert all(cached[row] >= count for row, count in yielded.items())
    assert not torch.equal(seen, everything[: seen.shape[0]])  # shuffled


def test_store_resumes_exactly_from_its_position(tmp_path, tiny_model):
    directory = build_cache(tiny_config(), root=tmp_path, cache_id="c", progress=False, model=tiny_model)
    hook = HOOKS[0]
    straight = ActivationStore.from_cache(directory, hook, batch_size=16, buffer_tokens=128, seed=5)
    expected = [next(straight) for _ in range(90)]  # crosses an epoch boundary
    first = ActivationStore.from_cache(directory, hook, batch_size=16, buffer_tokens=128, seed=5)
    for _ in range(37):
        next(first)
    resumed = ActivationStore.from_cache(directory, hook, batch_size=16, buffer_tokens=128, seed=5,
                                         start_batch=first.position)
    rest = [next(resumed) for _ in range(90 - 37)]
    assert all(torch.equal(a, b) for a, b in zip(expected[37:], rest))


def test_live_store_gives_model_activations(tiny_model):
    store = ActivationStore.from_model(tiny_model, "blocks.0.hook_resid_post", data="demo", context_size=32,
                                       batch_size=64, buffer_tokens=256, model_batch_size=4)
    batch = next(store)
    assert batch.shape == (64, 32) and store.d_in == 32
    windows = torch.stack(list(token_windows("demo", tiny_model.tokenizer, 32, seed=0, max_windows=32)))
    with torch.no_grad():
        _, reference = tiny_model.run_with_cache(windows, names_filter="blocks.0.hook_resid_post")
    pool = reference["blocks.0.hook_resid_post"][:, 1:].reshape(-1, 32)
    distances = torch.cdist(batch, pool, compute_mode="donot_use_mm_for_euclid_dist")
    assert distances.min(dim=1).values.max() < 1e-4


def test_incomplete_or_empty_caches_are_refused(tmp_path):
    with pytest.raises(CacheError, match="no cache"):
        CacheFolder(tmp_path)
    atomic_write_json(tmp_path / MANIFEST, {"status": "running", "shards": []})
    with pytest.raises(CacheError, match="incomplete"):
        CacheFolder(tmp_path)


def test_batched_windows_groups_in_order():
    windows = [torch.full((4,), i) for i in range(5)]
    batches = list(batched_windows(windows, 2))
    assert [b.shape[0] for b in batches] == [2, 2, 1] and int(batches[2][0, 0]) == 4


RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_model
    from interp.cache.writer import CacheConfig, build_cache
    config = CacheConfig(model="tiny-test", data="demo", hooks={hooks!r}, n_tokens={n_tokens},
                         context_size=32, batch_size=32, shard_tokens=4096)
    build_cache(config, root={root!r}, cache_id="c", progress=False, model=make_tiny_model())
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_tokens(tmp_path):
    """4x the tokens (~75 MB more activations in total) must not raise peak RSS by more than a shard's worth."""
    peaks = []
    for n_tokens in (32 * 1024, 32 * 4096):
        script = RSS_SCRIPT.format(tests=str(Path(__file__).parents[1]), hooks=HOOKS, n_tokens=n_tokens,
                                   root=str(tmp_path / str(n_tokens)))
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        peaks.append(int(result.stdout.split()[-1]) / 1024)  # MiB
    extra_activations_mib = 32 * 3072 * (32 + 32 + 32) * 4 / 2**20
    assert peaks[1] - peaks[0] < 0.25 * extra_activations_mib, (peaks, extra_activations_mib)


RANK_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_model
    from interp.cache.writer import CacheConfig, build_cache
    build_cache(CacheConfig(**{config!r}), root={root!r}, cache_id="c", progress=False, model=make_tiny_model())
""")


def test_two_ranks_write_the_cache_one_process_writes(tmp_path, tiny_model):
    """torchrun-style: RANK/WORLD_SIZE in the environment; each rank computes every other shard, rank 0 merges."""
    import os
    from dataclasses import asdict

    config = tiny_config()  # 5 shards: rank 0 gets 0, 2, 4 and rank 1 gets 1, 3
    reference = build_cache(config, root=tmp_path / "ref", cache_id="c", progress=False, model=tiny_model)
    script = RANK_SCRIPT.format(tests=str(Path(__file__).parents[1]), config=asdict(config),
                                root=str(tmp_path / "dist"))
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"},
        )
        for rank in (1, 0)
    ]
    for process in ranks:
        assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
    merged = tmp_path / "dist" / "c"
    assert shard_digests(merged) == shard_digests(reference)
    ours, theirs = (json.loads((d / MANIFEST).read_text()) for d in (merged, reference))
    assert {k: v for k, v in ours.items() if k != "versions"} == {k: v for k, v in theirs.items() if k != "versions"}
    assert not list(merged.glob("manifest.rank*"))  # the parts are gone once merged
    assert CacheFolder(merged).n_tokens == config.n_windows * config.context_size
    again = build_cache(
        config, root=tmp_path / "dist", cache_id="c", progress=False, model=tiny_model, rank=1, world_size=2
    )
    assert again == merged and not list(merged.glob("manifest.rank*"))  # complete: a rerun does nothing


def test_a_rank_that_dies_resumes_its_own_part(tmp_path, tiny_model):
    from interp.cache.writer import CacheWriter

    config = tiny_config()
    reference = build_cache(config, root=tmp_path / "ref", cache_id="c", progress=False, model=tiny_model)
    build_cache(config, root=tmp_path / "dist", cache_id="c", progress=False, model=tiny_model, rank=1, world_size=2)
    merged = tmp_path / "dist" / "c"
    assert not (merged / MANIFEST).exists()  # rank 1 finished its part; only rank 0 merges

    def die_after_first_shard(index):
        raise RuntimeError(f"killed after shard {index}")

    writer = CacheWriter(config, root=tmp_path / "dist", cache_id="c", model=tiny_model, rank=0, world_size=2)
    with pytest.raises(RuntimeError, match="killed after shard 0"):
        writer.run(progress=False, on_shard=die_after_first_shard)
    part = json.loads((merged / "manifest.rank0-of-2.json").read_text())
    assert [shard["index"] for shard in part["shards"]] == [0] and part["status"] == "running"
    build_cache(config, root=tmp_path / "dist", cache_id="c", progress=False, model=tiny_model, rank=0, world_size=2)
    assert shard_digests(merged) == shard_digests(reference)
