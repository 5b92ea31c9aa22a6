"""Signals and one-line errors: SIGTERM to ``workbench demo`` stops it at once with one line (training
checkpoints first); a stopped job is recorded as stopped; unwritable places, a bad port, a damaged
manifest and an SAE whose cfg.json disagrees with its weights are one line each; a 10 MB single-line text
is streamed in bounded memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp.store.jobs import Job
from interp.store.run_folder import RunFolder
from tests.hostile.helpers import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sigterm_to_the_demo_during_training_stops_it_at_once_with_one_line(tmp_path):
    workspace = tmp_path / "ws"
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "demo", "--workspace", str(workspace), "--tokens",
                                "16384"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        metrics = RunFolder(workspace / "runs" / "demo-mfr").metrics_path
        wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1 or process.poll() is not None,
                 600, "the demo's first training steps")
        assert process.poll() is None, process.communicate()
        sent = time.time()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert time.time() - sent < 60 and process.returncode == 143, (process.returncode, out[-2000:], err[-2000:])
    stopped = [line for line in err.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stopped) == 1 and f"workbench demo --workspace {workspace}" in stopped[0], err[-2000:]
    assert "Traceback" not in err and "train a pair without MFR" not in out and "MMCS nan" not in out
    assert RunFolder(workspace / "runs" / "demo-mfr").checkpoint_step() > 0  # checkpointed before stopping


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_demo_while_it_caches_stops_it_with_one_line_and_a_resumable_cache(tmp_path, signum):
    workspace = tmp_path / "ws"
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "demo", "--workspace", str(workspace)], cwd=ROOT,
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    manifest = workspace / "cached_activations" / "demo" / "manifest.json"
    try:
        wait_for(lambda: any(manifest.parent.rglob("shard_*.safetensors")) or process.poll() is not None, 300,
                 "the demo's first shard")
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    name = signal.Signals(signum).name
    assert process.returncode == (130 if signum == signal.SIGINT else 143), (out[-2000:], err[-2000:])
    stopped = [line for line in err.splitlines() if line.startswith(f"stopped by {name}")]
    assert len(stopped) == 1 and "during 'cache activations'" in stopped[0] and "Traceback" not in err, err[-2000:]
    assert json.loads(manifest.read_text())["status"] == "running"  # resumable by the same command
    assert "== train" not in out


def test_a_job_whose_module_stops_is_recorded_as_stopped_not_finished(tmp_path):
    job = Job.in_folder(tmp_path / "job")
    job.start("tests.hostile.stopped_module", [], cwd=ROOT, env=ENV)
    status = job.wait(60)
    assert status.state == "stopped" and status.returncode == 143, status


def test_cli_one_liners_for_unwritable_places_and_bad_values(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(["demo", "--workspace", blocker], "is a file")
    assert_one_line_error(["app", "--port", "99999"], "not a TCP port")
    assert_one_line_error(["cache", "--root", blocker, "--tokens", "256", "--context-size", "32", "--cache-id", "c",
                           "--device", "cpu"], "cannot write the activation cache", "a file is in the way")


@pytest.mark.slow
def test_cache_over_a_truncated_manifest_is_one_line(tmp_path):
    args = ["cache", "--root", tmp_path, "--tokens", "512", "--context-size", "32", "--shard-tokens", "128",
            "--hooks", "blocks.0.hook_resid_post",
            "--cache-id", "c", "--device", "cpu"]
    from tests.hostile.helpers import cli

    code, output = cli(*args)
    assert code == 0, output
    manifest = tmp_path / "c" / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    assert_one_line_error(args, "manifest.json", "not valid JSON")


@pytest.mark.slow
def test_cache_rerun_over_a_deleted_or_flipped_shard_recomputes_it(tmp_path):
    from tests.hostile.helpers import cli

    args = ["cache", "--root", tmp_path, "--tokens", "512", "--context-size", "32", "--shard-tokens", "128",
            "--hooks", "blocks.0.hook_resid_post",
            "--cache-id", "c", "--device", "cpu"]
    code, _ = cli(*args)
    directory = tmp_path / "c"
    shards = sorted((directory / "blocks.0.hook_resid_post").glob("*.safetensors"))
    original = {path.name: path.read_bytes() for path in shards}
    shards[1].unlink()
    data = bytearray(shards[2].read_bytes())
    data[-3] ^= 0xFF
    shards[2].write_bytes(bytes(data))
    code, output = cli(*args)
    assert code == 0 and output.count("note: recomputed shard") == 2 and "cache complete" in output, output
    assert {path.name: path.read_bytes() for path in shards} == original  # the same bytes as before the damage
    from interp.cache.store import CacheFolder

    assert CacheFolder(directory).n_shards == len(shards)  # every shard verifies again


def test_an_sae_whose_cfg_disagrees_with_its_weights_is_one_line(workspace, tmp_path):
    import shutil

    member = tmp_path / "runs" / "r" / "sae_0"
    shutil.copytree(workspace / "runs" / "demo-mfr" / "sae_0", member)
    cfg = json.loads((member / "cfg.json").read_text())
    (member / "cfg.json").write_text(json.dumps({**cfg, "d_in": cfg["d_in"] + 1}))
    assert_one_line_error(["analyze", "geometry", member, "--out", tmp_path / "analyses", "--no-umap"],
                          "cannot be loaded as a SAELens SAE")


@pytest.mark.slow
def test_a_10_mb_single_line_text_streams_in_bounded_memory(tmp_path):
    words = [f"w{i}" for i in range(500)]
    text = tmp_path / "one-line.txt"
    import random

    rng = random.Random(0)
    with text.open("w") as handle:
        while handle.tell() < 10_000_000:
            handle.write(" ".join(rng.choices(words, k=10_000)) + " ")
    script = f"""
import resource, time
from interp.models.data import token_windows
from interp.models.loading import demo_tokenizer
tokenizer = demo_tokenizer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
windows = list(token_windows({str(text)!r}, tokenizer, 128, seed=0, max_windows=64))
print(len(windows), time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=300,
                            check=False)
    n, seconds, grown_kb = result.stdout.split()
    assert int(n) == 64, result.stderr[-2000:]
    assert float(seconds) < 20 and int(grown_kb) < 200_000, (seconds, grown_kb)  # was 115 s and 2.0 GB


def test_analyze_into_a_file_is_one_line_before_any_work(workspace, tmp_path):
    blocker = tmp_path / "analyses"
    blocker.write_text("not a folder")
    start = time.perf_counter()
    assert_one_line_error(["analyze", "features", workspace / "runs" / "demo-mfr", "--out", blocker, "--no-logits"],
                          "cannot write the analysis", "a file is in the way")
    assert time.perf_counter() - start < 30  # refused at the lock, not after computing the dashboards
