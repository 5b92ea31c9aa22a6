"""Match any two SAEs' features (Hungarian on decoder cosine) as ``matches`` rows (``interp.pipeline.compare`` stores them).

``match_frames`` matches A to B once and reads the assignment both ways. The assignment is ``O(d_sae^3)``:
seconds at a few thousand features, long at 16k+ (above 8,192 the candidate graph takes over).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from interp.features.dictionary import DictionaryError
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


def mmcs(matches: pd.DataFrame) -> float:
    """Mean matched cosine over the matched features (unmatched ones are NaN and skipped)."""
    return float(matches.cosine.mean())
