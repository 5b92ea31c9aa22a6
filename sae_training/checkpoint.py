"""Checkpoints: ensemble, optimiser, trainer state, RNG and data position in one file per step.

Stored as safetensors, never pickle: every tensor of the (nested) state is one safetensors entry
and everything else (the nesting, ints, floats, strings, None) is a JSON tree in the file's
metadata, so reading a checkpoint from a shared run folder cannot execute code. Written atomically
(``interp.store.io``), so a killed process never leaves half a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from interp.store.io import write_safetensors
from interp.store.run_folder import checkpoint_files, checkpoint_path
from sae_training.config import ConfigError

TREE_KEY = "state_tree"


def flatten_state(state: Any, tensors: dict[str, torch.Tensor], path: str = "s") -> Any:
    """A JSON-able tree of ``state`` with each tensor replaced by ``{"tensor": key}`` (collected in ``tensors``).

    Dict keys keep their type (optimizer state is keyed by int), so dicts become ``{"dict": [[k, v], ...]}``.
    """
    if isinstance(state, torch.Tensor):
        tensors[path] = state.detach().cpu().contiguous().clone()  # no shared storage: safetensors refuses it
        return {"tensor": path}
    if isinstance(state, dict):
        return {"dict": [[key, flatten_state(value, tensors, f"{path}.{key}")] for key, value in state.items()]}
    if isinstance(state, (list, tuple)):
        kind = "list" if isinstance(state, list) else "tuple"
        return {kind: [flatten_state(value, tensors, f"{path}.{i}") for i, value in enumerate(state)]}
    if state is None or isinstance(state, (bool, int, float, str)):
        return {"value": state}
    raise TypeError(f"cannot checkpoint a {type(state).__name__} at {path}")


def unflatten_state(tree: dict, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``flatten_state``."""
    (kind, value), = tree.items()
    if kind == "tensor":
        return tensors[value]
    if kind == "dict":
        return {key: unflatten_state(item, tensors) for key, item in value}
    if kind in ("list", "tuple"):
        items = [unflatten_state(item, tensors) for item in value]
        return items if kind == "list" else tuple(items)
    return value


def save_checkpoint(directory: Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` for ``step`` (atomically) and keep only the newest ``keep`` files."""
    path = checkpoint_path(directory, step)
    tensors: dict[str, torch.Tensor] = {}
    tree = flatten_state(state, tensors)
    write_safetensors(path, tensors, metadata={TREE_KEY: json.dumps(tree)})
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    files = checkpoint_files(directory)
    return [files[step] for step in sorted(files)]


def load_checkpoint(path: Path) -> dict:
    """One checkpoint's state; a file that is not one of ours is refused with its name."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ConfigError(f"checkpoint {path} is unreadable ({error}); delete it to resume from the one before") \
            from error
    if TREE_KEY not in metadata:
        raise ConfigError(f"{path} is not a workbench checkpoint (no '{TREE_KEY}' metadata)")
    return unflatten_state(json.loads(metadata[TREE_KEY]), tensors)


def load_latest(directory: Path) -> dict | None:
    checkpoints = list_checkpoints(directory)
    return load_checkpoint(checkpoints[-1]) if checkpoints else None
