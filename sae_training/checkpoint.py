"""Checkpoints: ensemble, optimiser, trainer state, RNG and data position in one file per step.

Stored as safetensors, never pickle: every tensor of the (nested) state is one safetensors entry
and everything else (the nesting, ints, floats, strings, None) is a JSON tree in the file's
metadata, so reading a checkpoint from a shared run folder cannot execute code. Written atomically
(``interp.store.io``), so a killed process never leaves half a checkpoint; the metadata also holds the
sha256 of every tensor's bytes, verified on loading, so a damaged checkpoint is refused by name (and the
newest good one before it offered) instead of resuming with wrong weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from interp.store.io import write_safetensors
from interp.store.run_folder import checkpoint_files, checkpoint_path
from sae_training.config import ConfigError

TREE_KEY = "state_tree"
DIGEST_KEY = "tensors_sha256"


class CheckpointError(ConfigError):
    """A checkpoint that is unreadable or fails its checksum; the message names it and the one to use instead."""


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy() if tensor.numel() else b"")
    return digest.hexdigest()


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
    write_safetensors(path, tensors, metadata={TREE_KEY: json.dumps(tree), DIGEST_KEY: tensors_digest(tensors)})
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    files = checkpoint_files(directory)
    return [files[step] for step in sorted(files)]


def load_checkpoint(path: Path) -> dict:
    """One checkpoint's state, its checksum verified; a file that is not one of ours (or is damaged) is refused
    with its name."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"checkpoint {path} is unreadable ({error})") from error
    if TREE_KEY not in metadata:
        raise CheckpointError(f"{path} is not a workbench checkpoint (no '{TREE_KEY}' metadata)")
    if DIGEST_KEY in metadata and tensors_digest(tensors) != metadata[DIGEST_KEY]:  # older ones carry no digest
        raise CheckpointError(f"checkpoint {path} fails its checksum (the file was damaged or modified)")
    return unflatten_state(json.loads(metadata[TREE_KEY]), tensors)


def load_latest(directory: Path) -> dict | None:
    """The newest checkpoint's state (None without one). A damaged newest one is refused by name, offering the
    newest good one before it: delete the damaged file to resume from there."""
    checkpoints = list_checkpoints(directory)
    if not checkpoints:
        return None
    try:
        return load_checkpoint(checkpoints[-1])
    except CheckpointError as error:
        good = None
        for older in reversed(checkpoints[:-1]):
            try:
                load_checkpoint(older)
            except CheckpointError:
                continue
            good = older
            break
        offer = (f"the previous good checkpoint is {good.name}: delete {checkpoints[-1].name} to resume from it"
                 if good is not None else "no earlier good checkpoint is left: train the run again")
        raise CheckpointError(f"{error}; {offer}") from None
