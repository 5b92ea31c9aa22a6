"""Match any two SAEs' features (Hungarian on decoder cosine) and store the result in ``matches.parquet``.

``match_frames`` matches A to B once and reads the assignment both ways; ``merge_matches`` folds
rows into an analysis folder's ``matches`` table (rows about the same other analysis are
replaced, the rest kept), atomically. ``compare_saes`` does both for two SAE folders and their
analysis folders. The assignment is ``O(d_sae^3)``: seconds at a few thousand features, long at 16k+.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from interp.store.analysis_folder import AnalysisFolder, analysis_id
from interp.features.dictionary import DictionaryError
from interp.store.io import write_parquet
from interp.store.locks import writing
from interp.features.matching import match_features, match_per_row

MATCH_COLUMNS = ["feature", "other_member", "other_feature", "cosine", "other_analysis"]


def other_member(me: str, other: str) -> int:
    """The other's member index when both are members of one run, else -1 (a cross-run match)."""
    run, _, name = other.partition("/")
    found = re.fullmatch(r"sae_(\d+)", name)
    return int(found.group(1)) if found and me.split("/")[0] == run else -1


def check_comparable(name_a: str, d_in_a: int, hook_a: str | None, name_b: str, d_in_b: int,
                     hook_b: str | None) -> list[str]:
    """Raise when the decoders live in different spaces (d_in); return notes (different hooks) otherwise."""
    if d_in_a != d_in_b:
        raise DictionaryError(f"cannot compare {name_a} (d_in={d_in_a}) with {name_b} (d_in={d_in_b}): their "
                              "decoder directions live in different spaces; compare SAEs trained on the same "
                              "hook of the same model")
    if hook_a and hook_b and hook_a != hook_b:
        return [f"{name_a} reads {hook_a} but {name_b} reads {hook_b}: same width, but the cosines compare "
                "directions of different activation spaces"]
    return []


def match_frames(W_a: Float[Tensor, "n d"], W_b: Float[Tensor, "m d"], id_a: str,
                 id_b: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A's features matched in B and B's in A (one Hungarian assignment); unmatched: -1 and NaN cosine."""
    if W_a.shape[1] != W_b.shape[1]:
        raise DictionaryError(f"cannot match {id_a} (d_in={W_a.shape[1]}) with {id_b} (d_in={W_b.shape[1]})")
    match, score = match_per_row(match_features(W_a, W_b), W_a.shape[0])
    hit = np.flatnonzero(match >= 0)
    back, back_score = np.full(W_b.shape[0], -1), np.full(W_b.shape[0], np.nan)
    back[match[hit]], back_score[match[hit]] = hit, score[hit]
    return (_frame(match, score, other_member(id_a, id_b), id_b),
            _frame(back, back_score, other_member(id_b, id_a), id_a))


def _frame(match: np.ndarray, score: np.ndarray, member: int, other: str) -> pd.DataFrame:
    return pd.DataFrame({"feature": np.arange(len(match), dtype=np.int64), "other_member": np.int64(member),
                         "other_feature": match.astype(np.int64), "cosine": score.astype(np.float64),
                         "other_analysis": other})


def merge_matches(folder: Path | str, rows: pd.DataFrame) -> Path:
    """Fold ``rows`` into the folder's ``matches`` table: same ``other_analysis`` replaced, others kept."""
    path = AnalysisFolder(folder).table_path("matches")
    frames = [rows[MATCH_COLUMNS]]
    if path.exists():
        old = pd.read_parquet(path)
        frames.insert(0, old[~old.other_analysis.isin(set(rows.other_analysis))][MATCH_COLUMNS])
    merged = pd.concat([f for f in frames if not f.empty] or frames[-1:], ignore_index=True)
    merged = merged.astype({"feature": "int64", "other_member": "int64", "other_feature": "int64", "cosine": "float64"})
    merged = merged.sort_values(["other_member", "other_analysis", "feature"], kind="stable").reset_index(drop=True)
    return write_parquet(merged, path)


def mmcs(matches: pd.DataFrame) -> float:
    """Mean matched cosine over the matched features (unmatched ones are NaN and skipped)."""
    return float(matches.cosine.mean())


@dataclass(frozen=True)
class Comparison:
    mmcs_ab: float
    mmcs_ba: float
    notes: list[str]
    written: tuple[Path, Path]


def _hook(folder: Path, dictionary) -> str | None:
    return AnalysisFolder(folder).meta().get("hook") or getattr(dictionary, "hook_name", None)


def compare_saes(sae_a: Path, sae_b: Path, folder_a: Path, folder_b: Path, device: str = "cpu") -> Comparison:
    """Load two SAE folders, match their features both ways (cosines on ``device``), merge into both analysis
    folders."""
    from interp.features.dictionary import load_dictionary

    a, b = load_dictionary(sae_a, device=device), load_dictionary(sae_b, device=device)
    notes = check_comparable(str(sae_a), a.d_in, _hook(folder_a, a), str(sae_b), b.d_in, _hook(folder_b, b))
    id_a, id_b = analysis_id(folder_a), analysis_id(folder_b)
    ab, ba = match_frames(a.W_dec.detach().float(), b.W_dec.detach().float(), id_a, id_b)
    with writing(folder_a, "analysis"), writing(folder_b, "analysis"):  # merges read, then replace, each table
        written = (merge_matches(folder_a, ab), merge_matches(folder_b, ba))
    return Comparison(mmcs(ab), mmcs(ba), notes, written)


def main(argv: list[str]) -> int:
    """``python -m interp.features.compare SAE_A SAE_B ANALYSIS_A ANALYSIS_B``: what the app's Compare job runs."""
    if len(argv) != 4:
        print("usage: python -m interp.features.compare SAE_A SAE_B ANALYSIS_A ANALYSIS_B", file=sys.stderr)
        return 2
    sae_a, sae_b, folder_a, folder_b = map(Path, argv)
    result = compare_saes(sae_a, sae_b, folder_a, folder_b)
    for note in result.notes:
        print(f"note: {note}")
    print(f"MMCS A->B {result.mmcs_ab:.4f}, B->A {result.mmcs_ba:.4f}; written {', '.join(map(str, result.written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
