"""One writer per folder: an advisory lock held by the process that writes a cache, run or analysis folder.

``writing(folder, what)`` takes an exclusive ``fcntl.flock`` on ``<folder>/.writer.lock`` before any write
and holds it until the body ends; the kernel drops it when the process dies (kill -9 included), so a
lock never outlives its writer. The holder writes ``{pid, started, token}`` into the lock file, so a
second writer is refused with one line naming the pid and its start time, and a reader can prove who
holds a folder (``holder``: the lock is held, and that pid has the lock file open). Taking the lock
also sweeps the temporary files (``interp.store.io.TMP``) left by dead writers. Re-entrant within a
thread (a pipeline step may call another that writes the same folder); another thread of the same
process (an app session) is refused like another process. No torch here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from interp.store.errors import InputError
from interp.store.io import sweep_temporary

LOCK = ".writer.lock"

_held: dict[Path, tuple[int, Holder, int, int]] = {}  # folder -> (fd, holder, depth, thread) of this process's locks
_guard = threading.Lock()


class FolderBusyError(InputError):
    """Another live process writes this folder."""


class FolderWriteError(InputError):
    """The folder cannot be written at all (a file in the way, read-only, no permission)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a folder's lock: the pid, its start time (epoch seconds) and a random token."""

    pid: int
    started: float
    token: str

    def describe(self) -> str:
        return f"pid {self.pid} (started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))})"


def lock_path(folder: Path | str) -> Path:
    return Path(folder) / LOCK


def _read_holder(path: Path) -> Holder | None:
    try:
        record = json.loads(path.read_text())
        return Holder(int(record["pid"]), float(record["started"]), str(record["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _not_writable(folder: Path, error: OSError, what: str) -> FolderWriteError:
    reason = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied", errno.ENOTDIR: "a file is in the way of the folder",
              errno.EEXIST: "a file is in the way of the folder", errno.ENOSPC: "the disk is full"}
    why = reason.get(error.errno, error.strerror or type(error).__name__)
    return FolderWriteError(f"cannot write the {what} {folder} ({why}); pick a writable location")


@contextlib.contextmanager
def writing(folder: Path | str, what: str = "folder") -> Iterator[Holder]:
    """Hold ``folder``'s writer lock (creating the folder) while the body writes; a second writer is refused
    with ``FolderBusyError``, an unwritable place with ``FolderWriteError``, before anything is written."""
    folder = Path(folder).absolute()
    with _guard:
        if folder in _held:
            fd, holder, depth, thread = _held[folder]
            if thread != threading.get_ident():  # another thread of this process (an app session) writes it
                raise FolderBusyError(f"the {what} {folder} is being written by {holder.describe()}; wait for it "
                                      "to finish or pick another id")
            _held[folder] = (fd, holder, depth + 1, thread)  # this thread already writes it: nest
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield holder
        finally:
            with _guard:
                fd, holder, depth, thread = _held[folder]
                _held[folder] = (fd, holder, depth - 1, thread)
        return
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(folder), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise _not_writable(folder, error, what) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        deadline = time.time() + 1.0  # the holder writes its record right after locking: give it a moment
        while (other := _read_holder(lock_path(folder))) is None and time.time() < deadline:
            time.sleep(0.02)
        who = other.describe() if other else "another process"
        raise FolderBusyError(f"the {what} {folder} is being written by {who}; wait for it to finish or pick "
                              "another id") from None
    holder = Holder(os.getpid(), time.time(), secrets.token_hex(16))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": holder.pid, "started": holder.started, "token": holder.token}).encode(), 0)
    with _guard:
        _held[folder] = (fd, holder, 1, threading.get_ident())
    try:
        sweep_temporary(folder)  # we are the only writer: what a dead writer left half-made goes
        yield holder
    finally:
        with _guard:
            del _held[folder]
        with contextlib.suppress(OSError):  # the body may have removed the folder itself (a failed first write)
            if created and [p.name for p in folder.iterdir()] == [LOCK]:  # made for nothing: leave no trace
                lock_path(folder).unlink()
                folder.rmdir()
        os.close(fd)  # releases the lock; a folder that holds anything keeps its lock file


def holder(folder: Path | str) -> Holder | None:
    """The live process writing ``folder``, proven: its lock is held now, and the pid named in the lock
    file has that very file open (``/proc/<pid>/fd``). None when nobody writes it; a pid merely written in
    a file is never believed."""
    path = lock_path(folder)
    recorded = _read_holder(path)
    if recorded is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # held by someone: check it is the recorded pid below
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it
    finally:
        os.close(fd)
    if recorded.pid == os.getpid():
        return recorded if Path(folder).absolute() in _held else None
    return recorded if _has_open(recorded.pid, path) else None


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (one of its ``/proc/<pid>/fd`` links resolves to it)."""
    target = os.path.realpath(path)
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{name}") == target:
                return True
    return False
