"""Checkpoints: ensemble, optimiser, trainer state, RNG and data position in one file per step,
written atomically; read back with ``torch.load(weights_only=True)`` (our own files only)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

PREFIX = "step_"


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"{PREFIX}{step:09d}.pt"


def save_checkpoint(directory: Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` for ``step`` (temp file + rename) and keep only the newest ``keep`` files."""
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{PREFIX}*.pt")) if directory.exists() else []


def load_latest(directory: Path) -> dict | None:
    checkpoints = list_checkpoints(directory)
    if not checkpoints:
        return None
    return torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
