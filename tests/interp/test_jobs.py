"""Jobs run real subprocesses: status moves running -> finished / failed / stopped, Stop kills, a second start
while one runs is refused, a pid planted in the record is never trusted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from interp.store.jobs import Job, JobRunningError

WORKER = """
import signal, sys, time
from pathlib import Path
mode, out = sys.argv[1], Path(sys.argv[2])
print("started", mode, flush=True)
if mode == "sleep":
    signal.signal(signal.SIGTERM, lambda *_: (print("got SIGTERM", flush=True), sys.exit(0)))
    out.write_text("sleeping")
    time.sleep(120)
elif mode == "fail":
    print("something broke", flush=True)
    sys.exit(3)
else:
    out.write_text("done")
"""


@pytest.fixture()
def job(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    made = Job.in_folder(tmp_path / "job")
    yield made
    status = made.status()
    if status.pid:
        os.killpg(status.pid, signal.SIGKILL)


def start(job: Job, mode: str) -> int:
    folder = job.record_path.parent.parent
    return job.start("worker", [mode, str(folder / "out.txt")], cwd=folder)


def wait_for(condition, timeout: float = 30.0):
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.05)
    assert condition()


def test_a_job_runs_to_finished_and_writes_its_output(job):
    assert job.status().state == "none"
    start(job, "write")
    status = job.wait(30)
    assert (status.state, status.returncode) == ("finished", 0) and status.pid is None
    assert (job.record_path.parents[1] / "out.txt").read_text() == "done"
    assert "started write" in job.log_tail()


def test_a_failing_job_reads_failed_with_its_exit_code_and_log(job):
    start(job, "fail")
    status = job.wait(30)
    assert (status.state, status.returncode) == ("failed", 3)
    assert job.log_tail(1) == "something broke"


def test_stop_signals_the_job_and_it_reads_stopped(job):
    pid = start(job, "sleep")
    wait_for(lambda: (job.record_path.parents[1] / "out.txt").exists())  # the worker is inside its sleep
    status = job.status()
    assert (status.state, status.pid) == ("running", pid) and status.command[0] == "worker"
    assert job.stop()
    assert job.wait(30).state == "stopped" and "got SIGTERM" in job.log_tail()
    assert not job.stop()  # nothing runs any more


def test_a_killed_job_reads_failed(job):
    pid = start(job, "sleep")
    wait_for(lambda: (job.record_path.parents[1] / "out.txt").exists())
    os.killpg(pid, signal.SIGKILL)  # wrapper and worker die without writing a result
    wait_for(lambda: job.status().state != "running")
    assert job.status().state == "failed" and not job.result_path.exists()


def test_a_second_start_while_running_is_refused(job):
    pid = start(job, "sleep")
    with pytest.raises(JobRunningError, match=f"already running here \\(pid {pid}"):
        start(job, "write")
    job.stop()
    job.wait(30)
    start(job, "write")  # once stopped, the job may start again
    assert job.wait(30).state == "finished"


def test_a_planted_pid_is_neither_running_nor_stopped(job, tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        job.record_path.parent.mkdir(parents=True)
        job.record_path.write_text(json.dumps({"pid": bystander.pid, "command": ["worker"]}))
        assert job.status().state == "failed" and not job.stop()
        time.sleep(0.1)
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()
