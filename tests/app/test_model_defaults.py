"""Defaults that follow the model: the middle layer's residual stream, the model's context (at most 1024),
16 x the hook's width; shown in --help."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from app.cli import app
from interp.models.loading import MAX_DEFAULT_CONTEXT, model_shape
from tests.interp.model_families import save_checkpoint
from tests.offline import forbid_network


def test_model_shape_reads_the_config_alone(tmp_path, monkeypatch):
    from transformers import GPT2Config, LlamaConfig

    forbid_network(monkeypatch)
    demo = model_shape("demo")
    assert (demo.n_layers, demo.d_model, demo.n_ctx, demo.default_hook) == (2, 128, 128, "blocks.1.hook_resid_post")
    LlamaConfig(num_hidden_layers=6, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=4096, architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path / "llama")
    llama = model_shape(str(tmp_path / "llama"))  # config only: no weights needed
    assert (llama.default_hook, llama.d_model, llama.default_context) == ("blocks.3.hook_resid_post", 32,
                                                                          MAX_DEFAULT_CONTEXT)
    GPT2Config(n_layer=3, n_embd=32, n_head=2, n_positions=256).save_pretrained(tmp_path / "gpt2")
    assert model_shape(str(tmp_path / "gpt2")).default_context == 256


def test_cache_and_train_defaults_follow_the_checkpoint(tmp_path, monkeypatch):
    forbid_network(monkeypatch)
    folder = tmp_path / "gemma"
    save_checkpoint("gemma-2", folder)  # 2 layers, d_model 64, 128 positions
    result = CliRunner().invoke(app, ["cache", "--model", str(folder), "--tokens", "1024", "--shard-tokens", "512",
                                      "--root", str(tmp_path / "caches"), "--cache-id", "c", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "caches" / "c" / "manifest.json").read_text())
    assert manifest["config"]["hooks"] == ["blocks.1.hook_resid_post"] and manifest["config"]["context_size"] == 128
    result = CliRunner().invoke(app, ["train", "--cache", str(tmp_path / "caches" / "c"), "--tokens", "512",
                                      "--batch-size", "256", "--runs", str(tmp_path / "runs"), "--run-id", "r"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert config["hook"] == "blocks.1.hook_resid_post" and config["d_sae"] == 16 * 64


def test_help_shows_the_fitted_defaults():
    def text(command: str) -> str:  # the help's words, unwrapped from its boxes
        return " ".join(CliRunner().invoke(app, [command, "--help"]).output.replace("│", " ").split())

    cache_help, train_help = text("cache"), text("train")
    assert "middle layer's residual stream" in cache_help and "the model's context, at most 1024" in cache_help
    assert "16 x the hook's width" in train_help and "middle layer's residual stream" in train_help
