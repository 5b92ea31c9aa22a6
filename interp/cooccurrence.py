"""Co-occurrence of features: how often two features fire in the same block (token, window, or sequence).

``CooccurrenceCounter`` accumulates counts chunk by chunk during the dashboards' streaming pass: one
matmul per chunk into a dense ``[d_sae, d_sae]`` matrix up to ``dense_max`` features, each chunk's
sparse ``B^T B`` added into an int32 host matrix up to ``host_max`` (both pruned at the end to what the
tables use: memory flat in the token count), a sparse sum above that. ``cooccurrence_table`` turns counts into
each feature's top co-firing others by phi, with Jaccard (the ``cooccurrence`` table of
``interp/ANALYSES.md``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.cache.store import TokenChunk
from interp.errors import InputError

COOCCURRENCE_UNITS = (None, "token", "window", "sequence")


def check_unit(unit: str | None, window: int) -> None:
    """Refuse an unknown counting unit or an empty window."""
    if unit not in COOCCURRENCE_UNITS:
        raise InputError(f"cooccurrence must be one of {COOCCURRENCE_UNITS}, not {unit!r}")
    if unit == "window" and window < 1:
        raise InputError(f"cooccurrence_window must be >= 1 token, not {window}")


def block_indicator(blocks: Int[Tensor, "nnz"], feats: Int[Tensor, "nnz"], n_blocks: int,
                    d_sae: int) -> Float[Tensor, "n_blocks d_sae"]:
    """1 where a feature fires anywhere in a block (a token or a sequence), else 0."""
    indicator = torch.zeros(n_blocks, d_sae, device=feats.device)
    indicator[blocks, feats] = 1.0
    return indicator


def sparse_block_counts(blocks: Int[Tensor, "nnz"], feats: Int[Tensor, "nnz"], n_blocks: int,
                        d_sae: int) -> sp.csr_matrix:
    """Blocks in which both features fire, for one chunk, as a sparse ``B^T B``."""
    b = sp.csr_matrix((np.ones(len(blocks), np.float32), (blocks.cpu().numpy(), feats.cpu().numpy())),
                      shape=(n_blocks, d_sae))
    b.data[:] = 1  # duplicates (several tokens of one block) were summed
    return (b.T @ b).tocsr()


def phi_coefficients(counts: Float[Tensor, "n m"], fires_rows: Float[Tensor, "n"], fires_cols: Float[Tensor, "m"],
                     n_blocks: int) -> Float[Tensor, "n m"]:
    """Phi (Pearson correlation of the two firing indicators over blocks) from co-firing counts."""
    n1, m1 = fires_rows.double()[:, None], fires_cols.double()[None, :]
    num = counts.double() * n_blocks - n1 * m1
    return num / (n1 * (n_blocks - n1) * m1 * (n_blocks - m1)).clamp_min(1e-12).sqrt()


def prune_counts(counts: Float[Tensor, "d_sae d_sae"], n_blocks: int, keep_all: int, keep_top: int,
                 block: int = 2048) -> sp.csr_matrix:
    """The dense counts as a sparse matrix holding what the tables use: every pair among the ``keep_all``
    most frequent features, each feature's ``keep_top`` others of highest phi, and the diagonal. Phi is
    computed ``block`` rows at a time, so no float64 ``d_sae x d_sae`` matrix is ever formed."""
    d_sae = counts.shape[0]
    fires = counts.diagonal().double()
    frequent = torch.argsort(-fires, stable=True)[:keep_all]
    arange = torch.arange(d_sae, device=counts.device)
    width = min(keep_top + 1, d_sae)
    tops = []
    for start in range(0, d_sae, block):
        rows = counts[start:start + block]
        phi = phi_coefficients(rows, fires[start:start + block], fires, n_blocks)
        phi = phi.masked_fill(rows == 0, -torch.inf)  # never co-firing: nothing to show
        local = torch.arange(phi.shape[0], device=counts.device)
        phi[local, local + start] = torch.inf  # the diagonal is always kept
        tops.append(phi.topk(width, dim=1).indices)
    top = torch.cat(tops)
    rows = torch.cat([frequent.repeat_interleave(len(frequent)), arange.repeat_interleave(width), arange])
    cols = torch.cat([frequent.repeat(len(frequent)), top.flatten(), arange])
    keys = torch.unique(rows * d_sae + cols)
    rows, cols = keys // d_sae, keys % d_sae
    values = counts[rows, cols]
    nonzero = values > 0
    rows, cols, values = (t[nonzero].cpu().numpy() for t in (rows, cols, values))
    return sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=(d_sae, d_sae))


def _blocks(rows: Tensor, chunk: TokenChunk, unit: str, window: int) -> tuple[Tensor, int]:
    """Block index of each firing entry (its token, its window of ``window`` tokens inside its sequence,
    or its sequence) and the chunk's number of blocks."""
    if unit == "token":
        return rows, len(chunk.sequence)
    key = chunk.sequence if unit == "sequence" else chunk.sequence * (chunk.position.max() + 1) + chunk.position // window
    _, block = torch.unique_consecutive(key, return_inverse=True)
    return block[rows], int(block.max()) + 1


class CooccurrenceCounter:
    """Co-firing counts over a stream of chunks, per block of ``unit`` (``window`` tokens for "window").

    Three ways to hold the counts, chosen by ``d_sae``: up to ``dense_max`` features a float matrix on
    ``device`` fed by one matmul per chunk; up to ``host_max`` an int32 ``d_sae x d_sae`` matrix in host
    memory fed by each chunk's sparse ``B^T B`` (2.4 GB at 24,576 features, whatever the token count);
    above that the sparse sum of those products, whose size grows with the pairs seen."""

    def __init__(self, unit: str, window: int, d_sae: int, device, dense_max: int, keep_all: int, keep_top: int,
                 host_max: int = 32_768):
        self.unit, self.window, self.d_sae, self.device = unit, window, d_sae, device
        self.mode = "dense" if d_sae <= dense_max else "host" if d_sae <= host_max else "sparse"
        self.keep_all, self.keep_top = keep_all, keep_top
        self.counts: Tensor | sp.csr_matrix | None = None
        self.n_blocks = 0

    def add(self, rows: Int[Tensor, "nnz"], feats: Int[Tensor, "nnz"], chunk: TokenChunk) -> None:
        """Count the firing entries (``rows`` of ``chunk``, features ``feats``) of one chunk."""
        blocks, n = _blocks(rows, chunk, self.unit, self.window)
        self.n_blocks += n
        if self.mode == "dense":
            if self.counts is None:
                self.counts = torch.zeros(self.d_sae, self.d_sae, device=self.device)
            if self.n_blocks >= 2**24 and self.counts.dtype == torch.float32:
                self.counts = self.counts.double()  # float32 counts stop being exact at 2^24
            indicator = block_indicator(blocks, feats, n, self.d_sae).to(self.counts.dtype)
            self.counts.addmm_(indicator.T, indicator)
            return
        counts = sparse_block_counts(blocks, feats, n, self.d_sae).tocoo()
        if self.mode == "host":
            if self.counts is None:
                self.counts = torch.zeros(self.d_sae * self.d_sae, dtype=torch.int32)
            keys = torch.from_numpy(counts.row.astype(np.int64) * self.d_sae + counts.col)
            self.counts.index_add_(0, keys, torch.from_numpy(counts.data.astype(np.int32)))
        else:
            self.counts = counts.tocsr() if self.counts is None else self.counts + counts.tocsr()

    def result(self) -> sp.csr_matrix | None:
        """The counts as a sparse matrix (dense counts pruned to what the tables use); None without chunks."""
        if self.counts is None:
            return None
        if self.mode == "dense":
            return prune_counts(self.counts, self.n_blocks, self.keep_all, self.keep_top)
        if self.mode == "host":
            return prune_counts(self.counts.view(self.d_sae, self.d_sae), self.n_blocks, self.keep_all, self.keep_top)
        return self.counts


def cooccurrence_table(counts: sp.csr_matrix, n_fires: np.ndarray, n_blocks: int, k: int) -> pd.DataFrame:
    """Each feature's ``k`` co-firing others of highest phi, with count, Jaccard and phi."""
    counts = counts.tocoo()
    off = counts.row != counts.col
    r, c, n11 = counts.row[off], counts.col[off], counts.data[off].astype(np.float64)
    n1, m1 = n_fires[r].astype(np.float64), n_fires[c].astype(np.float64)
    jaccard = n11 / np.maximum(n1 + m1 - n11, 1)
    phi = (n11 * n_blocks - n1 * m1) / np.sqrt(np.maximum(n1 * (n_blocks - n1) * m1 * (n_blocks - m1), 1e-12))
    frame = pd.DataFrame({"feature": r, "other": c, "count": n11.astype(np.int64), "jaccard": jaccard, "phi": phi})
    frame = frame.sort_values(["feature", "phi", "other"], ascending=[True, False, True])
    frame["rank"] = frame.groupby("feature").cumcount()
    return frame[frame["rank"] < k].reset_index(drop=True)


