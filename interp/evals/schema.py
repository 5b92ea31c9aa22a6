"""SAEBench's eval-output layout (``sae_bench/evals/base_eval_output.py``) as plain dicts, so SAEBench's
own classes and plotting read our JSON.

Every output holds ``eval_type_id``, ``eval_config``, ``eval_id`` (a UUID), ``datetime_epoch_millis``,
``eval_result_metrics`` (categories of flat metrics: SAEBench's ``BaseMetrics`` forbids nesting),
``eval_result_details`` (a list of flat records), ``sae_bench_commit_hash``, ``sae_lens_id``,
``sae_lens_release_id``, ``sae_lens_version``, ``sae_cfg_dict`` and ``eval_result_unstructured``.
Core, sparse probing and absorption use SAEBench's own type ids and metric names; seed stability, the
principled evaluation and the explanation scores have no SAEBench counterpart and take new type ids in the
same layout.
"""

from __future__ import annotations

import importlib.metadata
import math
import time
import uuid

from interp.store.errors import InputError

EVAL_TYPE_IDS = {"core": "core", "sparse_probing": "sparse_probing", "absorption": "absorption_first_letter",
                 "principled": "principled_ioi", "stability": "seed_stability",
                 "explanations": "explanation_scores"}
# SAEBench records the commit of the SAEBench that ran; ours did not run SAEBench, and says so
NOT_SAE_BENCH = "none: computed by interp-workbench's own implementation"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _clean(value):
    """JSON-safe: NaN and infinities become None (SAEBench's float fields then fail loudly, not silently)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def check_flat(metrics: dict[str, dict]) -> None:
    """SAEBench's rule: ``eval_result_metrics`` is categories of flat metrics (no dict inside a category)."""
    for category, values in metrics.items():
        if not isinstance(values, dict):
            raise InputError(f"metric category '{category}' must be a dict of metrics, got {type(values).__name__}")
        nested = [name for name, value in values.items() if isinstance(value, dict)]
        if nested:
            raise InputError(f"metrics {nested} of category '{category}' are dicts; SAEBench metrics are flat")


def eval_output(metric: str, config: dict, metrics: dict[str, dict], details: list[dict], sae_id: str,
                release_id: str, sae_cfg: dict, unstructured=None) -> dict:
    """One evaluation's result in SAEBench's layout (``metric``: a key of ``EVAL_TYPE_IDS``)."""
    if metric not in EVAL_TYPE_IDS:
        raise InputError(f"unknown metric '{metric}'; use one of {', '.join(EVAL_TYPE_IDS)}")
    check_flat(metrics)
    return _clean({
        "eval_type_id": EVAL_TYPE_IDS[metric], "eval_config": config, "eval_id": str(uuid.uuid4()),
        "datetime_epoch_millis": int(time.time() * 1000), "eval_result_metrics": metrics,
        "eval_result_details": details, "sae_bench_commit_hash": NOT_SAE_BENCH, "sae_lens_id": sae_id,
        "sae_lens_release_id": release_id, "sae_lens_version": _version("sae-lens"), "sae_cfg_dict": sae_cfg,
        "eval_result_unstructured": unstructured,
    })


def metric_rows(output: dict) -> list[dict]:
    """The output's scalar metrics as rows ``{metric, category, name, value}`` (booleans and numbers)."""
    rows = []
    for category, values in output["eval_result_metrics"].items():
        for name, value in values.items():
            if isinstance(value, (int, float)) or value is None:
                rows.append({"category": category, "name": name,
                             "value": float("nan") if value is None else float(value)})
    return rows
