"""Co-occurrence of features: how often two features fire in the same block (token, window, or sequence).

``CooccurrenceCounter`` accumulates counts chunk by chunk during the dashboards' streaming pass, in one of
three ways chosen by ``d_sae``, each with memory flat in the token count:

* "dense" (up to ``dense_max``): one matmul per chunk into a float ``[d_sae, d_sae]`` matrix on the device;
* "host" (up to ``host_max``): each chunk's sparse ``B^T B`` added into an int32 ``d_sae x d_sae`` host matrix;
* "spill" (above): each chunk's firing entries (block, feature; int32, deduplicated) written to a temporary
  file, counted at the end in passes over row-blocks of features, one int32 ``[rows, d_sae]`` matrix per pass
  (rows from ``pass_bytes``), fed ``B[:, r0:r1]^T B`` chunk by chunk from the file.

Every mode is pruned by the same row-block function (``prune_rows``) to what the tables use: every pair among
the ``keep_all`` most frequent features, each feature's ``keep_top`` others of highest phi, and the diagonal.
``cooccurrence_table`` turns counts into each feature's top co-firing others by phi, with Jaccard (the
``cooccurrence`` table of ``interp/ANALYSES.md``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from jaxtyping import Bool, Float, Int, Num
from torch import Tensor

from interp.cache.store import TokenChunk
from interp.store.errors import InputError

COOCCURRENCE_UNITS = (None, "token", "window", "sequence")
PRUNE_BYTES_PER_ENTRY = 16  # a row-block's float64 phi order and its boolean masks


class CooccurrenceMemoryError(InputError):
    """The co-occurrence counts (or one pass of them) did not fit in memory."""


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


def firing_entries(blocks: Int[Tensor, "nnz"], feats: Int[Tensor, "nnz"],
                   d_sae: int) -> tuple[Int[np.ndarray, "m"], Int[np.ndarray, "m"]]:
    """Each (block, feature) pair in which the feature fires, once, as int32 host arrays."""
    keys = torch.unique(blocks.long() * d_sae + feats.long()).cpu()
    return (keys // d_sae).to(torch.int32).numpy(), (keys % d_sae).to(torch.int32).numpy()


def pair_counts(block: Int[np.ndarray, "m"], feat: Int[np.ndarray, "m"], n_blocks: int, d_sae: int,
                r0: int = 0, r1: int | None = None) -> sp.coo_matrix:
    """Rows ``r0:r1`` of one chunk's ``B^T B`` (blocks in which both features fire), from its firing entries."""
    r1 = d_sae if r1 is None else r1
    ones = np.ones(len(block), np.int32)
    b = sp.csr_matrix((ones, (block, feat)), shape=(n_blocks, d_sae))
    if (r0, r1) == (0, d_sae):
        return (b.T @ b).tocoo()
    sel = (feat >= r0) & (feat < r1)
    left = sp.csr_matrix((ones[sel], (block[sel], feat[sel] - r0)), shape=(n_blocks, r1 - r0))
    return (left.T @ b).tocoo()


def add_pairs(counts: Int[Tensor, "rows d_sae"], pairs: sp.coo_matrix) -> None:
    """Add a sparse product's entries into an int32 count matrix, in place."""
    keys = torch.from_numpy(pairs.row.astype(np.int64) * counts.shape[1] + pairs.col)
    counts.view(-1).index_add_(0, keys, torch.from_numpy(pairs.data.astype(np.int32)))


def phi_order(counts: Num[Tensor, "n m"], fires_rows: Num[Tensor, "n"], fires_cols: Num[Tensor, "m"],
              n_blocks: int, out: Float[Tensor, "n m"] | None = None) -> Float[Tensor, "n m"]:
    """Phi (Pearson correlation of the two firing indicators over blocks) from co-firing counts, times a
    positive constant per row (``sqrt(n1 (N - n1))``): the same order within each row in three float64 passes
    over the block (``N c a_j - n1_i b_j``) instead of a dozen; into ``out`` (float64) if given."""
    m1 = fires_cols.double()
    inv = (m1 * (n_blocks - m1)).clamp_min_(1e-12).rsqrt_()
    score = counts.to(torch.float64, copy=True) if out is None else out.copy_(counts)  # reused: no page faults
    score.mul_((n_blocks * inv)[None, :])
    return score.addcmul_(fires_rows.double()[:, None], (m1 * inv)[None, :], value=-1)


def frequent_mask(fires: Num[Tensor, "d_sae"], keep_all: int) -> Bool[Tensor, "d_sae"]:
    """The ``keep_all`` most frequent features (ties to the lower index)."""
    mask = torch.zeros(len(fires), dtype=torch.bool, device=fires.device)
    mask[torch.argsort(-fires.double(), stable=True)[:keep_all]] = True
    return mask


def prune_buffers(n: int, d_sae: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Working memory of ``prune_rows`` for ``n`` rows: phi (float64) and two masks. Reused from block to block,
    since allocating them per block costs page faults and, on the host, fragments the heap (measured: +600 MB
    of peak RSS at 40,000 features)."""
    return (torch.empty(n, d_sae, dtype=torch.float64, device=device),
            torch.empty(n, d_sae, dtype=torch.bool, device=device),
            torch.empty(n, d_sae, dtype=torch.bool, device=device))


def prune_rows(counts: Num[Tensor, "n d_sae"], start: int, fires: Num[Tensor, "d_sae"], n_blocks: int,
               frequent: Bool[Tensor, "d_sae"], keep_top: int,
               work: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept entries (row, column, count; non-zero only) of rows ``start:start + n`` of the counts: pairs
    among the ``frequent`` features, each row's ``keep_top`` others of highest phi, and the diagonal.
    ``work``: float64, bool and bool ``[n, d_sae]`` buffers reused across blocks (``prune_buffers``)."""
    n, d_sae = counts.shape
    phi, zero, keep = work if work is not None else prune_buffers(n, d_sae, counts.device)
    local = torch.arange(n, device=counts.device)
    torch.eq(counts, 0, out=zero)
    phi = phi_order(counts, fires[start:start + n], fires, n_blocks, phi).masked_fill_(zero, -torch.inf)
    phi[local, local + start] = torch.inf  # the diagonal is always kept
    top = phi.topk(min(keep_top + 1, d_sae), dim=1).indices
    keep.zero_().scatter_(1, top, True)
    keep[frequent[start:start + n]] |= frequent
    rows, cols = keep.nonzero(as_tuple=True)
    values = counts[rows, cols]
    rows, cols, values = rows[values != 0], cols[values != 0], values[values != 0]
    return (rows + start).cpu().numpy(), cols.cpu().numpy(), values.cpu().numpy()


def prune_blocks(blocks: Iterable[tuple[int, Tensor]], fires: Num[Tensor, "d_sae"], n_blocks: int, keep_all: int,
                 keep_top: int, bar=None) -> sp.csr_matrix:
    """``prune_rows`` over row-blocks ``(start, counts[start:start + n])`` covering every row once, as one
    sparse float32 matrix; ``bar`` (tqdm) advances by rows."""
    d_sae = len(fires)
    frequent = frequent_mask(fires, keep_all)
    parts, work = [], None
    for start, rows in blocks:
        if work is None or work[0].shape[0] < rows.shape[0]:
            work = None  # freed before the larger ones are made
            work = prune_buffers(rows.shape[0], d_sae, rows.device)
        parts.append(prune_rows(rows, start, fires, n_blocks, frequent, keep_top, [w[:rows.shape[0]] for w in work]))
        if bar is not None:
            bar.update(rows.shape[0])
    r, c, v = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(3))
    return sp.csr_matrix((v.astype(np.float32), (r.astype(np.int64), c.astype(np.int64))), shape=(d_sae, d_sae))


def row_blocks(counts: Tensor, block: int) -> Iterator[tuple[int, Tensor]]:
    """``(start, counts[start:start + block])`` down the rows."""
    for start in range(0, counts.shape[0], block):
        yield start, counts[start:start + block]


def prune_counts(counts: Num[Tensor, "d_sae d_sae"], n_blocks: int, keep_all: int, keep_top: int,
                 block: int = 2048) -> sp.csr_matrix:
    """The dense counts as a sparse matrix holding what the tables use: every pair among the ``keep_all``
    most frequent features, each feature's ``keep_top`` others of highest phi, and the diagonal. Phi is
    computed ``block`` rows at a time, so no float64 ``d_sae x d_sae`` matrix is ever formed."""
    return prune_blocks(row_blocks(counts, block), counts.diagonal(), n_blocks, keep_all, keep_top)


def _blocks(rows: Tensor, chunk: TokenChunk, unit: str, window: int) -> tuple[Tensor, int]:
    """Block index of each firing entry (its token, its window of ``window`` tokens inside its sequence,
    or its sequence) and the chunk's number of blocks."""
    if unit == "token":
        return rows, len(chunk.sequence)
    key = (chunk.sequence if unit == "sequence"
           else chunk.sequence * (chunk.position.max() + 1) + chunk.position // window)
    _, block = torch.unique_consecutive(key, return_inverse=True)
    return block[rows], int(block.max()) + 1


def allocate_counts(rows: int, d_sae: int, dtype: torch.dtype, device, advice: str) -> Tensor:
    """A zero ``[rows, d_sae]`` count matrix; a failed allocation becomes an error saying what to set."""
    try:
        return torch.zeros(rows, d_sae, dtype=dtype, device=device)
    except RuntimeError as error:  # torch's failed CPU allocation (and CUDA's OutOfMemoryError)
        gb = rows * d_sae * dtype.itemsize / 1e9
        raise CooccurrenceMemoryError(
            f"co-occurrence counts need {gb:.1f} GB ({rows:,} x {d_sae:,} {str(dtype).removeprefix('torch.')}) and "
            f"that allocation failed; {advice}, or cooccurrence=None (--cooccurrence none) to skip co-occurrence"
        ) from error


class CooccurrenceCounter:
    """Co-firing counts over a stream of chunks, per block of ``unit`` (``window`` tokens for "window").

    The mode ("dense", "host" or "spill", see the module docstring) is chosen by ``d_sae``. ``pass_bytes``
    bounds a spill pass's int32 matrix and each pruned row-block's float64 temporaries (so the end peaks at
    about twice it). Use as a context manager (or call ``close``) so the spill file goes on error too;
    ``result`` closes it."""

    def __init__(
        self,
        unit: str,
        window: int,
        d_sae: int,
        device,
        dense_max: int,
        keep_all: int,
        keep_top: int,
        host_max: int = 32_768,
        pass_bytes: int = 1 << 30,
        progress: bool = False,
        spill_dir: str | None = None,
    ):
        self.unit, self.window, self.d_sae, self.device = unit, window, d_sae, device
        self.mode = "dense" if d_sae <= dense_max else "host" if d_sae <= host_max else "spill"
        self.keep_all, self.keep_top, self.pass_bytes, self.progress = keep_all, keep_top, pass_bytes, progress
        self.dense_max, self.host_max, self.spill_dir = dense_max, host_max, spill_dir
        self.counts: Tensor | None = None
        self.fires = torch.zeros(d_sae, dtype=torch.long)  # blocks in which each feature fires (host, spill)
        self.spill = None  # the temporary file of firing entries
        self.chunks: list[tuple[int, int, int]] = []  # spill: per chunk its first entry, entries, blocks
        self.n_blocks = 0

    def __enter__(self) -> CooccurrenceCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Delete the spill file (if any)."""
        if self.spill is not None:
            self.spill.close()  # a NamedTemporaryFile: closing deletes it
            self.spill = None

    def _advice(self) -> str:
        if self.mode == "dense":
            return f"set a lower dense_cooccurrence_max (now {self.dense_max:,}) to count in host memory"
        if self.mode == "host":
            return (
                f"set host_cooccurrence_max below d_sae (now {self.host_max:,}) to count in passes of "
                f"cooccurrence_pass_bytes ({self.pass_bytes:,})"
            )
        return f"set a lower cooccurrence_pass_bytes (now {self.pass_bytes:,}) to count in more, smaller passes"

    def add(self, rows: Int[Tensor, "nnz"], feats: Int[Tensor, "nnz"], chunk: TokenChunk) -> None:
        """Count the firing entries (``rows`` of ``chunk``, features ``feats``) of one chunk."""
        blocks, n = _blocks(rows, chunk, self.unit, self.window)
        self.n_blocks += n
        if self.mode == "dense":
            if self.counts is None:
                self.counts = allocate_counts(self.d_sae, self.d_sae, torch.float32, self.device, self._advice())
            if self.n_blocks >= 2**24 and self.counts.dtype == torch.float32:
                self.counts = self.counts.double()  # float32 counts stop being exact at 2^24
            indicator = block_indicator(blocks, feats, n, self.d_sae).to(self.counts.dtype)
            self.counts.addmm_(indicator.T, indicator)
            return
        block, feat = firing_entries(blocks, feats, self.d_sae)
        self.fires += torch.from_numpy(np.bincount(feat, minlength=self.d_sae))
        if self.mode == "host":
            if self.counts is None:
                self.counts = allocate_counts(self.d_sae, self.d_sae, torch.int32, "cpu", self._advice())
            add_pairs(self.counts, pair_counts(block, feat, n, self.d_sae))
            return
        if self.spill is None:
            self.spill = tempfile.NamedTemporaryFile(prefix="cooccurrence-", suffix=".int32", dir=self.spill_dir)
        start = self.chunks[-1][0] + self.chunks[-1][1] if self.chunks else 0
        self.spill.write(np.column_stack([block, feat]).astype(np.int32).tobytes())
        self.chunks.append((start, len(block), n))

    def _spilled(self, start: int, count: int) -> Int[np.ndarray, "count 2"]:
        """One chunk's firing entries, memory-mapped from the spill (unmapped when dropped)."""
        if count == 0:
            return np.zeros((0, 2), np.int32)
        return np.memmap(self.spill, dtype=np.int32, mode="r", offset=start * 8, shape=(count, 2))

    def _passes(self, prune_block: int) -> Iterator[tuple[int, Tensor]]:
        """Row-blocks of the counts, one pass over the spill per ``pass_bytes`` of int32 rows."""
        self.spill.flush()
        rows_per_pass = min(max(1, self.pass_bytes // (4 * self.d_sae)), self.d_sae)
        matrix = allocate_counts(rows_per_pass, self.d_sae, torch.int32, "cpu", self._advice())  # one for all passes
        for r0 in range(0, self.d_sae, rows_per_pass):
            r1 = min(r0 + rows_per_pass, self.d_sae)
            counts = matrix[: r1 - r0].zero_()
            for start, count, n in self.chunks:
                entries = self._spilled(start, count)
                add_pairs(counts, pair_counts(entries[:, 0], entries[:, 1], n, self.d_sae, r0, r1))
                del entries
            for s, rows in row_blocks(counts, prune_block):
                yield r0 + s, rows

    def result(self) -> sp.csr_matrix | None:
        """The counts pruned to what the tables use, as a sparse matrix; None without chunks. Closes the spill."""
        from tqdm.auto import tqdm

        try:
            if self.counts is None and not self.chunks:  # no chunk was added
                return None
            prune_block = max(1, min(2048, self.pass_bytes // (PRUNE_BYTES_PER_ENTRY * self.d_sae)))
            with tqdm(
                total=self.d_sae, desc=f"co-occurrence ({self.mode})", unit="feature", disable=not self.progress
            ) as bar:
                if self.mode == "spill":
                    blocks = self._passes(prune_block)
                else:
                    blocks = row_blocks(self.counts, prune_block)
                fires = self.counts.diagonal() if self.mode == "dense" else self.fires
                return prune_blocks(blocks, fires, self.n_blocks, self.keep_all, self.keep_top, bar)
        finally:
            self.close()


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
