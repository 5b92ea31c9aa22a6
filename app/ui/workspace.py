"""The workspace the app serves: where it is, what it holds, and refusing paths outside it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from interp.store.cache_manifest import MANIFEST, read_manifest
from interp.store.errors import InputError

ENV_VAR = "WORKBENCH_WORKSPACE"


class UnsafePathError(InputError):
    """A typed path that leaves the workspace (``..``, an absolute path elsewhere, a symlink out)."""


def workspace_root() -> Path:
    """``--workspace DIR`` after ``--`` on the streamlit command line, else ``$WORKBENCH_WORKSPACE``, else cwd."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--workspace" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if arg.startswith("--workspace="):
            return Path(arg.split("=", 1)[1]).resolve()
    return Path(os.environ.get(ENV_VAR, ".")).resolve()


def inside(root: Path, path: Path | str) -> Path:
    """``path`` (relative to ``root`` unless absolute) resolved, symlinks included; refused unless it lies
    inside ``root``. Every file the app reads goes through this."""
    root = Path(root).resolve()
    resolved = (root / path).resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafePathError(f"'{path}' is outside the workspace {root} (through '..', an absolute path or a "
                              "symbolic link); the app reads only files inside it")
    return resolved


def contained(root: Path, *paths: Path) -> bool:
    """Whether every one of ``paths`` that exists resolves inside ``root`` (listings skip the others)."""
    try:
        for path in paths:
            if path.exists() or path.is_symlink():
                inside(root, path)
    except UnsafePathError:
        return False
    return True


def safe_path(root: Path, typed: str | Path) -> Path:
    """``typed`` (relative to ``root``) resolved; refused unless it stays inside ``root``."""
    text = str(typed).strip()
    if not text:
        raise UnsafePathError("empty path: type a folder inside the workspace, e.g. analyses/demo-mfr/sae_0")
    if "\x00" in text:
        raise UnsafePathError("a path cannot contain NUL bytes")
    return inside(root, text)


def model_spec(root: Path, spec: str) -> str:
    """What the app may load for a model spec read from a workspace file: ``demo``, a TransformerLens
    pretrained name, or a checkpoint folder inside the workspace (returned resolved); anything else is refused."""
    if spec == "demo":
        return spec
    text = str(spec).strip()
    local = Path(text).expanduser()
    if "\x00" not in text and ((root / local).exists() or local.is_absolute() or ".." in local.parts
                                or Path(text).exists()):
        folder = inside(root, local)  # a path: it must be a folder inside the workspace
        if not folder.is_dir():
            raise UnsafePathError(f"model '{spec}' is not a checkpoint folder inside the workspace")
        return str(folder)
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(text)
    except ValueError:
        raise UnsafePathError(f"model '{spec}' (named by a file in the workspace) is neither 'demo', a "
                              "TransformerLens pretrained name nor a folder inside the workspace; the app does not "
                              "load it") from None
    return text


@dataclass(frozen=True)
class Cache:
    cache_id: str
    model: str
    hooks: tuple[str, ...]
    n_tokens: int
    status: str  # complete | running | damaged: <why>

    @property
    def usable(self) -> bool:
        return not self.status.startswith("damaged")


@dataclass(frozen=True)
class Run:
    run_id: str
    path: Path
    architecture: str
    d_sae: int
    n_members: int
    mfr: float
    members: tuple[dict, ...]  # eval.json members (fvu, l0, dead_fraction, ...); empty until evaluated
    n_steps_logged: int
    state: str  # running | finished | stopped at step N of M [(not evaluated)] | not started


def run_state(folder: Path, evaluated: bool) -> str:
    """A run's state from its files alone (``sae_training.run_status``: no torch import)."""
    from sae_training.run_status import checkpoint_step, running_pid, total_steps

    if running_pid(folder):
        return "running"
    try:
        done, total = checkpoint_step(folder), total_steps(folder)
    except InputError as error:  # a damaged config.json: say so, the rest of the page still renders
        return f"damaged: {error}"
    if evaluated:
        return "finished"
    if total is not None and done >= total:  # killed while evaluating: Resume re-runs the evaluation
        return f"stopped at step {done:,} of {total:,} (not evaluated)"
    return f"stopped at step {done:,} of {total:,}" if done else "not started"


def list_caches(root: Path) -> list[Cache]:
    """The workspace's caches (those whose manifest resolves inside it); a damaged manifest is a row saying so."""
    caches = []
    for path in sorted((root / "cached_activations").glob(f"*/{MANIFEST}")):
        if not contained(root, path):
            continue
        try:
            manifest = read_manifest(path.parent)
        except InputError as error:
            caches.append(Cache(path.parent.name, "?", (), 0, f"damaged: {error}"))
            continue
        caches.append(Cache(manifest.cache_id, manifest.model, tuple(manifest.hooks), manifest.n_tokens,
                            manifest.status))
    return caches


def list_runs(root: Path) -> list[Run]:
    """The workspace's runs: folders whose files (config, evaluation, metrics, status) all resolve inside it;
    a run with a damaged file is a row whose state says which file and why."""
    from interp.store.run_folder import list_runs as stored

    runs = []
    for run in stored(root / "runs"):
        if not contained(root, run.path, *run.files()):
            continue
        try:
            config, evaluation = run.read_config(), run.evaluation()
            state = run_state(run.path, bool(evaluation))
        except InputError as error:
            runs.append(Run(run.run_id, run.path, "?", 0, 0, 0.0, (), run.n_logged(), f"damaged: {error}"))
            continue
        runs.append(Run(run.run_id, run.path, config.architecture, config.d_sae, config.n_members,
                        config.mfr_coefficient, tuple(evaluation.get("members", [])), run.n_logged(), state))
    return runs


def list_analyses(root: Path) -> list[str]:
    """Analysis ids ``<run_id>/sae_<i>`` that hold a feature table."""
    from interp.store.analysis_folder import AnalysisFolder
    from interp.store.analysis_folder import list_analyses as stored

    if not (root / "analyses").exists():
        return []
    return [analysis for analysis in stored(root / "analyses")
            if contained(root, AnalysisFolder(root / "analyses" / analysis).table_path("features"))]


def train_command(cache_id: str = "demo") -> str:
    return (f"workbench train --cache cached_activations/{cache_id} --hook blocks.1.hook_resid_post "
            "--arch topk --k 16 --d-sae 512 --ensemble 2 --mfr 1.0 --tokens 1M --run-id demo-mfr")


COMMANDS = {
    "cache": ("workbench cache --model demo --data demo --hooks blocks.0.hook_resid_post,blocks.1.hook_resid_post "
              "--cache-id demo"),
    "features": "workbench analyze features runs/{run_id}",
    "geometry": "workbench analyze geometry runs/{run_id}",
    "circuits": "workbench analyze circuits induction --sae runs/demo-mfr/sae_0",
    "demo": "workbench demo",
}
