"""What a run folder says about its state, read without torch: who trains it now, how far it got.

``running.json`` (``{"pid", "started", "token"}``) exists while a process trains the run; the trainer writes it
atomically when the loop starts, holding the run folder's writer lock whose token it names, and removes it
when it ends or stops. The app reads these to show "running"/"stopped"/"finished" and to offer Stop and
Resume for any run, however it was launched; nothing is read from other processes' command lines.
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
    """The pid training ``run_dir`` right now, or None: proven by the trainer's own record (``RunFolder.trainer``:
    ``running.json``'s token is that of the live holder of the run's folder lock), never by a command line."""
    return RunFolder(run_dir).trainer()


def is_trainer_of(pid: int, run_dir: Path | str) -> bool:
    """Whether ``pid`` is the process training ``run_dir`` (``running_pid``). A pid read from a file is signalled
    only after this check, so a workspace file cannot point Stop at another process."""
    return pid is not None and running_pid(run_dir) == pid


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
    return folder.read_config().n_steps


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
                              "(it does not hold the run's lock); stop it from where it was started")
