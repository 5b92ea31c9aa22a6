"""Bad model folders through the CLI: one ``error:`` line naming what to do, no traceback, no network."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from app.cli import app
from tests.interp.model_families import save_checkpoint
from tests.offline import forbid_network


def _without(name: str, folder) -> None:
    save_checkpoint("llama", folder)
    for path in folder.iterdir():
        if name in path.name:
            path.unlink()


@pytest.mark.parametrize("missing, message", [
    ("config.json", "holds no config.json"),
    ("tokenizer", "holds no usable tokenizer"),
    ("model.safetensors", "holds no loadable weights"),
])
def test_a_checkpoint_folder_missing_a_part_is_one_line(missing, message, tmp_path, monkeypatch):
    forbid_network(monkeypatch)
    _without(missing, tmp_path / "ckpt")
    result = CliRunner().invoke(app, ["cache", "--model", str(tmp_path / "ckpt"), "--tokens", "64",
                                      "--context-size", "16", "--root", str(tmp_path / "caches")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("memory estimate: ")]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert not (tmp_path / "caches").exists() or not any((tmp_path / "caches").iterdir())


def test_an_unsupported_family_is_one_line(tmp_path, monkeypatch):
    from transformers import FalconConfig

    forbid_network(monkeypatch)
    FalconConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                 architectures=["FalconForCausalLM"]).save_pretrained(tmp_path)
    result = CliRunner().invoke(app, ["cache", "--model", str(tmp_path), "--tokens", "64", "--root",
                                      str(tmp_path / "caches")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert "cannot load a 'FalconForCausalLM' checkpoint" in lines[0] and "Gemma 2" in lines[0]
