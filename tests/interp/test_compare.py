"""Matching any two SAEs: a planted permutation is recovered both ways; merging keeps other rows; atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from interp.features.compare import MATCH_COLUMNS, check_comparable, match_frames, mmcs, other_member
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
