"""Hostile inputs to `workbench train`: each refused with a one-line error (exit 2), nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from app.cli import app
from sae_training.config import ConfigError, TrainConfig
from sae_training.trainer import train_saes


def cli(*args: str):
    result = CliRunner().invoke(app, ["train", *args])
    message = result.stderr.strip() if result.stderr else result.output.strip()
    return result.exit_code, message


def assert_one_line_refusal(code: int, message: str, *fragments: str) -> None:
    assert code == 2, message
    assert len(message.splitlines()) == 1 and message.startswith("error: "), message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("value", ["0", "-4096"])
def test_batch_size_not_positive(tmp_path, value):
    assert_one_line_refusal(*cli("--model", "demo", "--batch-size", value, "--runs", str(tmp_path)),
                            "batch_size must be a positive number", value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1e-3"])
def test_lr_not_finite_positive(tmp_path, value):
    assert_one_line_refusal(*cli("--model", "demo", "--lr", value, "--runs", str(tmp_path)),
                            "lr must be a finite positive number")


def test_option_of_another_architecture_names_the_valid_ones(tmp_path):
    assert_one_line_refusal(*cli("--model", "demo", "--arch", "relu", "--k", "4", "--runs", str(tmp_path)),
                            "--k does not apply to --arch relu", "--l1-coefficient")


def test_unknown_architecture_lists_the_registry(tmp_path):
    assert_one_line_refusal(*cli("--model", "demo", "--arch", "gatedx", "--runs", str(tmp_path)),
                            "unknown architecture 'gatedx'", "mfr_tied")


@pytest.mark.parametrize("d_sae", [1_000_000_000, 3_000_000, 10_000_000])
def test_sae_too_large_for_memory_is_refused_before_allocating(tmp_path, d_sae):
    """Checked before the SAE is built: a 1e9-wide SAE would otherwise die allocating ~50 TB."""
    x = torch.randn(64, 768)
    config = TrainConfig(d_sae=d_sae, k=32, n_tokens=4096, batch_size=4096)
    with pytest.raises(ConfigError, match=r"needs about [\d,.]+ GiB to train, but cpu has [\d,.]+ GiB free"):
        train_saes(config, tmp_path / "run", activations=x, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sae_too_large_through_the_cli(tmp_path):
    assert_one_line_refusal(*cli("--model", "demo", "--d-sae", "1000000000", "--runs", str(tmp_path),
                                 "--run-id", "huge"), "needs about", "GiB free")
    assert not (tmp_path / "huge").exists()


def short_run(tmp_path):
    x = torch.randn(2048, 16)
    config = TrainConfig(cache=None, d_sae=32, k=4, n_tokens=256 * 8, batch_size=256, lr=1e-3,
                         checkpoint_every=4, buffer_tokens=1024, eval_batches=1)
    run_dir = tmp_path / "run"
    train_saes(config, run_dir, activations=x, progress=False, stop_at_step=4, evaluate=False)
    return run_dir, x


@pytest.mark.parametrize("field, value, shown", [("d_sae", 64, "d_sae: 32 -> 64"), ("lr", 0.5, "lr: 0.001 -> 0.5"),
                                                 ("n_tokens", 4096, "n_tokens: 2048 -> 4096"),
                                                 ("options", {"k": 8}, "options.k: 4 -> 8")])
def test_hand_edited_config_json_is_refused_on_resume(tmp_path, field, value, shown):
    run_dir, x = short_run(tmp_path)
    path = run_dir / "config.json"
    saved = json.loads(path.read_text())
    saved[field] = {**saved["options"], **value} if field == "options" else value
    path.write_text(json.dumps(saved))
    edited = TrainConfig.load(path)
    with pytest.raises(ConfigError, match="checkpoint was written under another config") as error:
        train_saes(edited, run_dir, activations=x, progress=False, resume=True, evaluate=False)
    assert shown in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text, shown",
    [
        ("{not json", "is not a readable JSON config"),
        ('{"lr": "fast"}', "config field 'lr' must be a float"),
        ('{"options": {"k": 4, "l1_coefficient": 1}}', "l1_coefficient does not belong"),
        ('{"batch_size": 0}', "batch_size must be a positive number"),
        ("[1, 2]", "a training config is a JSON object"),
    ],
)
def test_invalid_config_json_on_resume_is_one_line(tmp_path, text, shown):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    assert_one_line_refusal(*cli("--resume-from", str(run)), shown)
