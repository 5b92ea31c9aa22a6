"""One writer per folder: two writers of one cache, run or analysis started together (a barrier) leave a
consistent folder and one clear refusal; temporary names never collide and a dead writer's are swept; the
trainer of a run is the proven holder of its lock, never a pid merely written in a file."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from interp.cache.store import CacheFolder
from interp.cache.writer import CacheConfig, build_cache
from interp.store import io as atomic_io
from interp.store import locks
from interp.store.run_folder import RunFolder
from sae_training.config import TrainConfig
from sae_training.run_status import is_trainer_of, running_pid
from sae_training.trainer import train_saes

BUSY = "is being written by pid"


def _worker(barrier, results, index, target, args):
    torch.set_num_threads(1)
    barrier.wait()
    try:
        target(*args)
        results.put((index, "ok", ""))
    except Exception as error:  # noqa: BLE001 - reported to the parent
        results.put((index, type(error).__name__, str(error)))


def together(target, *arg_lists) -> list[tuple[str, str]]:
    """Run ``target(*args)`` for each of ``arg_lists`` in forked processes released by one barrier; returns
    (outcome, message) per process, outcome ``ok`` or the exception's class name."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(len(arg_lists)), context.Queue()
    processes = [context.Process(target=_worker, args=(barrier, results, i, target, args))
                 for i, args in enumerate(arg_lists)]
    for process in processes:
        process.start()
    outcomes = {i: (kind, text) for i, kind, text in (results.get(timeout=300) for _ in processes)}
    for process in processes:
        process.join(60)
    return [outcomes[i] for i in range(len(arg_lists))]


def one_refused(outcomes) -> int:
    """The index of the one writer that went through; the other was refused with the busy line."""
    kinds = [kind for kind, _ in outcomes]
    assert sorted(kinds) == ["FolderBusyError", "ok"], outcomes
    refused = kinds.index("FolderBusyError")
    message = outcomes[refused][1]
    assert BUSY in message and "started" in message and "pick another id" in message and "\n" not in message
    return kinds.index("ok")


def planted_rows(n=4096, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(32, d, generator=g), dim=-1)
    return (torch.rand(n, 32, generator=g) * (torch.rand(n, 32, generator=g) < 0.1)) @ features


def train_config(lr: float) -> TrainConfig:
    return TrainConfig(architecture="topk", d_sae=32, k=4, n_members=1, n_tokens=256 * 40, batch_size=256, lr=lr,
                       log_every=2, checkpoint_every=8, buffer_tokens=2048, eval_batches=1, eval_ce_batches=0)


def _train(run_dir, lr):
    train_saes(train_config(lr), run_dir, activations=planted_rows(), progress=False)


def test_two_trainers_of_one_run_leave_one_run_and_one_refusal(tmp_path):
    run_dir = tmp_path / "runs" / "same"
    rates = (0.001, 0.002)
    winner = one_refused(together(_train, (run_dir, rates[0]), (run_dir, rates[1])))
    folder = RunFolder(run_dir)
    assert folder.read_config().values["lr"] == rates[winner]  # config, metrics and checkpoints of one trainer
    steps = [row["step"] for row in folder.metrics_rows()]
    assert steps == list(range(2, 41, 2))  # every logged step once, in order
    assert folder.evaluated and folder.checkpoint_step() == 40
    resumed = train_saes(train_config(rates[winner]), run_dir, activations=planted_rows(), progress=False,
                         resume=True, evaluate=False)  # the run is whole: a resume accepts it
    assert resumed.step == 40
    assert not (run_dir / "running.json").exists() and running_pid(run_dir) is None


def _cache(root, model):
    config = CacheConfig(model="tiny-test", data="demo", hooks=("blocks.0.hook_resid_post",), n_tokens=32 * 64,
                         context_size=32, batch_size=4, shard_tokens=32 * 2)
    build_cache(config, root=root, cache_id="same", progress=False, model=model)


def test_two_cache_writers_of_one_id_leave_one_verified_cache_and_one_refusal(tmp_path, tiny_model):
    one_refused(together(_cache, (tmp_path, tiny_model), (tmp_path, tiny_model)))
    cache = CacheFolder(tmp_path / "same")  # complete, and every shard passes its checksum
    assert cache.n_shards == 32 and cache.n_tokens == 32 * 64
    assert cache.read_all("blocks.0.hook_resid_post").shape == (32 * 64, 32)
    assert not list((tmp_path / "same").rglob("*.tmp"))


def _write_many(path, n):
    for i in range(n):
        atomic_io.write_json(path, {"writer": os.getpid(), "i": i}, durable=True)


def test_two_processes_writing_one_file_never_share_a_temporary_name(tmp_path):
    target = tmp_path / "manifest.json"
    outcomes = together(_write_many, (target, 150), (target, 150))
    assert outcomes == [("ok", ""), ("ok", "")], outcomes  # a shared fixed .tmp name failed with ENOENT here
    assert json.loads(target.read_text())["i"] == 149
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_a_dead_writers_temporary_files_are_swept_when_the_folder_is_next_written(tmp_path):
    folder = tmp_path / "cache"
    (folder / "hook").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=False)
    dead_pid = int(dead.stdout)
    left = [folder / f".manifest.json.{dead_pid}.0123abcd.tmp", folder / "hook" / "shard_00003.safetensors.tmp",
            folder / "checkpoints" / f".step_000000008.safetensors.{dead_pid}.89abcdef.tmp"]
    left[2].parent.mkdir()
    live = folder / f".manifest.json.{os.getpid()}.fedcba98.tmp"  # a live writer's: not ours to remove
    for path in [*left, live]:
        path.write_bytes(b"half a file")
    with locks.writing(folder, "activation cache"):
        assert not any(path.exists() for path in left) and live.exists()


def test_the_trainer_is_the_proven_lock_holder_not_a_pid_or_a_command_line(tmp_path):
    workspace = tmp_path / "ws"
    run = workspace / "runs" / "mine"
    run.mkdir(parents=True)
    fake = tmp_path / "bin" / "workbench"  # looks exactly like `workbench train --run-id mine` to /proc
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(120)\n")
    impostor = subprocess.Popen([sys.executable, str(fake), "train", "--run-id", "mine", "--runs", "runs"],
                                cwd=workspace, start_new_session=True)
    holder_code = ("import sys, time; from interp.store.run_folder import RunFolder\n"
                   "with RunFolder(sys.argv[1]).running():\n    print('held', flush=True); time.sleep(120)\n")
    trainer = subprocess.Popen([sys.executable, "-c", holder_code, str(run)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                               start_new_session=True)
    try:
        assert trainer.stdout.readline().strip() == "held"
        assert running_pid(run) == trainer.pid and is_trainer_of(trainer.pid, run)
        time.sleep(0.2)
        assert not is_trainer_of(impostor.pid, run)  # its command line names the run; it holds nothing
        record = json.loads((run / "running.json").read_text())
        (run / "running.json").write_text(json.dumps({**record, "pid": impostor.pid}))
        assert running_pid(run) is None and not is_trainer_of(impostor.pid, run)  # a planted pid is not believed
        (run / "running.json").write_text(json.dumps({**record, "token": "0" * 32}))
        assert running_pid(run) is None  # nor a guessed token
        (run / "running.json").write_text(json.dumps(record))
        assert running_pid(run) == trainer.pid
    finally:
        for process in (impostor, trainer):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert running_pid(run) is None  # killed: the kernel released its lock, running.json is not believed


@pytest.mark.parametrize("blocker", ["file", "read-only"])
def test_a_folder_that_cannot_be_written_is_one_line_before_any_work(tmp_path, monkeypatch, blocker):
    if blocker == "file":
        (tmp_path / "runs").write_text("not a folder")
        why = "a file is in the way"
    else:  # a read-only file system (tests may run as root, which ignores permissions: EROFS is simulated)
        real_mkdir = Path.mkdir

        def read_only(self, *args, **kwargs):
            if tmp_path in self.parents:
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", read_only)
        why = "read-only"
    with pytest.raises(locks.FolderWriteError, match="cannot write the run") as error:
        _train(tmp_path / "runs" / "r", 0.001)
    assert why in str(error.value) and "\n" not in str(error.value)


def _analyze(run, out):
    from interp.features.dashboards import DashboardConfig
    from interp.pipeline import analyze_features

    analyze_features(run, out, config=DashboardConfig(n_top=3), with_logits=False)


@pytest.mark.slow
def test_two_analyses_of_one_run_leave_whole_dashboards_and_one_refusal(workspace, tmp_path):
    import shutil

    from interp.store import tables
    from interp.store.analysis_folder import AnalysisFolder

    root = tmp_path / "ws"
    shutil.copytree(workspace, root, symlinks=True)
    run, out = root / "runs" / "demo-mfr", root / "analyses"
    one_refused(together(_analyze, (run, out), (run, out)))
    for member in ("sae_0", "sae_1"):
        folder = AnalysisFolder(out / "demo-mfr" / member)
        record = folder.record("dashboards")
        assert record is not None and record.values["config"]["n_top"] == 3  # the winner's, whole
        assert all(folder.verified_path(name) for name in record.tables)
        assert tables.n_features(folder) == 64


def test_two_threads_of_one_process_are_two_writers_but_one_thread_nests(tmp_path):
    """The app serves every session from a thread of one process: a second session writing the same folder is
    refused like another process, while one thread's nested writes (a pipeline step calling another) go on."""
    import threading

    folder, inside, seen = tmp_path / "run", threading.Event(), []
    release = threading.Event()

    def first():
        with locks.writing(folder, "run"), locks.writing(folder, "run"):  # nested in one thread: fine
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(10)
    try:
        with pytest.raises(locks.FolderBusyError, match=BUSY):
            with locks.writing(folder, "run"):
                seen.append("entered")
    finally:
        release.set()
        thread.join()
    assert not seen
    with locks.writing(folder, "run"):  # released: the next writer gets it
        assert locks.holder(folder).pid == os.getpid()
