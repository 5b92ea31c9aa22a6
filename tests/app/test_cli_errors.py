"""The CLI turns bad input into one ``error:`` line (exit 2) and lets bugs keep their traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from app.cli import app
from app.commands.errors import user_errors
from interp.store.errors import InputError
from sae_training.config import ConfigError


def test_input_errors_become_one_line_and_bugs_propagate():
    for error in (InputError("bad --k"), ConfigError("bad config"), FileNotFoundError("no such cache")):
        with pytest.raises(typer.Exit) as exit_info:
            with user_errors():
                raise error
        assert exit_info.value.exit_code == 2
    with pytest.raises(ValueError, match="a bug"):  # a plain ValueError is a programming error, not user input
        with user_errors():
            raise ValueError("a bug")


def test_a_bad_token_count_is_reported_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["train", "--cache", str(tmp_path), "--tokens", "lots"])
    assert result.exit_code == 2
    assert "cannot read a token count from 'lots'" in result.output and "Traceback" not in result.output


def test_cache_then_train_with_default_hooks_trains_on_what_was_cached(tmp_path):
    """No --hook on either command: train takes the cache's one hook (the defaults are declared once)."""
    import json

    runner = CliRunner()
    cached = runner.invoke(app, ["cache", "--tokens", "2048", "--context-size", "32", "--cache-id", "c",
                                 "--root", str(tmp_path / "caches"), "--device", "cpu"])
    assert cached.exit_code == 0, cached.output
    trained = runner.invoke(app, ["train", "--cache", str(tmp_path / "caches" / "c"), "--tokens", "2048",
                                  "--batch-size", "256", "--d-sae", "32", "--k", "4", "--run-id", "r",
                                  "--runs", str(tmp_path / "runs")])
    assert trained.exit_code == 0, trained.output
    config = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert config["hook"] == json.loads((tmp_path / "caches" / "c" / "manifest.json").read_text())["config"]["hooks"][0]


def test_train_without_hook_on_a_cache_of_two_hooks_asks_for_one(tmp_path):
    """Two hooks and no residual stream among them: no default to pick (of residual streams, the middle one)."""
    runner = CliRunner()
    hooks = "blocks.0.hook_mlp_out,blocks.1.hook_mlp_out"
    cached = runner.invoke(app, ["cache", "--tokens", "1024", "--context-size", "32", "--cache-id", "c", "--hooks",
                                 hooks, "--root", str(tmp_path), "--device", "cpu"])
    assert cached.exit_code == 0, cached.output
    result = runner.invoke(app, ["train", "--cache", str(tmp_path / "c"), "--tokens", "1024", "--batch-size", "256",
                                 "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "holds several hooks" in result.output and "pass --hook" in result.output
    assert "Traceback" not in result.output
