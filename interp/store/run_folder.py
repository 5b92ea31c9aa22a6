"""``RunFolder``: the reader of an SAE run folder ``runs/<run_id>/`` and the one place its file names live.

A run holds ``config.json`` (the training config, including the cache it read), ``metrics.jsonl`` (one
line per logging step), ``eval.json`` (the final evaluation), ``running.json`` (while a process trains
it), ``checkpoints/`` (``step_<9 digits>.safetensors``, written by ``sae_training.checkpoint``), ``train.log``, ``app_launch.json`` and ``app_launch_result.json`` (a run launched from the app: an
``interp.store.jobs.Job``) and one
SAELens folder ``sae_<i>/`` per member (``cfg.json`` + ``sae_weights.safetensors``). The trainer writes
the run's JSON files through the writer methods here (atomically, via ``interp.store.io``); ``metrics.jsonl``
is appended line by line, so a reader sees whole lines only. Imports stay light (no torch): the app
lists runs with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from interp.store.io import read_json, write_bytes, write_json
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
FILES = (CONFIG, EVALUATION, METRICS, RUNNING, CHECKPOINTS, LOG, LAUNCH, LAUNCH_RESULT)
CHECKPOINT = re.compile(r"step_(\d+)\.safetensors")  # one file per step in ``checkpoints/``


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

    def config(self) -> dict:
        return read_json(self.config_path, "run config")

    def cache(self, for_what: str | None = None) -> Path:
        """The activation cache the run trained on (``config.json`` "cache")."""
        cache = json.loads(self.config_path.read_text()).get("cache") if self.config_path.exists() else None
        if not cache:
            raise FileNotFoundError(f"no cache recorded for {for_what or self.path} (no 'cache' in "
                                    f"{self.config_path}); pass --cache")
        return Path(cache)

    @property
    def evaluated(self) -> bool:
        return self.evaluation_path.exists()

    def evaluation(self) -> dict:
        """``eval.json``, or ``{}`` before the final evaluation."""
        return read_json(self.evaluation_path, "run evaluation") if self.evaluated else {}

    def metrics_rows(self) -> list[dict]:
        """``metrics.jsonl`` as dicts (empty when nothing was logged)."""
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def running_pid(self) -> int | None:
        """The pid recorded in ``running.json``, or None without a readable one (liveness is the caller's check)."""
        try:
            return int(json.loads(self.running_path.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

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
        """Hold ``running.json`` (``{"pid", "started"}``, written atomically) while the body trains; remove it
        after. ``active=False`` (a non-main rank) writes nothing."""
        if active:
            write_json(self.running_path, {"pid": os.getpid(), "started": time.time()}, sort_keys=False)
        try:
            yield
        finally:
            if active:
                self.running_path.unlink(missing_ok=True)

    def n_logged(self) -> int:
        if not self.metrics_path.exists():
            return 0
        with self.metrics_path.open() as lines:
            return sum(1 for line in lines if line.strip())


def list_runs(root: Path | str) -> list[RunFolder]:
    """Run folders (those with a config) under ``root`` (a ``runs/`` folder)."""
    return [RunFolder(p.parent) for p in sorted(Path(root).glob(f"*/{CONFIG}"))]
