"""Long work started from the app, run as a subprocess the page follows: start, status, stop, log tail.

``Job.start`` launches ``python -m interp.store.jobs RECORD -- MODULE ARGS...`` in its own session (so Stop
can signal the whole process group), output appended to the log. That small wrapper runs
``python -m MODULE ARGS`` and, when it ends, writes the result file atomically: ``finished`` (exit 0),
``failed`` (other exit) or ``stopped`` (it got SIGTERM, or the module exited ``STOPPED_EXIT`` because it was
stopped by one sent to it directly). The status is read from these files and the
wrapper's liveness: a record whose wrapper is gone without a result (killed) reads ``failed``. A pid is
trusted (and signalled) only when ``/proc/<pid>/cmdline`` is this job's wrapper, so a pid planted in a
workspace file can never point Stop at another process. No torch here: pages import it.

A job's files are the record (``job.json``: pid, command, start time), the result (``job_result.json``)
and the log; ``Job.in_folder`` puts them in one folder, and a folder's owner (``RunFolder``) may place
them under its own names.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from interp.store.errors import InputError
from interp.store.io import read_json, write_json

RECORD = "job.json"
RESULT = "job_result.json"
LOG = "job.log"
WRAPPER = "interp.store.jobs"
STOPPED_EXIT = 143  # 128 + SIGTERM: a module stopped on request (checkpointed, resumable) exits with it
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds interp/ (and app/, sae_training/ beside it)


class JobRunningError(InputError):
    """A second start while the job runs."""


@dataclass(frozen=True)
class JobStatus:
    """``none`` (never started), ``running``, ``finished``, ``failed`` or ``stopped``; pid only while running."""

    state: str
    pid: int | None = None
    returncode: int | None = None
    command: tuple[str, ...] = ()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not; one that was our child is reaped here)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Job:
    """One job's files; ``start`` / ``status`` / ``stop`` / ``log_tail`` act on them."""

    def __init__(self, record: Path | str, result: Path | str, log: Path | str):
        self.record_path, self.result_path, self.log_path = Path(record), Path(result), Path(log)

    @classmethod
    def in_folder(cls, folder: Path | str) -> Job:
        folder = Path(folder)
        return cls(folder / RECORD, folder / RESULT, folder / LOG)

    def _record(self) -> dict | None:
        try:
            record = read_json(self.record_path, "job record")
            int(record["pid"])
            return record
        except (OSError, ValueError, KeyError, TypeError, InputError):
            return None

    def is_wrapper(self, pid: int) -> bool:
        """Whether ``pid`` is a live wrapper process of this job (its command line names this record)."""
        try:
            args = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
        except OSError:
            return False
        return (WRAPPER in args[:4] and str(self.record_path.resolve()) in args) and _alive(pid)

    def status(self) -> JobStatus:
        record = self._record()
        if record is None:
            return JobStatus("none")
        pid, command = int(record["pid"]), tuple(record.get("command", ()))
        alive = self.is_wrapper(pid)  # before reading the result: the wrapper writes it, then exits
        if self.result_path.exists():
            try:
                result = read_json(self.result_path, "job result")
                if int(result["pid"]) == pid:
                    return JobStatus(str(result["state"]), None, result.get("returncode"), command)
            except (OSError, ValueError, KeyError, TypeError, InputError):
                pass
        if alive:
            return JobStatus("running", pid, None, command)
        return JobStatus("failed", None, None, command)  # gone without a result: killed

    def start(self, module: str, args: list[str], cwd: Path | str, env: dict | None = None) -> int:
        """Run ``python -m module args`` in ``cwd`` as this job; refused while it runs. Returns the wrapper's pid."""
        running = self.status()
        if running.state == "running":
            raise JobRunningError(f"a job is already running here (pid {running.pid}: {' '.join(running.command)}); "
                                  "wait for it to finish or stop it first")
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.result_path.unlink(missing_ok=True)
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", WRAPPER, str(self.record_path.resolve()), str(self.result_path.resolve()),
                   "--", module, *args]
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, env=env)
        write_json(self.record_path, {"pid": process.pid, "command": [module, *args], "started": time.time()},
                   sort_keys=False)
        deadline = time.time() + 10  # right after exec /proc/<pid>/cmdline can read empty for a moment
        while process.poll() is None and not self.is_wrapper(process.pid) and time.time() < deadline:
            time.sleep(0.01)
        return process.pid

    def stop(self) -> bool:
        """SIGTERM the job's process group when it runs (the work may checkpoint and exit); whether one was sent."""
        status = self.status()
        if status.state != "running":
            return False
        os.killpg(status.pid, signal.SIGTERM)
        return True

    def wait(self, timeout: float, poll: float = 0.1) -> JobStatus:
        """The status once the job is no longer running (or still running after ``timeout`` seconds)."""
        deadline = time.time() + timeout
        while (status := self.status()).state == "running" and time.time() < deadline:
            time.sleep(poll)
        return status

    def log_tail(self, lines: int = 12) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _wrap(record: Path, result: Path, module: str, args: list[str]) -> int:
    """Run the job's module, then record how it ended. SIGTERM is passed on and recorded as ``stopped``."""
    child = subprocess.Popen([sys.executable, "-m", module, *args])
    stopped = []

    def forward(signum, frame):
        stopped.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    returncode = child.wait()
    was_stopped = stopped or returncode in (STOPPED_EXIT, -signal.SIGTERM)  # the app's Stop signals the trainer
    state = "stopped" if was_stopped else ("finished" if returncode == 0 else "failed")
    write_json(result, {"pid": os.getpid(), "state": state, "returncode": returncode, "ended": time.time()},
               sort_keys=False)
    return returncode


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m interp.store.jobs RECORD RESULT -- MODULE [ARGS...]", file=sys.stderr)
        return 2
    return _wrap(Path(argv[0]), Path(argv[1]), argv[3], argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
