"""Matching any two SAEs: a planted permutation is recovered both ways; merging keeps other rows; atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from interp.features.compare import (
    LIVE_COLUMNS,
    MATCH_COLUMNS,
    check_comparable,
    has_liveness,
    match_frames,
    match_summary,
    mmcs,
    other_member,
)
from interp.features.dictionary import DictionaryError
from interp.pipeline.compare import merge_matches
from interp.store.io import write_tables


def planted(n: int = 24, d: int = 16, noise: float = 0.01, seed: int = 0):
    """A random decoder and B = a row permutation of it plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    W_a = torch.randn(n, d, generator=gen)
    perm = torch.randperm(n, generator=gen)
    return W_a, W_a[perm] + noise * torch.randn(n, d, generator=gen), perm.numpy()


def test_matching_recovers_a_planted_permutation_both_ways():
    W_a, W_b, perm = planted()
    ab, ba = match_frames(W_a, W_b, "x/sae_0", "y/sae_0")
    assert list(ab.columns) == MATCH_COLUMNS and list(ba.columns) == MATCH_COLUMNS
    assert np.array_equal(ba.other_feature.to_numpy(), perm)  # B's row i is A's row perm[i]
    assert np.array_equal(ab.other_feature.to_numpy()[perm], np.arange(len(perm)))
    assert ab.cosine.min() > 0.99 and mmcs(ab) == pytest.approx(mmcs(ba))
    assert set(ab.other_member) == {-1} and set(ab.other_analysis) == {"y/sae_0"}
    assert set(ba.other_analysis) == {"x/sae_0"}


def test_unequal_sizes_leave_unmatched_features_with_minus_one_and_nan():
    W_a, W_b, perm = planted(n=12)
    ab, ba = match_frames(W_a[:8], W_b, "r/sae_0", "r/sae_1")
    assert len(ab) == 8 and len(ba) == 12
    assert (ab.other_feature >= 0).all() and ab.cosine.min() > 0.99
    unmatched = ba[ba.other_feature == -1]
    assert len(unmatched) == 4 and unmatched.cosine.isna().all()
    assert set(ab.other_member) == {1} and set(ba.other_member) == {0}  # members of one run keep their index


def test_d_in_mismatch_is_refused_and_different_hooks_are_noted():
    with pytest.raises(DictionaryError, match="a/sae_0.*d_in=16.*b/sae_0.*d_in=8"):
        check_comparable("a/sae_0", 16, "h", "b/sae_0", 8, "h")
    with pytest.raises(DictionaryError, match="d_in"):
        match_frames(torch.randn(4, 16), torch.randn(4, 8), "a/sae_0", "b/sae_0")
    assert check_comparable("a/sae_0", 16, "h", "b/sae_0", 16, "h") == []
    assert "blocks.0" in check_comparable("a/sae_0", 16, "blocks.0", "b/sae_0", 16, "blocks.1")[0]
    assert other_member("r/sae_0", "r/sae_3") == 3 and other_member("r/sae_0", "s/sae_3") == -1


def test_merge_replaces_rows_of_the_same_analysis_and_keeps_the_others(tmp_path):
    W_a, W_b, _ = planted()
    ensemble, _ = match_frames(W_a, W_a.flip(0), "r/sae_0", "r/sae_1")
    first, _ = match_frames(W_a, torch.randn_like(W_b), "r/sae_0", "other/sae_0")
    merge_matches(tmp_path, ensemble)
    merge_matches(tmp_path, first)
    again, _ = match_frames(W_a, W_b, "r/sae_0", "other/sae_0")
    merge_matches(tmp_path, again)
    stored = pd.read_parquet(tmp_path / "matches.parquet")
    assert list(stored.columns) == MATCH_COLUMNS and len(stored) == 2 * len(W_a)
    for other, expected in (("r/sae_1", ensemble), ("other/sae_0", again)):
        mine = stored[stored.other_analysis == other].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, expected.reset_index(drop=True), check_dtype=False)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_failed_write_leaves_the_old_table_and_no_temp_file(tmp_path, monkeypatch):
    write_tables({"features": pd.DataFrame({"feature": [0, 1]})}, tmp_path)

    def boom(self, path, **kwargs):
        open(path, "wb").write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tables({"features": pd.DataFrame({"feature": [5]})}, tmp_path)
    monkeypatch.undo()
    assert pd.read_parquet(tmp_path / "features.parquet").feature.tolist() == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.parquet"]


def test_a_live_feature_matched_to_a_dead_latent_is_not_counted_as_shared():
    """B holds a dead latent that kept a near copy of A's live feature 3 (cosine ~1) and a live, noisier copy of
    it (cosine ~0.8); A's latent 5 is dead but points at B's live feature 5. Over all latents the Hungarian pairs
    3 with the dead copy; over live features 3 gets its live partner, and dead 5 is left out of the live MMCS."""
    gen = torch.Generator().manual_seed(1)
    n, d = 12, 32
    W_a = torch.linalg.qr(torch.randn(d, n, generator=gen))[0].T  # orthonormal rows: cosines are exact
    W_b = torch.cat([W_a, torch.zeros(1, d)])
    spare = torch.linalg.qr(torch.cat([W_a, torch.randn(1, d, generator=gen)]).T)[0].T[n]  # orthogonal to all of A
    W_b[3] = 0.8 * W_a[3] + 0.6 * spare  # live, cosine 0.8 with A's 3
    W_b[n] = W_a[3] + 0.01 * torch.randn(d, generator=gen)  # dead latent n: a near copy of A's live 3
    live_a = np.ones(n, dtype=bool)
    live_a[5] = False
    live_b = np.ones(n + 1, dtype=bool)
    live_b[n] = False
    ab, ba = match_frames(W_a, W_b, "r/sae_0", "r/sae_1", live_a, live_b)
    assert list(ab.columns) == MATCH_COLUMNS
    assert ab.other_feature[3] == n and ab.cosine[3] > 0.99 and not ab.other_alive[3]  # all latents: the dead copy
    assert ab.live_other_feature[3] == 3 and ab.live_cosine[3] == pytest.approx(float(W_a[3] @ W_b[3]), abs=1e-5)
    assert ab.live_other_feature[5] == -1 and np.isnan(ab.live_cosine[5])  # dead: no live match
    summary = match_summary(ab)
    assert summary["n_dead"] == 1 and summary["n_live"] == n - 1
    assert summary["live_to_dead"] == 1 and summary["dead_to_live"] == 1
    live_cosines = ab.live_cosine[live_a]
    assert summary["mmcs_live"] == pytest.approx(live_cosines.mean())
    assert summary["share_live_above_0.9"] == pytest.approx((live_cosines >= 0.9).mean())
    assert summary["share_live_above_0.9"] < 1.0 and ab.live_cosine[3] < 0.9  # 3's live partner is a weak match
    assert summary["mmcs_all"] > summary["mmcs_live"]  # the dead copy inflated the old figure
    back = match_summary(ba)
    assert back["n_dead"] == 1 and back["dead_to_live"] == 1  # B's dead n -> A's live 3
    assert back["live_to_dead"] == 1 and ba.other_feature[5] == 5  # B's live 5 -> A's dead 5


def test_stored_matches_without_liveness_ask_for_a_recompute(tmp_path):
    W_a, W_b, _ = planted()
    ab, _ = match_frames(W_a, W_b, "r/sae_0", "o/sae_0")
    old = ab.drop(columns=LIVE_COLUMNS)
    write_tables({"matches": old}, tmp_path)
    new, _ = match_frames(W_a, W_b, "r/sae_0", "p/sae_0")
    merge_matches(tmp_path, new)
    stored = pd.read_parquet(tmp_path / "matches.parquet")
    assert has_liveness(stored[stored.other_analysis == "p/sae_0"])
    assert not has_liveness(stored[stored.other_analysis == "o/sae_0"])
    with pytest.raises(DictionaryError, match="recompute"):
        match_summary(stored[stored.other_analysis == "o/sae_0"])
