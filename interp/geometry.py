"""Concept geometry of a dictionary's decoder (PAPERS.md section 3): crystals, lobes, galaxy, 2-D maps.

- crystals: parallelograms / trapezoids ``a - b ~ c - d`` among difference vectors, optionally after
  an LDA-style projection that removes distractor directions;
- lobes: co-occurrence affinities (SMC, Jaccard, Dice, overlap, phi), spectral clustering, and the
  adjusted mutual information with geometric (decoder-cosine) clusters against a shuffled null;
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
from sklearn.cluster import SpectralClustering
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.neighbors import NearestNeighbors

from interp.errors import InputError

AFFINITIES = ("smc", "jaccard", "dice", "overlap", "phi")


def unit(points: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "n d"]:
    points = np.asarray(points, dtype=np.float64)
    return points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)


# ---- crystals ---------------------------------------------------------------------------------

def lda_projection(diffs: Float[np.ndarray, "m d"], labels: Int[np.ndarray, "m"], ridge: float = 1e-3,
                   n_components: int | None = None) -> Float[np.ndarray, "d k"]:
    """Directions maximising between-relation over within-relation scatter of difference vectors.

    Solves ``S_b v = lambda (S_w + ridge I) v`` with the uncentred between scatter (a relation's mean
    difference is its meaning, so it is measured from zero).
    """
    diffs, labels = np.asarray(diffs, np.float64), np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 1 or len(diffs) != len(labels):
        raise ValueError("lda_projection needs one relation label per difference vector")
    d = diffs.shape[1]
    s_w, s_b = np.zeros((d, d)), np.zeros((d, d))
    for c in classes:
        group = diffs[labels == c]
        mean = group.mean(0)
        s_w += (group - mean).T @ (group - mean)
        s_b += len(group) * np.outer(mean, mean)
    s_w /= len(diffs)
    s_b /= len(diffs)
    values, vectors = eigh(s_b, s_w + ridge * np.trace(s_w) / d * np.eye(d) + 1e-12 * np.eye(d))
    k = n_components or len(classes)
    return vectors[:, np.argsort(values)[::-1][:k]]


def relation_quality(diffs: Float[np.ndarray, "m d"], labels: Int[np.ndarray, "m"]) -> float:
    """Mean cosine of each difference vector to its relation's centroid (1 = perfect parallelograms)."""
    diffs, labels = np.asarray(diffs, np.float64), np.asarray(labels)
    cos = [unit(diffs[labels == c]) @ unit(diffs[labels == c].mean(0, keepdims=True)).T for c in np.unique(labels)]
    return float(np.concatenate(cos).mean())


def crystal_search(points: Float[np.ndarray, "n d"], projection: Float[np.ndarray, "d k"] | None = None,
                   n_neighbours: int = 8, top: int = 50) -> pd.DataFrame:
    """Quadruples ``(a, b, c, d)`` with ``p_a - p_b ~ p_c - p_d``, best first.

    Candidate pairs join each point to its nearest neighbours; each pair's difference is matched to
    its nearest other difference (either sign) sharing no point. ``parallelogram_error`` is
    ``|d1 - d2| / mean(|d1|, |d2|)`` (0 = exact parallelogram) and ``trapezoid_cosine`` the
    absolute cosine of the two sides (1 = parallel, a trapezoid even if lengths differ).
    """
    pts = np.asarray(points, np.float64)
    if projection is not None:
        pts = pts @ projection
    n = len(pts)
    if n < 4:
        raise InputError(f"crystal search needs at least 4 points, got {n}")
    k = min(n_neighbours, n - 1)
    _, nn = NearestNeighbors(n_neighbors=k + 1).fit(pts).kneighbors(pts)
    pairs = np.unique(np.sort(np.stack([np.repeat(np.arange(n), k), nn[:, 1:].ravel()], 1), axis=1), axis=0)
    diffs = pts[pairs[:, 0]] - pts[pairs[:, 1]]
    both = np.concatenate([diffs, -diffs])
    finder = NearestNeighbors(n_neighbors=min(len(both), 8)).fit(both)
    dist, idx = finder.kneighbors(diffs)
    rows, seen = [], set()
    for i in range(len(diffs)):
        for dd, j in zip(dist[i], idx[i]):
            jj = j % len(pairs)
            if jj == i or set(pairs[jj]) & set(pairs[i]):
                continue
            if (min(i, jj), max(i, jj)) not in seen:
                seen.add((min(i, jj), max(i, jj)))
                (a, b), (c, d) = pairs[i], (pairs[jj] if j < len(pairs) else pairs[jj][::-1])
                mean_len = (np.linalg.norm(diffs[i]) + np.linalg.norm(both[j])) / 2
                cos = abs(float((unit(diffs[i:i + 1]) @ unit(both[j:j + 1]).T)[0, 0]))
                rows.append((a, b, c, d, dd / max(mean_len, 1e-12), cos))
            break
    frame = pd.DataFrame(rows, columns=["a", "b", "c", "d", "parallelogram_error", "trapezoid_cosine"])
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


def spectral_labels(affinity: Float[np.ndarray, "n n"], k: int, seed: int = 0) -> Int[np.ndarray, "n"]:
    """Spectral clustering of a precomputed affinity (negative values clipped to 0)."""
    a = np.clip(np.nan_to_num(affinity), 0, None)
    a = (a + a.T) / 2 + 1e-9
    return SpectralClustering(k, affinity="precomputed", random_state=seed, assign_labels="cluster_qr").fit_predict(a)


def geometric_labels(W_dec: Float[np.ndarray, "n d"], k: int, seed: int = 0) -> Int[np.ndarray, "n"]:
    """Spectral clusters of decoder directions by cosine similarity."""
    u = unit(W_dec)
    return spectral_labels(u @ u.T, k, seed)


def lobe_agreement(functional: Int[np.ndarray, "n"], geometric: Int[np.ndarray, "n"], n_null: int = 200,
                   seed: int = 0) -> dict[str, float]:
    """AMI between two partitions and its z-score against label-shuffled partitions.

    AMI is already chance-adjusted (null mean ~0); the shuffles give the spread for the z-score.
    """
    rng = np.random.default_rng(seed)
    ami = adjusted_mutual_info_score(functional, geometric)
    null = np.array([adjusted_mutual_info_score(rng.permutation(functional), geometric) for _ in range(n_null)])
    return {"ami": float(ami), "null_mean": float(null.mean()), "null_std": float(null.std()),
            "z": float((ami - null.mean()) / max(null.std(), 1e-12))}


def lobe_table(counts, n_blocks: int, W_dec: Float[np.ndarray, "n d"], ks=(2, 3, 4, 5), seed: int = 0,
               n_null: int = 20) -> pd.DataFrame:
    """AMI of co-occurrence lobes (each affinity) with geometric clusters, per number of clusters."""
    rows = []
    for k in ks:
        geo = geometric_labels(W_dec, k, seed)
        for kind in AFFINITIES:
            lobes = spectral_labels(affinities(counts, n_blocks, kind), k, seed)
            rows.append({"k": k, "affinity": kind, **lobe_agreement(lobes, geo, n_null, seed)})
    return pd.DataFrame(rows)


# ---- galaxy -----------------------------------------------------------------------------------

def eigenvalues(points: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "d"]:
    pts = np.asarray(points, np.float64)
    return np.sort(np.linalg.eigvalsh(np.cov(pts, rowvar=False)))[::-1]


def power_law_slope(points: Float[np.ndarray, "n d"], fit: tuple[float, float] = (0.1, 0.7)) -> float:
    """``alpha`` in ``lambda_i ~ i^-alpha``, fitted on log-log over the middle of the spectrum."""
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

def feature_map(W_dec: Float[np.ndarray, "n d"], n_clusters: int = 5, seed: int = 0,
                with_umap: bool = True) -> pd.DataFrame:
    """PCA (and UMAP) 2-D coordinates of the unit decoder rows, with their geometric cluster."""
    u = unit(W_dec)
    xy = PCA(2, random_state=seed).fit_transform(u)
    frame = pd.DataFrame({"feature": np.arange(len(u)), "pca_x": xy[:, 0], "pca_y": xy[:, 1],
                          "cluster": geometric_labels(u, n_clusters, seed)})
    if with_umap:
        import umap

        emb = umap.UMAP(n_neighbors=min(15, len(u) - 1), metric="cosine", random_state=seed).fit_transform(u)
        frame["umap_x"], frame["umap_y"] = emb[:, 0], emb[:, 1]
    return frame


def geometry_tables(W_dec: Float[np.ndarray, "n d"], counts=None, n_blocks: int = 0, n_clusters: int = 5,
                    max_features: int = 2000, seed: int = 0, with_umap: bool = True) -> dict[str, pd.DataFrame]:
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
        "galaxy": pd.DataFrame([{"power_law_slope": power_law_slope(W), "clustering_entropy": clustering_entropy(W),
                                 "n_features": len(W)}]),
    }
    crystals = crystal_search(unit(W[keep]))
    for column in "abcd":
        crystals[column] = keep[crystals[column].to_numpy()]
    tables["crystals"] = crystals
    if counts is not None and len(keep) >= 2 * n_clusters:
        tables["lobes"] = lobe_table(counts, n_blocks, W[keep], ks=tuple(range(2, n_clusters + 1)), seed=seed)
    return tables
