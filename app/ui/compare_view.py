"""Compare's summaries: each ensemble's members side by side (the within-run story: MFR vs no MFR), the
live/dead figures of one matching, and whether two runs share an initialisation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.ui import data
from app.ui.theme import plot
from interp.figures.compare import live_cosine_histogram
from interp.store.analysis_folder import AnalysisFolder
from interp.store.matches import THRESHOLDS, has_liveness, match_summary
from interp.store.run_folder import RunFolder

LIVE_HELP = ("dead = never fires in the tokens the dashboards read; live features are matched among the other's live "
             "features only (Hungarian on decoder cosine), so a live feature paired with a dead latent is not shared")


def stored(folder: Path, other: str) -> pd.DataFrame:
    """``folder``'s stored matches with the analysis ``other`` (empty when there are none)."""
    path = AnalysisFolder(folder).table_path("matches")
    return data.parquet(path, where="other_analysis = ?", params=(other,)) if path.exists() else pd.DataFrame()


def run_config(root: Path, run_id: str) -> dict:
    folder = RunFolder(root / "runs" / run_id)
    return data.read_json(folder.config_path) if folder.config_path.exists() else {}


def shared_initialisation(root: Path, id_a: str, id_b: str) -> str | None:
    """A note when two SAEs of different runs start from the same seed and shape (a match then partly
    measures the shared initialisation, not learned agreement)."""
    run_a, run_b = id_a.split("/")[0], id_b.split("/")[0]
    if run_a == run_b:
        return None
    a, b = run_config(root, run_a), run_config(root, run_b)
    same = ("seed", "d_sae", "architecture")
    if a and b and all(a.get(k) == b.get(k) for k in same) and id_a.split("/")[-1] == id_b.split("/")[-1]:
        return (f"`{run_a}` and `{run_b}` were trained from the same seed ({a.get('seed')}) at the same size: "
                "their SAEs start from identical weights, so a high cosine here partly measures that shared "
                "initialisation, not features both learned. Retrain one with another `--seed`.")
    return None


def summary_metrics(summary: dict, columns, thresholds: tuple[float, float] = THRESHOLDS, name: str = "") -> None:
    """MMCS over live features, the two shares, dead latents and the dead matches, in ``columns`` (4); each
    label starts with ``name`` (e.g. ``A→B``)."""
    low, high = thresholds
    name = f"{name}: " if name else ""
    columns[0].metric(f"{name}MMCS, live features", f"{summary['mmcs_live']:.3f}", help=LIVE_HELP)
    columns[1].metric(f"{name}share ≥ {low:g} / ≥ {high:g}",
                      f"{summary[f'share_live_above_{low}']:.0%} / {summary[f'share_live_above_{high}']:.0%}",
                      help="of the live features: their live match reaches this cosine")
    columns[2].metric(f"{name}dead latents", f"{summary['n_dead']:,} of {summary['n_features']:,}", help=LIVE_HELP)
    columns[3].metric(f"{name}live matched to dead", f"{summary['live_to_dead']:,}",
                      help="live features whose match over all latents is a dead latent: counted apart, not shared "
                           f"(dead matched to live: {summary['dead_to_live']:,}; MMCS over all latents "
                           f"{summary['mmcs_all']:.3f})")


def ensembles(root: Path, analyses: list[str]) -> list[tuple[str, str, str]]:
    """``(run_id, member 0, member 1)`` for every run with two analysed members."""
    runs: dict[str, list[str]] = {}
    for analysis in analyses:
        runs.setdefault(analysis.split("/")[0], []).append(analysis)
    return [(run, ids[0], ids[1]) for run, ids in runs.items() if len(ids) >= 2]


def within_runs(root: Path, analyses: list[str]) -> None:
    """Each ensemble's first two members matched to each other, one column per run (MFR vs no MFR)."""
    pairs = ensembles(root, analyses)
    if not pairs:
        st.info("No run with two analysed members: the within-run comparison needs an ensemble "
                "(`workbench train --ensemble 2`, then `workbench analyze features runs/<run_id>`).")
        return
    columns = st.columns(len(pairs))
    for column, (run, a, b) in zip(columns, pairs):
        matches = stored(root / "analyses" / a, b)
        config = run_config(root, run)
        with column:
            st.markdown(
                f"**{run}**: `{a.split('/')[1]}` vs `{b.split('/')[1]}` (MFR λ {config.get('mfr_coefficient', '?')}, "
                f"seed {config.get('seed', '?')})"
            )
            if matches.empty or not has_liveness(matches):
                st.warning(
                    f"No matching with firing counts stored; make it with `workbench analyze features runs/{run}`."
                )
                continue
            summary = match_summary(matches)
            summary_metrics(summary, st.columns(2) * 2, name=run)
            plot(live_cosine_histogram(matches, f"{run}: {a.split('/')[1]} → {b.split('/')[1]}"), key=f"within_{run}")
