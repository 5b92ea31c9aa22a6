"""``RunFolder``: the reader of an SAE run folder ``runs/<run_id>/`` and the one place its file names live.

A run holds ``config.json`` (the training config, including the cache it read), ``metrics.jsonl`` (one
line per logging step), ``eval.json`` (the final evaluation), ``running.json`` (while a process trains
it), ``checkpoints/`` (``step_<9 digits>.safetensors``, written by ``sae_training.checkpoint``), ``train.log``,
``app_launch.json`` and ``app_launch_result.json`` (a run launched from the app: an
``interp.store.jobs.Job``) and one
SAELens folder ``sae_<i>/`` per member (``cfg.json`` + ``sae_weights.safetensors``). The trainer writes
the run's JSON files through the writer methods here (atomically, via ``interp.store.io``); ``metrics.jsonl``
is appended line by line, so a reader sees whole lines only (a line cut short by a kill is the last one, and
is skipped). The readers return checked dataclasses (``RunConfig``, ``RunMetrics``) and turn a damaged file
into one ``RunFileError`` naming it. Who trains a run is proven, not guessed: ``running.json`` carries the
token of the trainer's folder lock (``interp.store.locks``) and ``trainer()`` believes its pid only while
that pid holds the lock. Imports stay light (no torch): the app lists runs with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from interp.store import locks
from interp.store.io import FileReadError, read_json, write_bytes, write_json
from interp.store.jobs import Job
from interp.store.names import is_release_spec

CONFIG = "config.json"
EVALUATION = "eval.json"
METRICS = "metrics.jsonl"
RUNNING = "running.json"
CHECKPOINTS = "checkpoints"
LOG = "train.log"
LAUNCH = "app_launch.json"
LAUNCH_RESULT = "app_launch_result.json"
SAE_CONFIG = "cfg.json"  # SAELens: every member folder holds one
SAE_WEIGHTS = "sae_weights.safetensors"
SAE_SPARSITY = "sparsity.safetensors"
FILES = (CONFIG, EVALUATION, METRICS, RUNNING, CHECKPOINTS, LOG, LAUNCH, LAUNCH_RESULT, locks.LOCK)
CHECKPOINT = re.compile(r"step_(\d+)\.safetensors")  # one file per step in ``checkpoints/``


class RunFileError(FileReadError):
    """A run's file (config, metrics, evaluation) that is damaged; the message names it and what to do."""


@dataclass(frozen=True)
class RunConfig:
    """The fields of a run's ``config.json`` that listings, pages and analyses read, type-checked; ``values``
    is the whole file (what ``sae_training.config.TrainConfig.from_dict`` rebuilds the config from)."""

    architecture: str
    d_sae: int
    n_members: int
    mfr_coefficient: float
    n_tokens: int
    batch_size: int
    hook: str
    cache: str | None
    model: str | None
    values: dict

    @property
    def n_steps(self) -> int:
        return self.n_tokens // self.batch_size


@dataclass(frozen=True)
class RunMetrics:
    """``metrics.jsonl``: one dict per logged step; ``cut_short`` when its last line was half written (a kill)."""

    rows: tuple[dict, ...]
    cut_short: bool = False


def _field(values: dict, name: str, kind, default, path: Path, positive: bool = False):
    value = values.get(name, default)
    ok = (value is None and default is None) or (
        isinstance(value, kind) and not isinstance(value, bool) and (not positive or value > 0)
    )
    if not ok:
        need = f"a positive {kind.__name__}" if positive else (kind.__name__ if isinstance(kind, type) else "a number")
        raise RunFileError(
            f"run config {path} is damaged ('{name}' is {value!r}, not {need}); retrain the run or restore that file"
        )
    return value


def parse_config(values, path: Path) -> RunConfig:
    """``config.json``'s parsed JSON checked field by field."""
    if not isinstance(values, dict):
        raise RunFileError(
            f"run config {path} is damaged (a JSON {type(values).__name__}, not an object); "
            "retrain the run or restore that file"
        )
    return RunConfig(
        architecture=_field(values, "architecture", str, "topk", path),
        d_sae=_field(values, "d_sae", int, 4096, path, positive=True),
        n_members=_field(values, "n_members", int, 1, path, positive=True),
        mfr_coefficient=float(_field(values, "mfr_coefficient", (int, float), 0.0, path)),
        n_tokens=_field(values, "n_tokens", int, None, path, positive=True),
        batch_size=_field(values, "batch_size", int, None, path, positive=True),
        hook=_field(values, "hook", str, "", path),
        cache=_field(values, "cache", str, None, path),
        model=_field(values, "model", str, None, path),
        values=values,
    )


def checkpoint_path(directory: Path, step: int) -> Path:
    """The file of step ``step``'s checkpoint in a ``checkpoints/`` folder (zero-padded: sorts by name too)."""
    return Path(directory) / f"step_{step:09d}.safetensors"


def checkpoint_files(directory: Path) -> dict[int, Path]:
    """A checkpoints folder's files by step (empty when the folder does not exist)."""
    directory = Path(directory)
    if not directory.exists():
        return {}
    return {int(m.group(1)): p for p in directory.iterdir() if (m := CHECKPOINT.fullmatch(p.name))}


def sae_members(path: Path) -> list[Path]:
    """An SAE folder itself, every ``sae_*`` member of a run folder, or a ``saelens:`` release spec."""
    if is_release_spec(path) or RunFolder.is_sae(path):
        return [path]
    members = RunFolder(path).members()
    if not members:
        raise FileNotFoundError(f"{path} is neither a SAELens SAE folder ({SAE_CONFIG}) nor a run with sae_* members")
    return members


class RunFolder:
    """One run folder: its files by role, its config, members, evaluation and logged metrics."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @staticmethod
    def is_sae(folder: Path | str) -> bool:
        """Whether ``folder`` is a SAELens SAE folder (holds ``cfg.json``)."""
        return (Path(folder) / SAE_CONFIG).exists()

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def evaluation_path(self) -> Path:
        return self.path / EVALUATION

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def running_path(self) -> Path:
        return self.path / RUNNING

    @property
    def checkpoints_path(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint_step(self) -> int:
        """The step of the newest checkpoint (0 if none), from file names only."""
        return max(checkpoint_files(self.checkpoints_path), default=0)

    def member_path(self, i: int) -> Path:
        """Member ``i``'s SAELens folder ``sae_<i>/``."""
        return self.path / f"sae_{i}"

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def launch_path(self) -> Path:
        return self.path / LAUNCH

    def job(self) -> Job:
        """The app's training job for this run: record ``app_launch.json``, result ``app_launch_result.json``,
        output appended to ``train.log``."""
        return Job(self.launch_path, self.path / LAUNCH_RESULT, self.log_path)

    def files(self) -> list[Path]:
        """Every file of the run other than its members (what a workspace boundary check must cover)."""
        return [self.path / name for name in FILES]

    def exists(self) -> bool:
        return self.config_path.exists()

    def members(self) -> list[Path]:
        return sorted(p for p in self.path.glob("sae_*") if self.is_sae(p))

    def read_config(self) -> RunConfig:
        """``config.json`` checked (``RunConfig``); a missing, unparsable or ill-shaped one raises ``RunFileError``."""
        try:
            values = read_json(self.config_path, "run config", RunFileError)
        except RunFileError as error:
            if not self.config_path.exists():
                raise
            raise RunFileError(f"{error}; restore that file or train the run again") from None
        return parse_config(values, self.config_path)

    def config(self) -> dict:
        """``config.json`` as a dict, after the checks of ``read_config``."""
        return self.read_config().values

    def cache(self, for_what: str | None = None) -> Path:
        """The activation cache the run trained on (``config.json`` "cache")."""
        cache = self.read_config().cache if self.config_path.exists() else None
        if not cache:
            raise FileNotFoundError(
                f"no cache recorded for {for_what or self.path} (no 'cache' in {self.config_path}); pass --cache"
            )
        return Path(cache)

    @property
    def evaluated(self) -> bool:
        return self.evaluation_path.exists()

    def evaluation(self) -> dict:
        """``eval.json``, or ``{}`` before the final evaluation."""
        if not self.evaluated:
            return {}
        values = read_json(self.evaluation_path, "run evaluation", RunFileError)
        members = values.get("members", []) if isinstance(values, dict) else None
        if not isinstance(members, list) or not all(isinstance(member, dict) for member in members):
            raise RunFileError(
                f"run evaluation {self.evaluation_path} is damaged (not an object with a 'members' "
                "list); resume the run to evaluate it again"
            )
        return values

    def read_metrics(self) -> RunMetrics:
        """``metrics.jsonl`` checked: every line a JSON object with an integer ``step``. A last line cut short
        (no newline: the process died while writing it) is skipped; any other bad line raises ``RunFileError``
        naming the file and line."""
        if not self.metrics_path.exists():
            return RunMetrics(())
        try:
            text = self.metrics_path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise RunFileError(f"metrics {self.metrics_path} cannot be read ({error})") from None
        lines, rows, cut = text.split("\n"), [], False
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                    raise TypeError("not an object with an integer 'step'")
            except (ValueError, TypeError) as error:
                if number == len(lines):  # the last line and no newline after it: a write cut short
                    cut = True
                    continue
                raise RunFileError(
                    f"metrics {self.metrics_path}:{number} is damaged ({error}); resume the run "
                    "(it rewrites the log up to its checkpoint) or delete that line"
                ) from None
            rows.append(row)
        return RunMetrics(tuple(rows), cut)

    def metrics_rows(self) -> list[dict]:
        """``metrics.jsonl`` as dicts (empty when nothing was logged): ``read_metrics().rows``."""
        return list(self.read_metrics().rows)

    def running_pid(self) -> int | None:
        """The pid recorded in ``running.json``, or None without a readable one (``trainer`` proves it)."""
        try:
            return int(json.loads(self.running_path.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def trainer(self) -> int | None:
        """The pid training this run now, proven: ``running.json``'s pid and token are those of the live holder
        of the run's folder lock (which has the lock file open). A pid merely written in a file is never it."""
        try:
            record = json.loads(self.running_path.read_text())
            pid, token = int(record["pid"]), str(record["token"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        holder = locks.holder(self.path)
        return pid if holder is not None and holder.pid == pid and holder.token == token else None

    # writers (the trainer's): each file replaced atomically, metrics appended whole lines at a time

    def write_config(self, values: dict) -> Path:
        """``config.json`` (keys sorted), creating the folder."""
        return write_json(self.config_path, values)

    def write_evaluation(self, result: dict) -> Path:
        """``eval.json``, in the caller's key order."""
        return write_json(self.evaluation_path, result, sort_keys=False)

    def write_metrics(self, rows: list[dict]) -> Path:
        """``metrics.jsonl`` replaced by ``rows`` (empty for a fresh start, the kept prefix on resume)."""
        return write_bytes(self.metrics_path, "".join(json.dumps(row) + "\n" for row in rows).encode())

    def append_metrics(self, row: dict) -> None:
        """One logged step as a line of ``metrics.jsonl``."""
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    @contextlib.contextmanager
    def running(self, active: bool = True) -> Iterator[None]:
        """Hold ``running.json`` (``{"pid", "started", "token"}``, written atomically) while the body trains;
        remove it after. The token is that of this process's lock on the folder (``locks.writing``), taken
        here if the caller did not. ``active=False`` (a non-main rank) writes nothing."""
        with contextlib.ExitStack() as stack:
            if active:
                holder = stack.enter_context(locks.writing(self.path, "run folder"))
                write_json(
                    self.running_path,
                    {"pid": os.getpid(), "started": time.time(), "token": holder.token},
                    sort_keys=False,
                )
            try:
                yield
            finally:
                if active:
                    self.running_path.unlink(missing_ok=True)

    def n_logged(self) -> int:
        if not self.metrics_path.exists():
            return 0
        with self.metrics_path.open(errors="replace") as lines:
            return sum(1 for line in lines if line.strip())


def list_runs(root: Path | str) -> list[RunFolder]:
    """Run folders (those with a config) under ``root`` (a ``runs/`` folder)."""
    return [RunFolder(p.parent) for p in sorted(Path(root).glob(f"*/{CONFIG}"))]
