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
