"""Half precision and memory: a bf16 cache of a family's checkpoint, the same bytes from the API and the CLI,
a memory estimate that counts the checkpoint's parameters, and a refusal when it does not fit."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from interp.cache.writer import CacheConfig, build_cache, cache_memory_estimate
from interp.models import memory
from interp.models.loading import ModelSpecError, load_model
from tests.interp.model_families import save_checkpoint
from tests.offline import forbid_network

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    return folder, save_checkpoint("llama", folder)


def _config(folder, **changes) -> CacheConfig:
    return CacheConfig(**{"model": str(folder), "hooks": (HOOK,), "n_tokens": 256, "context_size": 16,
                          "shard_tokens": 128, "batch_size": 4, **changes})


def test_bf16_cache_holds_the_bf16_models_activations_and_matches_the_cli(llama, tmp_path, monkeypatch):
    from app.cli import app
    from interp.cache.store import CacheFolder

    forbid_network(monkeypatch)
    folder, _ = llama
    api = build_cache(_config(folder, dtype="bfloat16"), root=tmp_path / "api", device="cpu", progress=False)
    cache = CacheFolder(api)
    acts = cache.activations(HOOK, 0)
    assert acts.dtype == torch.bfloat16 and cache.d(HOOK) == 64
    tokens = cache.tokens(0)["token_ids"].long().reshape(-1, 16)
    model = load_model(str(folder), device="cpu", dtype="bfloat16")
    with torch.no_grad():
        _, expected = model.run_with_cache(tokens, names_filter=HOOK)
    torch.testing.assert_close(acts, expected[HOOK].reshape(-1, 64), rtol=0, atol=0)

    result = CliRunner().invoke(app, ["cache", "--model", str(folder), "--hooks", HOOK, "--tokens", "256",
                                      "--context-size", "16", "--shard-tokens", "128", "--batch-size", "4",
                                      "--dtype", "bfloat16", "--root", str(tmp_path / "cli"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "memory estimate: ~" in result.output
    shards = [json.loads((root / api.name / "manifest.json").read_text())["shards"] for root in (tmp_path / "api",
                                                                                                tmp_path / "cli")]
    assert shards[0] == shards[1] and len(shards[0]) == 2  # same files, byte for byte (their sha256)


def test_model_dtype_can_differ_from_storage_and_old_cache_ids_stay(llama, tmp_path):
    import hashlib
    from dataclasses import asdict

    from interp.cache.store import CacheFolder

    folder, _ = llama
    config = _config(folder, dtype="bfloat16", model_dtype="float32")
    cache = CacheFolder(build_cache(config, root=tmp_path, device="cpu", progress=False))
    model = load_model(str(folder), device="cpu")  # float32
    tokens = cache.tokens(0)["token_ids"].long().reshape(-1, 16)
    with torch.no_grad():
        _, expected = model.run_with_cache(tokens, names_filter=HOOK)
    torch.testing.assert_close(cache.activations(HOOK, 0), expected[HOOK].reshape(-1, 64).bfloat16(), rtol=0, atol=0)
    plain = _config(folder)
    old_payload = {k: v for k, v in asdict(plain).items() if k != "model_dtype"}  # before the field existed
    assert plain.config_hash() == hashlib.sha256(json.dumps(old_payload, sort_keys=True).encode()).hexdigest()[:12]
    with pytest.raises(Exception, match="model given runs at torch.float32"):
        build_cache(_config(folder, model_dtype="bfloat16"), root=tmp_path / "x", device="cpu", progress=False,
                    model=model)


def test_memory_estimate_counts_the_checkpoint_and_refuses_when_too_big(llama, tmp_path, monkeypatch):
    folder, hf_model = llama
    size = memory.model_size(str(folder))
    assert size.n_params == hf_model.num_parameters() and (size.d_model, size.n_layers) == (64, 2)
    bf16, fp32 = (cache_memory_estimate(_config(folder, dtype=d)) for d in ("bfloat16", "float32"))
    assert bf16.weights == 2 * size.n_params and fp32.weights == 2 * bf16.weights
    stored = sum(p.stat().st_size for p in folder.glob("*.safetensors"))  # float32 on disk
    assert bf16.conversion == 2 * bf16.weights + stored  # transformers' cast copy, the converted dict, the file read
    assert fp32.conversion == stored  # stored at float32: transformers' tensors are the file's pages
    assert bf16.on("cpu") == {"cpu": bf16.total}
    assert bf16.on("cuda:0") == {"cuda:0": bf16.weights + bf16.forward + bf16.buffers,
                                 "cpu": bf16.weights + bf16.conversion + memory.LIBRARIES}
    monkeypatch.setattr(memory, "free_memory", lambda device: bf16.total - 1)
    with pytest.raises(ModelSpecError) as error:
        build_cache(_config(folder, dtype="bfloat16"), root=tmp_path, device="cpu", progress=False)
    message = str(error.value)
    assert "\n" not in message and bf16.describe() in message and "GiB is free on cpu" in message
    assert not any(tmp_path.iterdir())  # refused before a folder was made
