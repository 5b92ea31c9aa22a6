"""Geometry on planted structure: parallelograms, co-occurrence lobes, eigenvalue power laws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from interp.features.crystals import chance_share, crystal_baseline, crystal_plane, quadruple_errors, without_hubs
from interp.features.geometry import (
    affinities,
    axial_kmeans,
    clustering_entropy,
    crystal_clusters,
    crystal_search,
    feature_map,
    geometric_labels,
    geometry_predicts_lobes,
    geometry_tables,
    lda_projection,
    lobe_agreement,
    power_law_slope,
    relation_quality,
    spectral_labels,
)


def planted_parallelograms(n_random=60, n_bases=5, d=24, distractor=0.0, seed=0):
    """Random points plus ``n_bases`` squares ``base + a u + b v``; optional per-point 'length' distractor."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=d) * 0.8, rng.normal(size=d) * 0.8
    square = [base + a * u + b * v for base in rng.normal(size=(n_bases, d)) * 2 for a in (0, 1) for b in (0, 1)]
    points = np.concatenate([np.array(square), rng.normal(size=(n_random, d)) * 2])
    if distractor:
        lengths = rng.normal(size=(len(points), 4)) * distractor
        points = np.concatenate([points, lengths], 1)
    return points, 4 * n_bases


def symbolic(i, n_planted):
    """Planted point ``i`` as (one-hot square, a, b): exact parallelograms are exact in these symbols."""
    square, corner = divmod(i, 4)
    return np.concatenate([np.eye(n_planted // 4)[square], [corner // 2, corner % 2]])


def is_planted(row, n_planted):
    if not all(getattr(row, c) < n_planted for c in "abcd"):
        return False
    s = {c: symbolic(getattr(row, c), n_planted) for c in "abcd"}
    return np.allclose(s["a"] - s["b"], s["c"] - s["d"])


def test_planted_parallelograms_are_recovered_first():
    points, n_planted = planted_parallelograms()
    found = crystal_search(points, n_neighbours=20, top=10)
    assert found.parallelogram_error.iloc[0] < 1e-6
    assert all(is_planted(row, n_planted) for row in found.itertuples())
    assert (found.trapezoid_cosine > 0.999).all()


def test_the_parallelogram_error_of_a_hand_made_quadruple():
    points = np.array([[1.0, 0.0], [0.0, 0.0], [3.0, 1.0], [2.0, 1.0], [2.0, 2.0]])
    # a - b = (1, 0) = c - d: exact; a - b = (1, 0) vs c - e = (1, -1): |(0, 1)| / mean(1, sqrt 2)
    errors = quadruple_errors(points, np.array([[0, 1, 2, 3], [0, 1, 2, 4]]))
    assert errors == pytest.approx([0.0, 1 / ((1 + np.sqrt(2)) / 2)])


def test_planted_crystals_beat_the_random_baseline_and_the_hub_filter_drops_only_hub_rows():
    points, n_planted = planted_parallelograms(n_random=80)
    found = crystal_search(points, n_neighbours=20, top=40)
    baseline = crystal_baseline(points, n=3000, seed=1)
    assert len(baseline) == 3000 and (baseline[list("abcd")].nunique(axis=1) == 4).all()
    assert np.allclose(baseline.parallelogram_error, quadruple_errors(points, baseline[list("abcd")].to_numpy()))
    exact = found[found.parallelogram_error < 1e-6]
    assert len(exact) >= 5 and all(is_planted(row, n_planted) for row in exact.itertuples())
    assert (chance_share(exact.parallelogram_error, baseline.parallelogram_error) == 0).all()  # beats every random one
    assert baseline.parallelogram_error.median() > 0.8  # random quadruples are far from parallelograms
    assert chance_share(np.array([baseline.parallelogram_error.median()]), baseline.parallelogram_error)[0] == \
        pytest.approx(0.5, abs=0.01)
    # a hub: planted feature 0 fires on 60 % of tokens, one rare feature fired once; the rest on 1 %
    frequency = pd.Series(0.01, index=range(len(points)))
    frequency[0] = 0.6
    n_fires = pd.Series(1000, index=range(len(points)))
    n_fires[5] = 1
    kept = without_hubs(found, frequency, max_frequency=0.1, min_fires=10, n_fires=n_fires)
    has_hub = found[list("abcd")].isin([0, 5]).any(axis=1)
    assert has_hub.any() and kept.index.tolist() == found.index[~has_hub].tolist()
    assert len(without_hubs(found, frequency, max_frequency=1.0)) == len(found)  # no threshold, nothing dropped
    assert without_hubs(found, frequency.drop(index=[1]), max_frequency=1.0)[list("abcd")].ne(1).all().all()


def test_the_crystal_plane_keeps_a_parallelograms_sides():
    points, _ = planted_parallelograms()
    quad = np.array([[0, 1, 2, 3]])  # square 0: base, base + v, base + u, base + u + v
    xy = crystal_plane(points, quad)[0]
    for i, j in ((0, 1), (2, 3), (0, 2), (1, 3), (0, 3)):
        assert np.linalg.norm(xy[i] - xy[j]) == pytest.approx(np.linalg.norm(points[i] - points[j]))


def planted_relations(n_relations=4, per_relation=8, n_random_pairs=16, d=16, distractor=6.0, seed=0):
    """Word pairs ``(x, x + r_c)`` of ``n_relations`` relations plus pairs of unrelated points; every point
    also carries a large random 'length' block (4 dims) that dominates the raw differences."""
    rng = np.random.default_rng(seed)
    relations = rng.normal(size=(n_relations, d))
    points, pairs, labels = [], [], []
    for c in range(n_relations):
        for _ in range(per_relation):
            base = rng.normal(size=d) * 2
            points += [base, base + relations[c]]
            pairs.append((len(points) - 1, len(points) - 2))
            labels.append(c)
    for _ in range(n_random_pairs):
        points += [rng.normal(size=d) * 2, rng.normal(size=d) * 2]
        pairs.append((len(points) - 1, len(points) - 2))
        labels.append(-1)
    points = np.concatenate([np.array(points), rng.normal(size=(len(points), 4)) * distractor], 1)
    return points, np.array(pairs), np.array(labels)


def test_crystal_clusters_recover_planted_relations_after_lda_removes_the_distractor():
    points, pairs, labels = planted_relations()
    planted = labels >= 0
    diffs = points[pairs[:, 0]] - points[pairs[:, 1]]
    train = planted & (np.arange(len(labels)) % 2 == 0)  # LDA sees half of the planted pairs
    projection = lda_projection(diffs[train], labels[train])
    assert projection.shape == (20, 3)  # centred between scatter: relations - 1 directions
    before = relation_quality(diffs[planted], labels[planted])
    after = relation_quality((diffs @ projection)[planted], labels[planted])
    assert before < 0.6 and after > 0.95
    raw = crystal_clusters(points, 5, pairs)
    projected = crystal_clusters(points, 5, pairs, projection)
    assert adjusted(labels[planted], raw.cluster.to_numpy()[planted]) < 0.5
    assert adjusted(labels[planted], projected.cluster.to_numpy()[planted]) > 0.99
    # each relation's pairs come out in one orientation (a - b along the shared centroid)
    same = projected.a.to_numpy() == pairs[:, 0]
    assert all(len(set(same[labels == c])) == 1 for c in range(4))


def test_axial_kmeans_treats_opposite_differences_as_one_relation():
    rng = np.random.default_rng(1)
    u, v = np.eye(6)[0], np.eye(6)[1]
    vectors = np.concatenate([u + 0.01 * rng.normal(size=(10, 6)), -u + 0.01 * rng.normal(size=(10, 6)),
                              v + 0.01 * rng.normal(size=(10, 6))])
    labels, centroids = axial_kmeans(vectors, 2, seed=0)
    assert len(set(labels[:20])) == 1 and labels[20] != labels[0] and len(set(labels[20:])) == 1
    assert np.abs(centroids @ np.stack([u, v]).T).max(0) == pytest.approx([1, 1], abs=1e-3)


def test_lda_needs_two_relations():
    from interp.store.errors import InputError

    with pytest.raises(InputError, match="at least 2 relations"):
        lda_projection(np.ones((4, 3)), np.zeros(4))


def block_counts(fired: np.ndarray):
    b = sp.csr_matrix(fired.astype(np.float32))
    return (b.T @ b).tocsr(), fired.shape[0]


def test_affinities_known_values():
    rng = np.random.default_rng(0)
    a = rng.random(100_000) < 0.5
    fired = np.stack([a, a, rng.random(100_000) < 0.5], 1)
    counts, n = block_counts(fired)
    for kind in ("phi", "jaccard", "dice", "overlap", "smc"):
        assert affinities(counts, n, kind)[0, 1] == pytest.approx(1.0)
    assert abs(affinities(counts, n, "phi")[0, 2]) < 0.01
    with pytest.raises(ValueError, match="unknown affinity"):
        affinities(counts, n, "cosine")


def planted_lobes(seed=0, n_blocks=4000):
    """Two groups of 50 features, each inside its own 10-dim subspace and co-firing only within its group."""
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1], 50)
    W = np.zeros((100, 20))
    W[:50, :10] = rng.normal(size=(50, 10)) + 2.0
    W[50:, 10:] = rng.normal(size=(50, 10)) + 2.0
    active_group = rng.integers(0, 2, n_blocks)
    fired = (rng.random((n_blocks, 100)) < 0.3) & (group[None, :] == active_group[:, None])
    return W, fired, group


def test_planted_lobes_match_geometry_and_random_does_not():
    W, fired, group = planted_lobes()
    counts, n = block_counts(fired)
    lobes = spectral_labels(affinities(counts, n, "phi"), 2)
    geo = geometric_labels(W, 2)
    agreement = lobe_agreement(lobes, geo, n_null=50)
    assert agreement["ami"] > 0.95 and abs(agreement["null_mean"]) < 0.05 and agreement["z"] > 10
    random_fired = np.random.default_rng(1).random(fired.shape) < 0.15
    counts, n = block_counts(random_fired)
    random_lobes = spectral_labels(affinities(counts, n, "phi"), 2)
    assert abs(lobe_agreement(random_lobes, geo, n_null=10)["ami"]) < 0.05
    logistic = geometry_predicts_lobes(W, lobes)
    assert logistic["chance"] == 0.5 and logistic["balanced_accuracy"] > 0.95
    assert geometry_predicts_lobes(W, random_lobes)["balanced_accuracy"] < 0.7


def test_power_law_slope_and_clustering_entropy():
    rng = np.random.default_rng(0)
    d = 64
    scales = np.arange(1, d + 1) ** -0.75  # eigenvalues i^-1.5
    cloud = rng.normal(size=(20_000, d)) * scales
    assert power_law_slope(cloud) == pytest.approx(1.5, abs=0.05)
    assert abs(power_law_slope(rng.normal(size=(20_000, d)))) < 0.1  # finite-sample (Marchenko-Pastur) spread
    gaussian = clustering_entropy(rng.normal(size=(5000, 8)))
    centres = rng.normal(size=(10, 8)) * 5
    clustered = clustering_entropy(centres[rng.integers(0, 10, 5000)] + rng.normal(size=(5000, 8)) * 0.3)
    assert abs(gaussian) < 0.1 and clustered > gaussian + 0.5


def test_geometry_tables_from_planted_lobes():
    W, fired, group = planted_lobes()
    counts, n = block_counts(fired)
    tables = geometry_tables(W, counts, n, n_clusters=2, with_umap=False)
    assert set(tables) == {"map", "spectrum", "galaxy", "crystals", "crystal_baseline", "lobes", "lobe_labels"}
    best = tables["lobes"].query("affinity == 'phi'").ami.iloc[0]
    assert best > 0.95
    labels = tables["lobe_labels"]  # each feature's lobe: the planted groups
    assert labels.feature.tolist() == list(range(100)) and adjusted(labels.lobe.to_numpy(), group) > 0.95
    assert adjusted(tables["map"].cluster.to_numpy(), group) > 0.95


def adjusted(a, b):
    from sklearn.metrics import adjusted_mutual_info_score

    return adjusted_mutual_info_score(a, b)


@pytest.mark.slow
def test_umap_map_separates_planted_groups():
    W, _, group = planted_lobes()
    frame = feature_map(W, n_clusters=2, with_umap=True)
    assert {"umap_x", "umap_y", "pca_x", "pca_y"} <= set(frame.columns)
    centre = frame.groupby(group)[["umap_x", "umap_y"]].mean().to_numpy()
    spread = frame.groupby(group)[["umap_x", "umap_y"]].std().to_numpy().max()
    assert np.linalg.norm(centre[0] - centre[1]) > 3 * spread


def test_geometry_figures_carry_the_fitted_values():
    from interp.figures.geometry import (
        crystal_error_figure,
        crystal_figure,
        feature_map_figure,
        lobe_agreement_figure,
        spectrum_figure,
    )

    W, fired, _ = planted_lobes()
    tables = geometry_tables(W, *block_counts(fired), n_clusters=3, with_umap=False)
    slope = tables["galaxy"].power_law_slope[0]
    assert spectrum_figure(tables["spectrum"], slope).data[1].name == f"i^-{slope:.2f}"
    assert sum(len(t.x) for t in feature_map_figure(tables["map"], "pca").data) == len(W)
    with pytest.raises(ValueError, match="no umap coordinates"):
        feature_map_figure(tables["map"], "umap")
    assert {t.name for t in lobe_agreement_figure(tables["lobes"]).data} >= {"phi", "jaccard", "shuffled null"}
    points, _ = planted_parallelograms()
    quad = (2, 0, 6, 4)  # two u-edges of the first two planted squares
    xy = crystal_plane(points, np.array([quad]))[0]
    row = pd.Series({**dict(zip("abcd", quad)), "parallelogram_error": 0.0,
                     **{f"{c}_{axis}": xy[i, j] for i, c in enumerate("abcd") for j, axis in enumerate("xy")}})
    fig = crystal_figure(row, labels={2: "king"})
    (a0, a1), (c0, c1) = [np.array(list(zip(t.x, t.y))) for t in fig.data[:2]]
    assert np.allclose(a1 - a0, c1 - c0, atol=1e-6) and "2 king" in fig.layout.title.text
    crystals = tables["crystals"]
    assert {f"{c}_{axis}" for c in "abcd" for axis in "xy"} <= set(crystals.columns)
    errors = crystal_error_figure(crystals, tables["crystal_baseline"])
    assert [len(t.x) for t in errors.data] == [len(tables["crystal_baseline"]), len(crystals)]


def test_one_spectral_embedding_for_several_k_gives_sklearns_labels_for_each():
    from sklearn.cluster import SpectralClustering

    from interp.features.geometry import spectral_maps, unit

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 32))
    u = unit(centers[rng.integers(0, 5, 300)] + 1.2 * rng.normal(size=(300, 32)))
    maps = spectral_maps(u @ u.T, 5)
    a = np.clip(u @ u.T, 0, None) + 1e-9
    for k in (2, 3, 4, 5):
        clustering = SpectralClustering(k, affinity="precomputed", random_state=0, assign_labels="cluster_qr")
        expected = clustering.fit_predict(a)
        assert np.array_equal(spectral_labels(None, k, maps=maps), expected)
        assert np.array_equal(geometric_labels(u, k), expected)


def test_map_clusters_above_the_cap_label_every_feature_by_its_nearest_sampled_one():
    from sklearn.metrics import adjusted_rand_score

    from interp.features.geometry import map_clusters, unit

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 600)
    u = unit(5 * rng.normal(size=(3, 24))[truth] + rng.normal(size=(600, 24)))
    capped = map_clusters(u, 3, cap=150, block=64)
    assert capped.shape == (600,) and adjusted_rand_score(truth, capped) == 1.0
    assert np.array_equal(map_clusters(u[:150], 3, cap=150), geometric_labels(u[:150], 3))  # at the cap: unchanged
