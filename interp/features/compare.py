"""Match any two SAEs' features (Hungarian on decoder cosine) as ``matches`` rows (``interp.pipeline.compare`` stores
them).

``match_frames`` matches A to B once and reads the assignment both ways; given which latents fire, it also
matches the live features among themselves, so a live feature matched to a dead latent (a decoder row that
kept its initial direction, or drifted onto a live one) is never counted as shared. ``match_summary`` reads
those rows as MMCS over live features, shares above cosine thresholds and the dead matches counted apart.
The assignment is ``O(d_sae^3)``: seconds at a few thousand features, long at 16k+ (above 8,192 the
candidate graph takes over).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from jaxtyping import Bool, Float
from torch import Tensor

from interp.features.dictionary import DictionaryError
from interp.features.matching import match_features, match_per_row
from interp.store.matches import LIVE_COLUMNS, MATCH_COLUMNS, THRESHOLDS, has_liveness, match_summary  # noqa: F401


def other_member(me: str, other: str) -> int:
    """The other's member index when both are members of one run, else -1 (a cross-run match)."""
    run, _, name = other.partition("/")
    found = re.fullmatch(r"sae_(\d+)", name)
    return int(found.group(1)) if found and me.split("/")[0] == run else -1


def check_comparable(
    name_a: str, d_in_a: int, hook_a: str | None, name_b: str, d_in_b: int, hook_b: str | None
) -> list[str]:
    """Raise when the decoders live in different spaces (d_in); return notes (different hooks) otherwise."""
    if d_in_a != d_in_b:
        raise DictionaryError(
            f"cannot compare {name_a} (d_in={d_in_a}) with {name_b} (d_in={d_in_b}): their "
            "decoder directions live in different spaces; compare SAEs trained on the same "
            "hook of the same model"
        )
    if hook_a and hook_b and hook_a != hook_b:
        return [
            f"{name_a} reads {hook_a} but {name_b} reads {hook_b}: same width, but the cosines compare "
            "directions of different activation spaces"
        ]
    return []


def match_frames(
    W_a: Float[Tensor, "n d"],
    W_b: Float[Tensor, "m d"],
    id_a: str,
    id_b: str,
    live_a: Bool[np.ndarray, " n"] | None = None,
    live_b: Bool[np.ndarray, " m"] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A's features matched in B and B's in A (one Hungarian assignment over all latents, and one over the
    live ones: ``live_a`` / ``live_b``, default every latent live); unmatched: -1 and NaN cosine."""
    if W_a.shape[1] != W_b.shape[1]:
        raise DictionaryError(f"cannot match {id_a} (d_in={W_a.shape[1]}) with {id_b} (d_in={W_b.shape[1]})")
    live_a = _live(live_a, W_a.shape[0], id_a)
    live_b = _live(live_b, W_b.shape[0], id_b)
    match, score, back, back_score = _both_ways(W_a, W_b)
    rows_a, rows_b = np.flatnonzero(live_a), np.flatnonzero(live_b)
    live_match, live_score = np.full(len(live_a), -1), np.full(len(live_a), np.nan)
    live_back, live_back_score = np.full(len(live_b), -1), np.full(len(live_b), np.nan)
    if len(rows_a) and len(rows_b):
        m, sc, bk, bk_sc = _both_ways(W_a[rows_a], W_b[rows_b])
        hit, back_hit = m >= 0, bk >= 0
        live_match[rows_a[hit]], live_score[rows_a[hit]] = rows_b[m[hit]], sc[hit]
        live_back[rows_b[back_hit]], live_back_score[rows_b[back_hit]] = rows_a[bk[back_hit]], bk_sc[back_hit]
    return (
        _frame(match, score, other_member(id_a, id_b), id_b, live_a, live_b, live_match, live_score),
        _frame(back, back_score, other_member(id_b, id_a), id_a, live_b, live_a, live_back, live_back_score),
    )


def _live(live, n: int, name: str) -> np.ndarray:
    if live is None:
        return np.ones(n, dtype=bool)
    live = np.asarray(live, dtype=bool)
    if live.shape != (n,):
        raise DictionaryError(
            f"{name} has {n} latents but its firing mask has shape {live.shape}; "
            "pass one flag per latent (n_fires > 0 of its features table)"
        )
    return live


def _both_ways(W_a: Tensor, W_b: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    match, score = match_per_row(match_features(W_a, W_b), W_a.shape[0])
    hit = np.flatnonzero(match >= 0)
    back, back_score = np.full(W_b.shape[0], -1), np.full(W_b.shape[0], np.nan)
    back[match[hit]], back_score[match[hit]] = hit, score[hit]
    return match, score, back, back_score


def _frame(
    match: np.ndarray,
    score: np.ndarray,
    member: int,
    other: str,
    live: np.ndarray,
    other_live: np.ndarray,
    live_match: np.ndarray,
    live_score: np.ndarray,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feature": np.arange(len(match), dtype=np.int64),
            "other_member": np.int64(member),
            "other_feature": match.astype(np.int64),
            "cosine": score.astype(np.float64),
            "other_analysis": other,
            "alive": live,
            "other_alive": np.where(match >= 0, other_live[np.maximum(match, 0)], False),
            "live_other_feature": live_match.astype(np.int64),
            "live_cosine": live_score.astype(np.float64),
        }
    )


def mmcs(matches: pd.DataFrame) -> float:
    """Mean matched cosine over the matched features (unmatched ones are NaN and skipped)."""
    return float(matches.cosine.mean())
