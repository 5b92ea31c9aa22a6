"""Checkpoints checksummed: a flipped byte anywhere in the newest checkpoint is refused by name on resume, with
the previous good one offered (never resumed with wrong weights, never blamed on the lr); an orphaned
temporary checkpoint is swept; a half-written last metrics line (the crash case) does not stop a resume."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from interp.cache.format import read_header
from interp.store.run_folder import RunFolder
from sae_training.checkpoint import CheckpointError, list_checkpoints
from sae_training.config import TrainConfig
from sae_training.trainer import train_saes
from tests.hostile.helpers import assert_one_line_error, cli


def rows(n=4096, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(32, d, generator=g), dim=-1)
    return (torch.rand(n, 32, generator=g) * (torch.rand(n, 32, generator=g) < 0.1)) @ features


CONFIG = TrainConfig(architecture="topk", d_sae=32, k=4, n_members=1, n_tokens=256 * 24, batch_size=256, lr=3e-3,
                     log_every=2, checkpoint_every=6, buffer_tokens=2048, eval_batches=1, eval_ce_batches=0)


def flip(path, key_suffix: str, n: int, high: bool) -> None:
    """Flip the low (or high) byte of ``n`` float32 values of the tensor whose key ends with ``key_suffix``."""
    header, offset = read_header(path)
    key = next(k for k in header if k.endswith(key_suffix))
    start, end = header[key]["data_offsets"]
    data = bytearray(path.read_bytes())
    for i in range(min(n, (end - start) // 4)):
        data[offset + start + 4 * i + (3 if high else 0)] ^= 0x7F if high else 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("high", [False, True], ids=["low-bytes", "high-bytes"])
def test_a_flipped_checkpoint_is_refused_by_name_and_the_previous_good_one_offered(tmp_path, high):
    run_dir = tmp_path / "run"
    train_saes(CONFIG, run_dir, activations=rows(), progress=False, stop_at_step=12, evaluate=False)
    older, newest = list_checkpoints(RunFolder(run_dir).checkpoints_path)
    flip(newest, "W_dec", 2000, high)  # every value of this small W_dec (the issue flipped 2,000)
    with pytest.raises(CheckpointError) as error:
        train_saes(CONFIG, run_dir, activations=rows(), progress=False, resume=True, evaluate=False)
    message = str(error.value)
    assert newest.name in message and "fails its checksum" in message and older.name in message
    assert "lr" not in message and "\n" not in message
    newest.unlink()  # as the message says: resume from the previous good one
    resumed = train_saes(CONFIG, run_dir, activations=rows(), progress=False, resume=True, evaluate=False)
    reference = train_saes(CONFIG, tmp_path / "reference", activations=rows(), progress=False, evaluate=False)
    assert resumed.step == reference.step == CONFIG.n_steps
    for name, value in reference.sae.state_dict().items():  # the resume from step 6 is exact
        assert torch.equal(value, resumed.sae.state_dict()[name]), name


def test_an_orphaned_temporary_checkpoint_is_swept_on_the_next_run(tmp_path):
    run_dir = tmp_path / "run"
    train_saes(CONFIG, run_dir, activations=rows(), progress=False, stop_at_step=6, evaluate=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=False)
    orphan = RunFolder(run_dir).checkpoints_path / f".step_000000012.safetensors.{int(dead.stdout)}.0badc0de.tmp"
    orphan.write_bytes(os.urandom(1 << 20))  # what a kill -9 during a checkpoint write leaves
    train_saes(CONFIG, run_dir, activations=rows(), progress=False, resume=True, stop_at_step=12, evaluate=False)
    assert not orphan.exists()


@pytest.fixture()
def cli_run(workspace, tmp_path):
    """A run trained by ``workbench train`` on the session workspace's cache."""
    code, output = cli("train", "--cache", workspace / "cached_activations" / "demo", "--hook",
                       "blocks.1.hook_resid_post", "--d-sae", "32", "--k", "4", "--tokens", "3000",
                       "--batch-size", "256", "--checkpoint-every", "4", "--runs", tmp_path / "runs", "--run-id", "r")
    assert code == 0, output
    assert "trained 2,816 tokens (11 whole batches of 256)" in output  # 3000 is not a multiple of 256: it says so
    return tmp_path / "runs" / "r"


@pytest.mark.slow
def test_cli_resume_over_a_damaged_checkpoint_is_one_line(cli_run):
    newest = list_checkpoints(RunFolder(cli_run).checkpoints_path)[-1]
    flip(newest, "W_dec", 50, high=False)
    assert_one_line_error(["train", "--resume-from", cli_run], newest.name, "fails its checksum", "previous good")


@pytest.mark.slow
def test_cli_resume_after_a_half_written_metrics_line(cli_run):
    metrics = RunFolder(cli_run).metrics_path
    logged = [row["step"] for row in RunFolder(cli_run).metrics_rows()]
    metrics.write_text(metrics.read_text() + '{"step": 12, "loss": 0.')  # the process died mid-line
    code, output = cli("train", "--resume-from", cli_run)
    assert code == 0 and "Traceback" not in output, output
    assert [row["step"] for row in RunFolder(cli_run).metrics_rows()] == logged and metrics.read_text().endswith("\n")
    metrics.write_text('{"step": 2}\nnot json\n{"step": 4}\n')  # damage that is not a cut-short last line
    assert_one_line_error(["train", "--resume-from", cli_run], f"{metrics}:2")


@pytest.mark.slow
def test_analyze_and_resume_over_a_garbage_config_are_one_line(cli_run):
    config = RunFolder(cli_run).config_path
    config.write_bytes(config.read_bytes()[:40])  # truncated
    assert_one_line_error(["analyze", "features", cli_run, "--out", cli_run.parent / "analyses", "--no-logits"],
                          "config.json")
    config.write_bytes(os.urandom(200))
    assert_one_line_error(["train", "--resume-from", cli_run], "config.json")
