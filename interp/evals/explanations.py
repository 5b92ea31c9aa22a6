"""Explanation scores as an evaluation: one SAE's ``explanations`` table (``interp.explain``: every latent
explained on its training windows, scored on its held-out ones beside a random baseline) summarised in
SAEBench's layout.

Per score (detection, detection on hard negatives, fuzzing, simulation; and the LLM explainer's detection and
fuzzing when the table has them): the median over scored latents, the median of its random baseline (another
latent's explanation scored on the same windows) and the share of latents whose score beats their baseline by
``MARGIN``; plus how many latents were explained, dead or too rare. Details: the same medians per rule family.
SAEBench's nearest metric, ``autointerp`` (an LLM's detection score), is not this one: the scores here come
from the offline rule explainer, so the type id is the workbench's own.
"""

from __future__ import annotations

import pandas as pd

from interp.explain.explanations import DEAD, EXPLAINED, TOO_RARE
from interp.explain.scoring import SCORES
from interp.store.errors import InputError

MARGIN = 0.2  # a latent "beats its baseline" when its score is at least this much above it
LLM_SCORES = ("llm_detection", "llm_fuzzing")
REQUIRED = ("feature", "status", *SCORES, *(f"baseline_{s}" for s in SCORES))


def _tag(margin: float) -> str:
    return f"{margin:g}".replace(".", "_")


def score_summary(table: pd.DataFrame, score: str, baseline: str, margin: float = MARGIN) -> dict[str, float]:
    """``<score>_median``, ``<score>_baseline_median``, ``<score>_beats_baseline_<margin>`` (share of the
    latents with both values) and ``<score>_n_scored``; medians are None when nothing was scored."""
    scored = table.dropna(subset=[score, baseline])
    if scored.empty:
        return {f"{score}_median": None, f"{score}_baseline_median": None,
                f"{score}_beats_baseline_{_tag(margin)}": None, f"{score}_n_scored": 0}
    return {f"{score}_median": float(scored[score].median()),
            f"{score}_baseline_median": float(scored[baseline].median()),
            f"{score}_beats_baseline_{_tag(margin)}": float((scored[score] >= scored[baseline] + margin).mean()),
            f"{score}_n_scored": int(len(scored))}


def check_table(table: pd.DataFrame, where: str) -> None:
    """Refuse a table without the columns ``interp.explain`` writes (one line naming them and the fix)."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise InputError(f"{where} lacks column(s) {missing}; remake it with `workbench explain`")


def explanation_parts(table: pd.DataFrame, margin: float = MARGIN) -> tuple[dict[str, dict], list[dict], dict]:
    """SAEBench-layout categories, per-family details and the unstructured extras of one ``explanations``
    table (one row per latent)."""
    status = table.status.value_counts()
    n = len(table)
    metrics = {"coverage": {"n_latents": n, "n_explained": int(status.get(EXPLAINED, 0)),
                            "n_dead": int(status.get(DEAD, 0)), "n_too_rare": int(status.get(TOO_RARE, 0)),
                            "explained_fraction": float(status.get(EXPLAINED, 0)) / n if n else None}}
    for score in SCORES:
        metrics[score] = score_summary(table, score, f"baseline_{score}", margin)
    llm = [s for s in LLM_SCORES if s in table and f"llm_baseline_{s[4:]}" in table and table[s].notna().any()]
    if llm:
        metrics["llm"] = {k: v for s in llm for k, v in score_summary(table, s, f"llm_baseline_{s[4:]}",
                                                                       margin).items()}
    details = []
    if "family" in table:
        for family, rows in table[table.status == EXPLAINED].groupby("family", sort=True):
            details.append({"family": str(family), "n_latents": int(len(rows)),
                            **{f"{s}_median": float(rows[s].median()) if rows[s].notna().any() else None
                               for s in SCORES}})
    unstructured = {"margin": margin, "scored_on": "each latent's held-out windows (explain_examples test sets)",
                    "baseline": "mean score of other latents' explanations on the same windows",
                    "explainer": "offline rules (interp.explain.rules)" + (" and an LLM" if llm else "")}
    return metrics, details, unstructured
