"""The principled evaluation (Makelov et al.; ``interp.features.principled_eval``) on the IOI task, as one
metric beside SAEBench's: sufficiency, necessity, explained variance at END, control (edit accuracy per
attribute) and interpretability (best-F1 latent per attribute value, occluded and over-split values),
with the supervised dictionary's own scores as the reference row."""

from __future__ import annotations

import pandas as pd

from interp.circuits.prompts import ioi_task
from interp.features.dictionary import Dictionary
from interp.features.principled_eval import evaluate_dictionaries

SCALARS = ("explained_variance", "sufficiency", "necessity")
PER_ATTRIBUTE = ("edit_accuracy", "edit_logit_diff", "edit_error")


def principled_tables(model, hook: str, dictionaries: dict[str, Dictionary], n_prompts: int = 128,
                      budget: int = 4, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``evaluate_dictionaries`` on ``interp.circuits.prompts.ioi_task`` (one pass for every dictionary)."""
    return evaluate_dictionaries(model, hook, ioi_task(model, n_prompts, seed=seed), dictionaries, budget)


def _metrics(rows: pd.DataFrame) -> dict[str, float]:
    first = rows.iloc[0]
    out = {k: float(first[k]) for k in SCALARS}
    for _, row in rows.iterrows():
        if isinstance(row.get("attribute"), str):
            out |= {f"{k}_{row['attribute']}": float(row[k]) for k in PER_ATTRIBUTE}
    for key in ("mean_best_f1", "n_occluded", "n_over_split"):
        if key in rows and pd.notna(first.get(key)):
            out[key] = float(first[key])
    return out


def principled_parts(summary: pd.DataFrame, flags: pd.DataFrame, name: str) -> tuple[dict[str, dict], list[dict], dict]:
    """One SAE's output parts: its metrics, the supervised reference, and its per-value occlusion table."""
    mine = summary[summary.dictionary == name]
    reference = _metrics(summary[summary.dictionary == "supervised"])
    metrics = {"principled": _metrics(mine), "supervised_reference": reference}
    details = [] if flags.empty else flags[flags.dictionary == name].drop(columns="dictionary").to_dict("records")
    return metrics, details, {"summary_rows": mine.to_dict("records")}
