"""Crystal statistics that need only numpy and pandas (the Geometry page uses them without importing sklearn).

- ``quadruple_errors``: ``crystal_search``'s parallelogram error of given quadruples;
- ``crystal_baseline``: the same error on random quadruples (the chance level);
- ``crystal_plane``: each quadruple's four points in its own PCA plane (what the page draws);
- ``without_hubs``: drop quadruples holding a hub feature (too dense) or a barely trained one (too rare);
- ``chance_share``: where each error falls among the random quadruples' errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from interp.store.errors import InputError


def quadruple_errors(points: Float[np.ndarray, "n d"], quads: Int[np.ndarray, "m 4"]) -> Float[np.ndarray, "m"]:
    """``crystal_search``'s ``parallelogram_error`` of each quadruple ``(a, b, c, d)``: ``|d1 - d2| / mean(|d1|, |d2|)``
    with ``d1 = p_a - p_b``, ``d2 = p_c - p_d`` (0 = exact parallelogram)."""
    pts, quads = np.asarray(points, np.float64), np.asarray(quads)
    d1, d2 = pts[quads[:, 0]] - pts[quads[:, 1]], pts[quads[:, 2]] - pts[quads[:, 3]]
    mean = (np.linalg.norm(d1, axis=1) + np.linalg.norm(d2, axis=1)) / 2
    return np.linalg.norm(d1 - d2, axis=1) / np.maximum(mean, 1e-12)


def crystal_baseline(points: Float[np.ndarray, "n d"], n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """The chance level of a crystal: ``parallelogram_error`` of ``n`` random quadruples of four distinct points
    (columns ``a, b, c, d, parallelogram_error``, the same as ``crystal_search``'s)."""
    m = len(points)
    if m < 4:
        raise InputError(f"a crystal baseline needs at least 4 points, got {m}")
    rng = np.random.default_rng(seed)
    quads = np.argsort(rng.random((n, m)), axis=1)[:, :4] if m <= 64 else rng.integers(0, m, (2 * n, 4))
    quads = quads[[len(set(q)) == 4 for q in quads]][:n]  # four distinct points (drawn twice over when m is large)
    frame = pd.DataFrame(quads, columns=list("abcd"))
    frame["parallelogram_error"] = quadruple_errors(points, quads)
    return frame


def crystal_plane(points: Float[np.ndarray, "n d"], quads: Int[np.ndarray, "m 4"]) -> Float[np.ndarray, "m 4 2"]:
    """Each quadruple's four points in the plane of their own first two principal components (what
    ``crystal_figure`` draws; a parallelogram stays one)."""
    four = np.asarray(points, np.float64)[np.asarray(quads)]
    centred = four - four.mean(1, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return np.einsum("mpd,mkd->mpk", centred, vt[:, :2])


def without_hubs(quads: pd.DataFrame, frequency: pd.Series, max_frequency: float = 0.1,
                 min_fires: int = 0, n_fires: pd.Series | None = None) -> pd.DataFrame:
    """The rows of ``quads`` (columns ``a, b, c, d``) none of whose features is a hub: firing on more than
    ``max_frequency`` of tokens, or (with ``n_fires``) fewer than ``min_fires`` times. ``frequency`` and
    ``n_fires`` are indexed by feature id; an id missing from them counts as a hub (nothing known)."""
    ok = frequency <= max_frequency
    if n_fires is not None:
        ok &= n_fires.reindex(frequency.index).fillna(0) >= min_fires
    kept = set(ok.index[ok].tolist())
    return quads[quads[list("abcd")].isin(kept).all(axis=1)]


def chance_share(errors: Float[np.ndarray, "m"], baseline: Float[np.ndarray, "k"]) -> Float[np.ndarray, "m"]:
    """For each error, the share of the baseline's random quadruples at or below it (0: better than every
    random quadruple; about 0.5: what chance gives)."""
    ranked = np.sort(np.asarray(baseline, np.float64))
    if not len(ranked):
        return np.full(len(errors), np.nan)
    return np.searchsorted(ranked, np.asarray(errors, np.float64), side="right") / len(ranked)
