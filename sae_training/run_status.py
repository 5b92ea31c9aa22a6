"""What a run folder says about its state, read without torch: who trains it now, how far it got.

``running.json`` (``{"pid": ...}``) exists while a process trains the run; the trainer writes it
atomically when the loop starts and removes it when it ends or stops. The app reads these to show
"running"/"stopped"/"finished" and to offer Stop and Resume for any run, however it was launched.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from interp.store.errors import InputError
from interp.store.run_folder import RUNNING as RUNNING_FILE  # noqa: F401 - re-exported: tests plant markers by it
from interp.store.run_folder import RunFolder


def running_pid(run_dir: Path | str) -> int | None:
    """The pid training ``run_dir`` right now (from ``running.json``), or None if none is alive."""
    pid = RunFolder(run_dir).running_pid()
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"python" in cmdline else None


def _option(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def is_trainer_of(pid: int, run_dir: Path | str) -> bool:
    """Whether ``/proc/<pid>`` is a live ``workbench train`` process writing ``run_dir``: its command line runs
    the CLI's ``train`` with ``--resume-from`` that folder, or ``--run-id`` its name under ``--runs`` (default
    ``runs``), both resolved against the process's own working directory. A pid read from a file is signalled
    only after this check, so a workspace file cannot point Stop at another process."""
    try:
        args = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError, ValueError):
        return False
    is_cli = any(a == "app.cli" or Path(a).name == "workbench" for a in args[:3])
    if state == "Z" or not is_cli or "train" not in args:
        return False
    target = Path(run_dir).resolve()
    resumed = _option(args, "--resume-from")
    if resumed is not None:
        return (cwd / resumed).resolve() == target
    run_id = _option(args, "--run-id")
    return run_id is not None and (cwd / (_option(args, "--runs") or "runs") / run_id).resolve() == target


@contextlib.contextmanager
def running_marker(run_dir: Path, active: bool = True) -> Iterator[None]:
    """Hold ``running.json`` while the body trains; remove it after (``RunFolder.running``)."""
    with RunFolder(run_dir).running(active):
        yield


def checkpoint_step(run_dir: Path | str) -> int:
    """The step of the newest checkpoint (0 if none), from file names only."""
    return RunFolder(run_dir).checkpoint_step()


def total_steps(run_dir: Path | str) -> int | None:
    """``n_tokens // batch_size`` from the run's ``config.json``, or None without one."""
    folder = RunFolder(run_dir)
    if not folder.exists():
        return None
    values = folder.config()
    return int(values["n_tokens"]) // int(values["batch_size"])


class NotTrainerError(InputError):
    """Stop was asked for a pid that is not this run's trainer."""


def launch_state(run_dir: Path | str) -> tuple[str | None, int | None]:
    """What the app's training job (``RunFolder.job``) says beyond the trainer's own marker: ``("starting",
    pid)`` while it runs but has not yet marked the run, ``("failed", None)`` when it ended without a
    checkpoint, else ``(None, None)``."""
    folder = RunFolder(run_dir)
    job = folder.job().status()
    if job.state == "running" and running_pid(run_dir) is None:
        return "starting", job.pid
    if job.state in ("failed", "finished", "stopped") and not folder.checkpoint_step() and not folder.evaluated:
        return "failed", None
    return None, None


def stop_training(run_dir: Path | str, pid: int) -> None:
    """SIGTERM ``pid`` when it is this run's trainer (checked in /proc; it checkpoints and exits) or the app's job
    still starting it; anything else is refused, so a pid written in a workspace file is never signalled."""
    if is_trainer_of(pid, run_dir):
        os.kill(pid, signal.SIGTERM)
    elif not (RunFolder(run_dir).job().status().pid == pid and RunFolder(run_dir).job().stop()):
        raise NotTrainerError(f"process {pid} is not a `workbench train` process for {Path(run_dir).name} "
                              "(checked in /proc); stop it from where it was started")
