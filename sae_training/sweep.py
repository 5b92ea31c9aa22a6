"""A training sweep from a small spec file: a grid (e.g. k or L1 coefficient x architecture x MFR on/off x
seeds) over one base config and one cache, every run trained (resumed after a kill) and then the whole grid
evaluated together (``interp.pipeline.evals``), so each seed's partners are in the same comparison.

Spec (JSON)::

    {"base": {"cache": "cached_activations/demo", "hook": "blocks.1.hook_resid_post", "d_sae": 512,
              "n_members": 1, "n_tokens": 819200, "batch_size": 2048, "lr": 0.004},
     "grid": {"architecture": ["topk", "batchtopk"], "k": [8, 16], "mfr_coefficient": [0, 1], "seed": [0, 1]},
     "metrics": ["core", "sparse_probing", "stability"]}

A run is named ``<prefix>-<key><value>-...`` from its grid values; a finished run (its ``eval.json``
written) is skipped, an unfinished one resumes from its last checkpoint.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from interp.pipeline.evals import METRICS, EvalConfig, EvalReport, evaluate_saes
from interp.store.errors import InputError
from interp.store.run_folder import RunFolder
from sae_training.config import TrainConfig
from sae_training.trainer import train_saes

SPEC_KEYS = {"base", "grid", "metrics", "prefix"}


@dataclass(frozen=True)
class SweepSpec:
    base: dict
    grid: dict[str, list]
    metrics: tuple[str, ...] = METRICS
    prefix: str = "sweep"


def load_sweep(path: Path | str) -> SweepSpec:
    """Read and check a sweep spec: known keys, a non-empty list per grid key, known metrics."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"sweep spec {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise InputError(f"sweep spec {path} is not valid JSON ({error})") from None
    unknown = set(raw) - SPEC_KEYS
    if unknown or "grid" not in raw:
        raise InputError(f"sweep spec {path}: {'unknown keys ' + str(sorted(unknown)) if unknown else 'no grid'}; "
                         f"use {sorted(SPEC_KEYS)}")
    bad = [k for k, v in raw["grid"].items() if not isinstance(v, list) or not v]
    if bad or not raw["grid"]:
        raise InputError(f"sweep spec {path}: every grid key needs a non-empty list of values ({bad or 'empty grid'})")
    metrics = tuple(raw.get("metrics", METRICS))
    if set(metrics) - set(METRICS):
        raise InputError(f"sweep spec {path}: unknown metrics {sorted(set(metrics) - set(METRICS))}; use {METRICS}")
    return SweepSpec(raw.get("base", {}), raw["grid"], metrics, raw.get("prefix", "sweep"))


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", str(value))


def sweep_configs(spec: SweepSpec) -> list[tuple[str, TrainConfig]]:
    """Every grid point as (run id, config); a bad value fails here, before anything trains."""
    keys = list(spec.grid)
    out = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        point = dict(zip(keys, values))
        run_id = "-".join([spec.prefix, *(f"{_slug(k)}{_slug(v)}" for k, v in point.items())])
        out.append((run_id, TrainConfig(**{**spec.base, **point})))
    return out


def run_sweep(spec: SweepSpec, workspace: Path, eval_config: EvalConfig = EvalConfig(), model=None,
              progress=print) -> tuple[list[Path], EvalReport]:
    """Train (or resume, or skip) every grid point under ``<workspace>/runs`` and evaluate them all."""
    runs = []
    for run_id, config in sweep_configs(spec):
        folder = Path(workspace) / "runs" / run_id
        runs.append(folder)
        if RunFolder(folder).evaluated:
            continue
        progress(f"train {run_id}")
        train_saes(config, folder, resume=RunFolder(folder).exists(), progress=False, model=model)
    report = evaluate_saes(runs, Path(workspace) / "analyses", spec.metrics, eval_config, progress=progress,
                           model=model)
    return runs, report
