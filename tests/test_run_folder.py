"""``RunFolder``'s writers round-trip through its readers."""

from __future__ import annotations

import os

from interp.store.run_folder import RunFolder


def test_writers_round_trip_through_the_readers(tmp_path):
    folder = RunFolder(tmp_path / "runs" / "r")
    folder.write_config({"n_tokens": 64, "batch_size": 8, "cache": "c"})
    assert folder.exists() and folder.config() == {"n_tokens": 64, "batch_size": 8, "cache": "c"}
    folder.write_metrics([{"step": 1, "loss": 2.0}])
    folder.append_metrics({"step": 2, "loss": 1.5})
    assert folder.metrics_rows() == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}] and folder.n_logged() == 2
    folder.write_metrics([])
    assert folder.metrics_rows() == [] and folder.metrics_path.exists()
    assert not folder.evaluated and folder.evaluation() == {}
    folder.write_evaluation({"step": 8, "members": [{"fvu": 0.1}], "mmcs": 0.5})
    assert list(folder.evaluation()) == ["step", "members", "mmcs"]  # the caller's key order is kept
    job = folder.job()  # the app's training job keeps its record, result and log among the run's files
    assert job.record_path == folder.launch_path and job.log_path == folder.log_path
    assert {job.record_path, job.result_path} <= set(folder.files()) and job.status().state == "none"
    assert folder.member_path(3).name == "sae_3"
    assert not list(folder.path.glob("*.tmp")) and not list(folder.path.glob(".*.tmp"))


def test_the_running_marker_is_held_only_inside_the_block(tmp_path):
    folder = RunFolder(tmp_path / "r")
    assert folder.running_pid() is None
    with folder.running():
        assert folder.running_pid() == os.getpid()
    assert not folder.running_path.exists() and folder.running_pid() is None
    with folder.running(active=False):
        assert not folder.running_path.exists()


def test_checkpoint_names_round_trip_through_the_run_folder(tmp_path):
    from interp.store.run_folder import checkpoint_files, checkpoint_path

    folder = RunFolder(tmp_path / "run")
    assert folder.checkpoint_step() == 0 and checkpoint_files(folder.checkpoints_path) == {}
    folder.checkpoints_path.mkdir(parents=True)
    for step in (7, 120, 1_000_000):
        checkpoint_path(folder.checkpoints_path, step).write_bytes(b"")
    (folder.checkpoints_path / "step_12.safetensors.tmp").write_bytes(b"")  # a half write is not a checkpoint
    files = checkpoint_files(folder.checkpoints_path)
    assert sorted(files) == [7, 120, 1_000_000] and folder.checkpoint_step() == 1_000_000
    assert sorted(p.name for p in files.values()) == [p.name for p in sorted(files.values())]  # names sort by step
