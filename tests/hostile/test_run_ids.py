"""Run ids are names, not paths, in the CLI, the API and the app; a training command that fails before its
first checkpoint leaves no run folder behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from interp.store.errors import InputError
from interp.store.names import check_name
from sae_training.config import TrainConfig
from sae_training.trainer import train_saes
from tests.hostile.helpers import assert_one_line_error

BAD_IDS = ["../escaped_run", "../../x", ".", "..", ".hidden", "a/b", "/tmp/absolute", "", "x\x00y", "sp ace"]
TRAINING_PAGE = str(Path(__file__).resolve().parents[2] / "app" / "pages" / "1_Training.py")


@pytest.mark.parametrize("name", ["run-1", "demo_mfr.v2", "A", "0"])
def test_plain_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("bad", BAD_IDS)
def test_the_train_command_refuses_a_run_id_that_is_a_path(tmp_path, workspace, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert_one_line_error(["train", "--cache", workspace / "cached_activations" / "demo", "--run-id", bad,
                           "--runs", "runs", "--tokens", "2048", "--batch-size", "256", "--d-sae", "64"],
                          "is not a folder name")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["runs"]  # nothing written anywhere


@pytest.mark.parametrize("bad", ["..", "."])
def test_train_saes_refuses_a_run_folder_that_is_not_a_name(tmp_path, bad):
    config = TrainConfig(hook="h", d_sae=16, k=2, n_tokens=256, batch_size=64)
    with pytest.raises(InputError, match="is not a folder name"):
        train_saes(config, tmp_path / "runs" / bad if bad != "." else Path("."), activations=torch.randn(512, 8),
                   progress=False)
    assert not (tmp_path / "config.json").exists() and not Path("config.json").exists()


def test_a_training_command_that_fails_before_a_checkpoint_removes_its_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    not_a_cache = tmp_path / "cached_activations" / "empty"
    not_a_cache.mkdir(parents=True)
    assert_one_line_error(["train", "--cache", not_a_cache, "--run-id", "r", "--tokens", "2048", "--d-sae", "64"])
    assert not (tmp_path / "runs" / "r").exists()


@pytest.mark.parametrize("bad", ["../escaped_run", ".", "/tmp/abs"])
def test_the_training_page_refuses_a_run_id_that_is_a_path(workspace, tmp_path, monkeypatch, bad):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(workspace))
    at = AppTest.from_file(TRAINING_PAGE, default_timeout=60).run()
    at.text_input(key="run_id").input(bad)
    at.button[0].click().run()
    assert not at.exception
    assert any("is not a folder name" in e.value for e in at.error)
    assert not (workspace / "runs" / bad / "app_launch.json").exists() and not (workspace / "escaped_run").exists()
