"""Seed stability (Paulo & Belrose 2025, "Sparse Autoencoders Trained on the Same Data Learn Different
Features"): two SAEs of one config (other seeds, or the members of an ensemble) are matched one-to-one
(Hungarian, ``interp.features.matching.match_features``) on decoder cosine; a pair is shared when its
decoder and encoder cosines both exceed a threshold. Counted over LIVE latents only: a latent that never
fired is no feature, and a live latent matched to a dead one is not shared (in the demo's MFR pair, live
feature 14 matches dead feature 186 at 0.997); such dead-to-live matches are counted apart.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.features.matching import match_features

THRESHOLDS = (0.7, 0.9)


def _tag(t: float) -> str:
    return f"{t:.1f}".replace(".", "_")


def stability_pair(dec_a: Float[Tensor, "n d"], dec_b: Float[Tensor, "m d"], live_a: Bool[Tensor, " n"],
                   live_b: Bool[Tensor, " m"], enc_a: Float[Tensor, "n d"] | None = None,
                   enc_b: Float[Tensor, "m d"] | None = None, thresholds: tuple[float, ...] = THRESHOLDS
                   ) -> dict[str, float]:
    """A's latents against B's: shares of A's live latents shared at each threshold (decoder and encoder, and
    decoder alone), MMCS over pairs of live latents (decoder; encoder under its own matching), the all-latent
    MMCS for comparison, and the dead-to-live matches."""
    match = match_features(dec_a.float(), dec_b.float())
    both_live = live_a[match.rows] & live_b[match.cols]
    one_dead = live_a[match.rows] ^ live_b[match.cols]
    n_live = max(int(live_a.sum()), 1)
    enc_cos = None
    if enc_a is not None and enc_b is not None:
        enc_cos = torch.nn.functional.cosine_similarity(enc_a[match.rows].float(), enc_b[match.cols].float(), dim=-1)
    out = {"n_latents": len(live_a), "n_live": int(live_a.sum()), "n_live_other": int(live_b.sum()),
           "live_fraction": float(live_a.float().mean()),
           "mmcs_all": float(match.cos.mean()),
           "mmcs_live": float(match.cos[both_live].mean()) if both_live.any() else float("nan"),
           "dead_to_live_matches": int(one_dead.sum()),
           "live_matched_to_dead_fraction": float((live_a[match.rows] & ~live_b[match.cols]).sum() / n_live)}
    for t in thresholds:
        decoder_ok = both_live & (match.cos > t)
        out[f"shared_decoder_fraction_{_tag(t)}"] = float(decoder_ok.sum() / n_live)
        out[f"shared_fraction_{_tag(t)}"] = float((decoder_ok & (enc_cos > t)).sum() / n_live) \
            if enc_cos is not None else float("nan")
    if enc_a is not None and enc_b is not None:
        enc_match = match_features(enc_a.float(), enc_b.float())
        live_pairs = live_a[enc_match.rows] & live_b[enc_match.cols]
        out["mmcs_encoder_live"] = float(enc_match.cos[live_pairs].mean()) if live_pairs.any() else float("nan")
    else:
        out["mmcs_encoder_live"] = float("nan")
    return out


def stability_parts(pairs: dict[str, dict[str, float]]) -> tuple[dict[str, dict], list[dict], dict]:
    """The output parts: the mean over partners (category ``stability``) and one detail per partner."""
    keys = list(next(iter(pairs.values()))) if pairs else []
    mean = {k: float(np.nanmean([p[k] for p in pairs.values()])) if any(np.isfinite(p[k]) for p in pairs.values())
            else float("nan") for k in keys}
    return {"stability": {"n_partners": len(pairs), **mean}}, [{"partner": name, **p} for name, p in pairs.items()], {}
