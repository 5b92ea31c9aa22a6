"""Concept geometry of a dictionary's decoder (PAPERS.md section 3): crystals, lobes, galaxy, 2-D maps.

- crystals: k-means over normalised difference vectors of feature pairs (a cluster is a family of
  parallelograms / trapezoids ``a - b ~ c - d``), optionally after an LDA projection that removes
  distractor directions;
- lobes: co-occurrence affinities (SMC, Jaccard, Dice, overlap, phi), spectral clustering, the
  adjusted mutual information with geometric (decoder-cosine) clusters against a shuffled null, and
  a logistic regression predicting the lobe from the decoder vector;
- galaxy: power-law slope of the covariance eigenvalues and the kNN clustering entropy;
- maps: PCA and UMAP coordinates of the unit decoder rows with cluster labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from jaxtyping import Float, Int
from scipy.linalg import eigh
from scipy.special import digamma, gammaln
from sklearn.cluster._spectral import cluster_qr  # SpectralClustering's label step (public class, private helper)
from sklearn.decomposition import PCA
from sklearn.manifold import spectral_embedding
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.neighbors import NearestNeighbors

from interp.features.crystals import crystal_baseline, crystal_plane
from interp.store.errors import InputError

AFFINITIES = ("smc", "jaccard", "dice", "overlap", "phi")
LOBE_AFFINITY = "phi"  # the affinity of the stored per-feature lobes (geometry_lobe_labels)
# the map's spectral clusters are computed on at most this many features (a dense n x n affinity: 0.5 GB of float64
# and ARPACK's LU factorisations at 8k, 4.8 GB at 24k); the others take the label of their nearest sampled feature
MAP_CLUSTER_MAX = 4096
CRYSTALS_KEPT = 500  # the best quadruples stored: room for the app to hide those with hub features


def unit(points: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "n d"]:
    points = np.asarray(points, dtype=np.float64)
    return points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)


# ---- crystals ---------------------------------------------------------------------------------

def lda_projection(diffs: Float[np.ndarray, "m d"], labels: Int[np.ndarray, "m"], ridge: float = 1e-3,
                   n_components: int | None = None) -> Float[np.ndarray, "d k"]:
    """LDA: directions maximising between-relation over within-relation scatter of difference vectors.

    Solves ``S_b v = lambda (S_w + ridge I) v`` with the between scatter centred on the mean of all
    differences, so a direction shared by every relation (a global distractor such as word length)
    carries no between-class scatter and is projected out. ``n_components`` defaults to classes - 1.
    """
    diffs, labels = np.asarray(diffs, np.float64), np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2 or len(diffs) != len(labels):
        raise InputError(f"lda_projection needs one relation label per difference vector and at least 2 relations; "
                         f"got {len(diffs)} vectors, {len(labels)} labels, {len(classes)} relation(s)")
    d = diffs.shape[1]
    centre = diffs.mean(0)
    s_w, s_b = np.zeros((d, d)), np.zeros((d, d))
    for c in classes:
        group = diffs[labels == c]
        mean = group.mean(0)
        s_w += (group - mean).T @ (group - mean)
        s_b += len(group) * np.outer(mean - centre, mean - centre)
    s_w /= len(diffs)
    s_b /= len(diffs)
    values, vectors = eigh(s_b, s_w + ridge * np.trace(s_w) / d * np.eye(d) + 1e-12 * np.eye(d))
    k = n_components or len(classes) - 1
    return vectors[:, np.argsort(values)[::-1][:k]]


def relation_quality(diffs: Float[np.ndarray, "m d"], labels: Int[np.ndarray, "m"]) -> float:
    """Mean cosine of each difference vector to its relation's centroid (1 = perfect parallelograms)."""
    diffs, labels = np.asarray(diffs, np.float64), np.asarray(labels)
    cos = [unit(diffs[labels == c]) @ unit(diffs[labels == c].mean(0, keepdims=True)).T for c in np.unique(labels)]
    return float(np.concatenate(cos).mean())


def candidate_pairs(points: Float[np.ndarray, "n d"], n_neighbours: int = 8) -> Int[np.ndarray, "m 2"]:
    """Pairs ``(i, j)``, ``i < j``, joining each point to its nearest neighbours (keeps ``n²`` in check)."""
    n = len(points)
    k = min(n_neighbours, n - 1)
    _, nn = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    return np.unique(np.sort(np.stack([np.repeat(np.arange(n), k), nn[:, 1:].ravel()], 1), axis=1), axis=0)


def axial_kmeans(vectors: Float[np.ndarray, "m d"], k: int, seed: int = 0, n_init: int = 2,
                 iterations: int = 30) -> tuple[Int[np.ndarray, "m"], Float[np.ndarray, "k d"]]:
    """k-means of unit vectors up to sign (``a - b`` and ``b - a`` are one relation): each vector joins
    the centroid of largest ``|cos|``; a centroid moves to ``Σ v (v·c)`` over its members (a power
    step towards the top eigenvector of their ``Σ v vᵀ``), until no assignment changes."""
    v = unit(vectors)
    rng = np.random.default_rng(seed)
    best = (-np.inf, None, None)
    for _ in range(n_init):
        centroids = v[rng.choice(len(v), size=k, replace=False)]
        labels = None
        for _ in range(iterations):
            new_labels = np.abs(v @ centroids.T).argmax(1)
            if labels is not None and np.array_equal(new_labels, labels):
                break
            labels = new_labels
            members = sp.csr_matrix((np.ones(len(v)), (labels, np.arange(len(v)))), shape=(k, len(v)))
            moved = members @ (v * (v * centroids[labels]).sum(1, keepdims=True))
            empty = np.linalg.norm(moved, axis=1) < 1e-12
            centroids = np.where(empty[:, None], centroids, unit(moved))
        score = np.abs(v @ centroids.T).max(1).sum()
        if score > best[0]:
            best = (score, np.abs(v @ centroids.T).argmax(1), centroids)
    return best[1], best[2]


def crystal_clusters(points: Float[np.ndarray, "n d"], n_clusters: int | None = None,
                     pairs: Int[np.ndarray, "m 2"] | None = None, projection: Float[np.ndarray, "d k"] | None = None,
                     n_neighbours: int = 8, seed: int = 0) -> pd.DataFrame:
    """The paper's crystals: k-means over the normalised difference vectors of candidate pairs.

    A cluster of nearly parallel differences is a family of parallelograms (equal lengths) or
    trapezoids. ``pairs`` default to nearest-neighbour pairs; ``projection`` (e.g. ``lda_projection``)
    is applied first. Columns ``a, b`` (oriented so ``p_a - p_b`` points along the centroid),
    ``cluster``, ``cosine`` (to the centroid), ``length`` (of the projected difference).
    """
    pts = np.asarray(points, np.float64)
    if len(pts) < 4:
        raise InputError(f"crystal search needs at least 4 points, got {len(pts)}")
    pts = pts @ projection if projection is not None else pts
    pairs = candidate_pairs(pts, n_neighbours) if pairs is None else np.asarray(pairs)
    diffs = pts[pairs[:, 0]] - pts[pairs[:, 1]]
    k = n_clusters or max(2, min(64, len(diffs) // 8))
    labels, centroids = axial_kmeans(diffs, min(k, len(diffs)), seed)
    cos = (unit(diffs) * centroids[labels]).sum(1)
    a, b = np.where(cos >= 0, pairs[:, 0], pairs[:, 1]), np.where(cos >= 0, pairs[:, 1], pairs[:, 0])
    return pd.DataFrame({"a": a, "b": b, "cluster": labels, "cosine": np.abs(cos),
                         "length": np.linalg.norm(diffs, axis=1)})


def crystal_search(
    points: Float[np.ndarray, "n d"],
    projection: Float[np.ndarray, "d k"] | None = None,
    n_neighbours: int = 8,
    top: int = 50,
    n_clusters: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Quadruples ``(a, b, c, d)`` with ``p_a - p_b ~ p_c - p_d`` from the crystal clusters, best first.

    Within each cluster every pair is matched to its nearest other pair sharing no point.
    ``parallelogram_error`` is ``|d1 - d2| / mean(|d1|, |d2|)`` (0 = exact parallelogram) and
    ``trapezoid_cosine`` the absolute cosine of the two sides (1 = parallel, a trapezoid even if
    lengths differ).
    """
    clusters = crystal_clusters(points, n_clusters, None, projection, n_neighbours, seed)
    pts = np.asarray(points, np.float64)
    pts = pts @ projection if projection is not None else pts
    rows, seen = [], set()
    for cluster, group in clusters.groupby("cluster"):
        if len(group) < 2:
            continue
        ab = group[["a", "b"]].to_numpy()
        diffs = pts[ab[:, 0]] - pts[ab[:, 1]]
        _, idx = NearestNeighbors(n_neighbors=min(len(ab), 8)).fit(diffs).kneighbors(diffs)
        for i in range(len(ab)):
            for j in idx[i]:
                if j == i or set(ab[i]) & set(ab[j]) or (min(i, j), max(i, j), cluster) in seen:
                    continue
                seen.add((min(i, j), max(i, j), cluster))
                mean_len = (np.linalg.norm(diffs[i]) + np.linalg.norm(diffs[j])) / 2
                error = np.linalg.norm(diffs[i] - diffs[j]) / max(mean_len, 1e-12)
                cos = abs(float((unit(diffs[i : i + 1]) @ unit(diffs[j : j + 1]).T)[0, 0]))
                rows.append((*ab[i], *ab[j], int(cluster), error, cos))
                break
    frame = pd.DataFrame(rows, columns=["a", "b", "c", "d", "cluster", "parallelogram_error", "trapezoid_cosine"])
    return frame.sort_values("parallelogram_error").head(top).reset_index(drop=True)


# ---- lobes ------------------------------------------------------------------------------------


def affinities(counts: sp.spmatrix | np.ndarray, n_blocks: int, kind: str = "phi") -> Float[np.ndarray, "n n"]:
    """Co-occurrence affinity from block counts (diagonal = blocks where each feature fires)."""
    if kind not in AFFINITIES:
        raise ValueError(f"unknown affinity '{kind}'; use one of {AFFINITIES}")
    n11 = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    n11 = n11.astype(np.float64)
    n1 = np.diag(n11)[:, None]
    m1 = np.diag(n11)[None, :]
    n10, n01 = n1 - n11, m1 - n11
    n00 = n_blocks - n11 - n10 - n01
    with np.errstate(divide="ignore", invalid="ignore"):
        value = {
            "smc": lambda: (n11 + n00) / n_blocks,
            "jaccard": lambda: n11 / (n11 + n10 + n01),
            "dice": lambda: 2 * n11 / (2 * n11 + n10 + n01),
            "overlap": lambda: n11 / np.minimum(n1, m1),
            "phi": lambda: (n11 * n00 - n10 * n01) / np.sqrt(n1 * (n_blocks - n1) * m1 * (n_blocks - m1)),
        }[kind]()
    return np.nan_to_num(value)


def spectral_maps(affinity: Float[np.ndarray, "n n"], n_components: int, seed: int = 0) -> Float[np.ndarray, "n c"]:
    """The spectral embedding ``SpectralClustering(affinity="precomputed")`` computes (negative affinities
    clipped to 0): the first ``n_components`` eigenvectors of the normalised Laplacian (ARPACK)."""
    a = np.clip(np.nan_to_num(affinity), 0, None)
    a = (a + a.T) / 2 + 1e-9
    return spectral_embedding(a, n_components=n_components, random_state=np.random.RandomState(seed), drop_first=False)


def spectral_labels(
    affinity: Float[np.ndarray, "n n"], k: int, seed: int = 0, maps: Float[np.ndarray, "n c"] | None = None
) -> Int[np.ndarray, "n"]:
    """Spectral clustering of a precomputed affinity, as ``SpectralClustering(k, assign_labels="cluster_qr")``;
    ``maps`` (``spectral_maps`` with ``>= k`` components) reuses one eigen-decomposition for several ``k``: the
    ARPACK solves (LU factorisations of the n x n Laplacian) were most of geometry's time."""
    maps = spectral_maps(affinity, k, seed) if maps is None else maps
    return cluster_qr(maps[:, :k])


def geometric_labels(
    W_dec: Float[np.ndarray, "n d"], k: int, seed: int = 0, maps: Float[np.ndarray, "n c"] | None = None
) -> Int[np.ndarray, "n"]:
    """Spectral clusters of decoder directions by cosine similarity."""
    if maps is None:
        u = unit(W_dec)
        maps = spectral_maps(u @ u.T, k, seed)
    return spectral_labels(None, k, seed, maps)


def lobe_agreement(
    functional: Int[np.ndarray, "n"], geometric: Int[np.ndarray, "n"], n_null: int = 200, seed: int = 0
) -> dict[str, float]:
    """AMI between two partitions and its z-score against label-shuffled partitions.

    AMI is already chance-adjusted (null mean ~0); the shuffles give the spread for the z-score.
    """
    rng = np.random.default_rng(seed)
    ami = adjusted_mutual_info_score(functional, geometric)
    null = np.array([adjusted_mutual_info_score(rng.permutation(functional), geometric) for _ in range(n_null)])
    return {
        "ami": float(ami),
        "null_mean": float(null.mean()),
        "null_std": float(null.std()),
        "z": float((ami - null.mean()) / max(null.std(), 1e-12)),
    }


def geometry_predicts_lobes(
    W_dec: Float[np.ndarray, "n d"], lobes: Int[np.ndarray, "n"], folds: int = 5, seed: int = 0
) -> dict[str, float]:
    """The paper's second check: logistic regression from unit decoder vectors to the co-occurrence
    lobe, cross-validated balanced accuracy beside chance (1 / number of lobes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    lobes = np.asarray(lobes)
    classes, sizes = np.unique(lobes, return_counts=True)
    folds = min(folds, int(sizes.min()))
    if len(classes) < 2 or folds < 2:
        return {"balanced_accuracy": float("nan"), "chance": 1 / max(len(classes), 1)}
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_score(
        LogisticRegression(max_iter=2000), unit(W_dec), lobes, cv=split, scoring="balanced_accuracy"
    )
    return {"balanced_accuracy": float(scores.mean()), "chance": 1 / len(classes)}


def lobe_maps(counts, n_blocks: int, n_components: int, seed: int = 0) -> dict[str, Float[np.ndarray, "n c"]]:
    """``spectral_maps`` of every co-occurrence affinity (one eigen-decomposition each, reused for every k)."""
    return {kind: spectral_maps(affinities(counts, n_blocks, kind), n_components, seed) for kind in AFFINITIES}


def lobe_labels(features: Int[np.ndarray, "n"], maps: dict[str, Float[np.ndarray, "n c"]], k: int,
                affinity: str = LOBE_AFFINITY) -> pd.DataFrame:
    """Each feature's lobe at ``k`` clusters of one affinity (what attribution supernodes group by)."""
    return pd.DataFrame({"feature": np.asarray(features, np.int64), "lobe": spectral_labels(None, k, 0, maps[affinity]),
                         "k": k, "affinity": affinity})


def lobe_table(
    counts, n_blocks: int, W_dec: Float[np.ndarray, "n d"], ks=(2, 3, 4, 5), seed: int = 0, n_null: int = 20,
    maps: dict[str, Float[np.ndarray, "n c"]] | None = None,
) -> pd.DataFrame:
    """Per number of clusters and affinity: AMI of co-occurrence lobes with geometric clusters and the
    logistic-regression accuracy of predicting the lobe from the decoder vector (``maps``: ``lobe_maps``, with
    at least ``max(ks)`` components)."""
    rows, u = [], unit(W_dec)
    geo_maps = spectral_maps(u @ u.T, max(ks), seed)  # one eigen-decomposition per affinity, for every k
    maps = lobe_maps(counts, n_blocks, max(ks), seed) if maps is None else maps
    for k in ks:
        geo = geometric_labels(W_dec, k, seed, geo_maps)
        for kind in AFFINITIES:
            lobes = spectral_labels(None, k, seed, maps[kind])
            rows.append(
                {
                    "k": k,
                    "affinity": kind,
                    **lobe_agreement(lobes, geo, n_null, seed),
                    **geometry_predicts_lobes(W_dec, lobes, seed=seed),
                }
            )
    return pd.DataFrame(rows)


# ---- galaxy -----------------------------------------------------------------------------------


def eigenvalues(points: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "d"]:
    pts = np.asarray(points, np.float64)
    return np.sort(np.linalg.eigvalsh(np.cov(pts, rowvar=False)))[::-1]


FIT_RANGE = (0.1, 0.7)  # share of the eigenvalue ranks the power law is fitted on (the middle of the spectrum)


def fit_ranks(n: int, fit: tuple[float, float] = FIT_RANGE) -> tuple[int, int]:
    """First and last eigenvalue rank (1-based, inclusive) that ``power_law_slope`` fits."""
    lo, hi = int(fit[0] * n), max(int(fit[1] * n), int(fit[0] * n) + 2)
    return lo + 1, min(hi, n)


def power_law_slope(points: Float[np.ndarray, "n d"], fit: tuple[float, float] = FIT_RANGE) -> float:
    """``alpha`` in ``lambda_i ~ i^-alpha``, fitted on log-log over ranks ``fit_ranks`` (10 %..70 %)."""
    lam = eigenvalues(points)
    lo, hi = int(fit[0] * len(lam)), max(int(fit[1] * len(lam)), int(fit[0] * len(lam)) + 2)
    i = np.arange(1, len(lam) + 1)[lo:hi]
    slope = np.polyfit(np.log(i), np.log(np.maximum(lam[lo:hi], 1e-30)), 1)[0]
    return float(-slope)


def clustering_entropy(points: Float[np.ndarray, "n d"], n_components: int = 8, k: int = 5) -> float:
    """Gaussian entropy minus the kNN (Kozachenko-Leonenko) entropy, per dimension, after PCA.

    Near 0 for a Gaussian cloud; larger when the points are clustered.
    """
    pts = np.asarray(points, np.float64)
    d = min(n_components, pts.shape[1], len(pts) - 1)
    x = PCA(d).fit_transform(pts)
    x = x / x.std(0, keepdims=True).clip(1e-12)
    lam = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 1e-30, None)
    h_gauss = 0.5 * np.sum(np.log(2 * np.pi * np.e * lam))
    r = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]
    log_ball = d / 2 * np.log(np.pi) - gammaln(d / 2 + 1)
    n = len(x)
    h_knn = digamma(n) - digamma(k) + log_ball + d * np.mean(np.log(np.maximum(r, 1e-30)))
    return float((h_gauss - h_knn) / d)


# ---- maps and tables --------------------------------------------------------------------------


def map_clusters(
    u: Float[np.ndarray, "n d"], k: int, seed: int = 0, cap: int = MAP_CLUSTER_MAX, block: int = 4096
) -> Int[np.ndarray, "n"]:
    """``geometric_labels`` of the unit rows ``u``; above ``cap`` rows, of a seeded random sample of ``cap``
    rows, every other row taking the label of its nearest sampled row by cosine (blocked matmul)."""
    n = len(u)
    if n <= cap:
        return geometric_labels(u, k, seed)
    sample = np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
    labels = np.empty(n, dtype=np.int64)
    labels[sample] = geometric_labels(u[sample], k, seed)
    rest = np.setdiff1d(np.arange(n), sample)
    for start in range(0, len(rest), block):
        rows = rest[start : start + block]
        labels[rows] = labels[sample][np.argmax(u[rows] @ u[sample].T, axis=1)]
    return labels


def feature_map(
    W_dec: Float[np.ndarray, "n d"], n_clusters: int = 5, seed: int = 0, with_umap: bool = True
) -> pd.DataFrame:
    """PCA (and UMAP) 2-D coordinates of the unit decoder rows, with their geometric cluster (``map_clusters``:
    spectral on at most ``MAP_CLUSTER_MAX`` features)."""
    u = unit(W_dec)
    xy = PCA(2, random_state=seed).fit_transform(u)
    frame = pd.DataFrame(
        {
            "feature": np.arange(len(u)),
            "pca_x": xy[:, 0],
            "pca_y": xy[:, 1],
            "cluster": map_clusters(u, n_clusters, seed),
        }
    )
    if with_umap:
        import umap

        emb = umap.UMAP(n_neighbors=min(15, len(u) - 1), metric="cosine", random_state=seed).fit_transform(u)
        frame["umap_x"], frame["umap_y"] = emb[:, 0], emb[:, 1]
    return frame


def geometry_tables(
    W_dec: Float[np.ndarray, "n d"],
    counts=None,
    n_blocks: int = 0,
    n_clusters: int = 5,
    max_features: int = 2000,
    seed: int = 0,
    with_umap: bool = True,
) -> dict[str, pd.DataFrame]:
    """The geometry Parquet tables for one dictionary (see ``interp/ANALYSES.md``).

    Lobes and crystals use at most ``max_features`` features (the most frequently firing, when
    co-occurrence counts are given) so the dense ``n x n`` affinities stay small.
    """
    W = np.asarray(W_dec, np.float64)
    keep = np.arange(len(W))
    if counts is not None:
        fires = np.asarray(counts.diagonal()).ravel()
        keep = np.sort(np.argsort(-fires, kind="stable")[:max_features])
        keep = keep[fires[keep] > 0]
        counts = counts[keep][:, keep]
    else:
        keep = keep[:max_features]
    lam = eigenvalues(W)
    tables = {
        "map": feature_map(W, n_clusters, seed, with_umap),
        "spectrum": pd.DataFrame({"rank": np.arange(1, len(lam) + 1), "eigenvalue": lam}),
        "galaxy": pd.DataFrame(
            [
                {
                    "power_law_slope": power_law_slope(W),
                    "fit_rank_from": fit_ranks(len(lam))[0],
                    "fit_rank_to": fit_ranks(len(lam))[1],
                    "clustering_entropy": clustering_entropy(W),
                    "n_features": len(W),
                }
            ]
        ),
    }
    crystals = crystal_search(unit(W[keep]), top=CRYSTALS_KEPT)
    plane = crystal_plane(unit(W[keep]), crystals[list("abcd")].to_numpy()).reshape(len(crystals), 8)
    baseline = crystal_baseline(unit(W[keep]), seed=seed)
    for column in "abcd":
        crystals[column] = keep[crystals[column].to_numpy()]
        baseline[column] = keep[baseline[column].to_numpy()]
    crystals[[f"{c}_{axis}" for c in "abcd" for axis in "xy"]] = plane
    tables["crystals"], tables["crystal_baseline"] = crystals, baseline
    if counts is not None and len(keep) >= 2 * n_clusters:
        maps = lobe_maps(counts, n_blocks, n_clusters, seed)
        ks = tuple(range(2, n_clusters + 1))
        tables["lobes"] = lobe_table(counts, n_blocks, W[keep], ks=ks, seed=seed, maps=maps)
        tables["lobe_labels"] = lobe_labels(keep, maps, n_clusters)
    return tables
