"""Store a feature matching between two SAEs in both analysis folders' ``matches`` tables.

``merge_matches`` folds rows into an analysis folder's ``matches`` table (rows about the same other analysis are
replaced, the rest kept), atomically; ``compare_saes`` matches two SAE folders both ways and merges into both.
``python -m interp.pipeline.compare`` is what the app's Compare job runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from interp.features.compare import MATCH_COLUMNS, check_comparable, match_frames, match_summary, mmcs
from interp.features.dictionary import load_dictionary
from interp.store.analysis_folder import AnalysisFolder, analysis_id
from interp.store.io import write_parquet
from interp.store.locks import writing


def merge_matches(folder: Path | str, rows: pd.DataFrame) -> Path:
    """Fold ``rows`` into the folder's ``matches`` table: same ``other_analysis`` replaced, others kept."""
    path = AnalysisFolder(folder).table_path("matches")
    frames = [rows[MATCH_COLUMNS]]
    if path.exists():
        old = pd.read_parquet(path)
        # rows stored before liveness was recorded keep NA there (the pages ask for a recompute)
        frames.insert(0, old[~old.other_analysis.isin(set(rows.other_analysis))].reindex(columns=MATCH_COLUMNS))
    merged = pd.concat([f for f in frames if not f.empty] or frames[-1:], ignore_index=True)
    merged = merged.astype({"feature": "int64", "other_member": "int64", "other_feature": "int64", "cosine": "float64",
                            "alive": "boolean", "other_alive": "boolean", "live_other_feature": "Int64",
                            "live_cosine": "float64"})
    merged = merged.sort_values(["other_member", "other_analysis", "feature"], kind="stable").reset_index(drop=True)
    return write_parquet(merged, path)


@dataclass(frozen=True)
class Comparison:
    mmcs_ab: float  # over all latents, dead ones included
    mmcs_ba: float
    notes: list[str]
    written: tuple[Path, Path]
    summary_ab: dict  # match_summary: MMCS over live features, shares, dead matches apart
    summary_ba: dict


def live_latents(folder: Path | str) -> np.ndarray:
    """Which latents fire in the tokens the folder's dashboards read (``features.n_fires > 0``)."""
    frame = AnalysisFolder(folder).read_table("features", columns=["feature", "n_fires"]).sort_values("feature")
    return frame.n_fires.to_numpy() > 0


def _hook(folder: Path, dictionary) -> str | None:
    return AnalysisFolder(folder).meta().get("hook") or getattr(dictionary, "hook_name", None)


def compare_saes(sae_a: Path, sae_b: Path, folder_a: Path, folder_b: Path, device: str = "cpu") -> Comparison:
    """Load two SAE folders, match their features both ways (cosines on ``device``), merge into both analysis
    folders."""
    a, b = load_dictionary(sae_a, device=device), load_dictionary(sae_b, device=device)
    notes = check_comparable(str(sae_a), a.d_in, _hook(folder_a, a), str(sae_b), b.d_in, _hook(folder_b, b))
    id_a, id_b = analysis_id(folder_a), analysis_id(folder_b)
    ab, ba = match_frames(a.W_dec.detach().float(), b.W_dec.detach().float(), id_a, id_b,
                          live_latents(folder_a), live_latents(folder_b))
    with writing(folder_a, "analysis"), writing(folder_b, "analysis"):  # merges read, then replace, each table
        written = (merge_matches(folder_a, ab), merge_matches(folder_b, ba))
    return Comparison(mmcs(ab), mmcs(ba), notes, written, match_summary(ab), match_summary(ba))


def main(argv: list[str]) -> int:
    """``python -m interp.pipeline.compare SAE_A SAE_B ANALYSIS_A ANALYSIS_B``: what the app's Compare job runs."""
    if len(argv) != 4:
        print("usage: python -m interp.pipeline.compare SAE_A SAE_B ANALYSIS_A ANALYSIS_B", file=sys.stderr)
        return 2
    sae_a, sae_b, folder_a, folder_b = map(Path, argv)
    result = compare_saes(sae_a, sae_b, folder_a, folder_b)
    for note in result.notes:
        print(f"note: {note}")
    live = result.summary_ab
    print(f"MMCS over live features A->B {live['mmcs_live']:.4f}, B->A {result.summary_ba['mmcs_live']:.4f} "
          f"(all latents {result.mmcs_ab:.4f} / {result.mmcs_ba:.4f}; A: {live['n_dead']} dead, {live['live_to_dead']} "
          f"live features matched to a dead latent of B); written {', '.join(map(str, result.written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
