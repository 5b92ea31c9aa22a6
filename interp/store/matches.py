"""The ``matches`` table's columns and what they say, torch-free (pages read it; ``interp.features.compare``
writes the rows): MMCS over live features, shares above cosine thresholds, dead matches counted apart."""

from __future__ import annotations

import pandas as pd

from interp.store.errors import DictionaryError

# alive: the feature fires in its analysis' tokens; live_*: its match among the other's live features only
LIVE_COLUMNS = ["alive", "other_alive", "live_other_feature", "live_cosine"]
MATCH_COLUMNS = ["feature", "other_member", "other_feature", "cosine", "other_analysis", *LIVE_COLUMNS]
THRESHOLDS = (0.7, 0.9)


def has_liveness(matches: pd.DataFrame) -> bool:
    """Whether stored ``matches`` rows say which latents fire (tables written before that do not)."""
    return set(LIVE_COLUMNS) <= set(matches.columns) and bool(matches[LIVE_COLUMNS[:2]].notna().all(axis=None))


def match_summary(matches: pd.DataFrame, thresholds: tuple[float, ...] = THRESHOLDS) -> dict:
    """One side of a matching, dead latents apart: MMCS over live features (each matched among the other's
    live ones), the share of live features whose live match reaches each threshold, and the dead matches
    counted apart (``live_to_dead``: a live feature whose match over all latents is dead; ``dead_to_live``:
    a dead latent matched to a live feature). ``mmcs_all`` is the old figure, dead latents included."""
    if not has_liveness(matches):
        raise DictionaryError("these matches were stored without firing counts; recompute them "
                              "(workbench analyze compare ..., or workbench analyze features runs/<run_id>)")
    alive, other_alive = matches.alive.astype(bool), matches.other_alive.astype(bool)
    matched = matches.other_feature >= 0
    live = matches[alive]
    out = {"n_features": len(matches), "n_live": len(live), "n_dead": int((~alive).sum()),
           "mmcs_live": float(live.live_cosine.mean()) if len(live) else float("nan"),
           "mmcs_all": float(matches.cosine.mean()),
           "live_to_dead": int((alive & matched & ~other_alive).sum()),
           "dead_to_live": int((~alive & matched & other_alive).sum())}
    for t in thresholds:
        out[f"share_live_above_{t}"] = float((live.live_cosine >= t).mean()) if len(live) else float("nan")
    return out
