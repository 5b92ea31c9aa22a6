"""Feature dashboard data: one streaming pass of a dictionary over ordered tokens, bounded memory.

``feature_dashboards`` encodes chunks of whole sequences (from a cache or a live model) and keeps,
per feature: firing count, activation sum and max, a log-spaced activation histogram, the top-k
activating tokens with their context (token ids and this feature's activation on each context
token), and a uniform random sample of firing tokens (random-key top-k) from which examples are
drawn per activation quantile band, plus optional sparse co-occurrence counts. State is
``O(k * d_sae * context)`` whatever the number of tokens. ``dashboard_tables`` turns the result,
the logit effects (``W_dec @ W_U``) and the decoder neighbours into the Parquet tables of
``interp/ANALYSES.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from jaxtyping import Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from interp.cache.store import TokenChunk
from interp.dictionary import Dictionary, DictionaryError, check_fits
from interp.errors import InputError


@dataclass(frozen=True)
class DashboardConfig:
    """How much each feature's dashboard keeps."""

    n_top: int = 20  # top activating examples per feature
    n_bands: int = 4  # activation quantile bands
    n_per_band: int = 4  # examples sampled per band
    left: int = 8  # context tokens before the activating token
    right: int = 3  # and after it
    n_logits: int = 10  # top positive / negative logit effects
    n_bins: int = 40  # histogram bins over log10(activation)
    log10_range: tuple[float, float] = (-3.0, 3.0)
    exclude_bos: bool = True  # BOS activations are outliers that would fill every top-k
    # count co-firing per "window" of ``cooccurrence_window`` tokens, per "token", per "sequence", or not at all.
    # Short windows keep each feature's firing share small; per sequence, a typical feature of a small SAE fires
    # in most sequences and every pair looks alike (phi ~ 0, Jaccard ~ 1).
    cooccurrence: str | None = "window"
    cooccurrence_window: int = 4
    # up to this d_sae co-firing is counted with one matmul per chunk into a dense [d_sae, d_sae] matrix
    # (1 GiB at 16k), exact below 2^24 blocks; above it, sparse B^T B per chunk
    dense_cooccurrence_max: int = 16_384
    keep_all_pairs: int = 2048  # dense counts kept in full among this many most frequent features (geometry)
    keep_top_others: int = 64  # and each feature's this many others of highest phi (dashboards show <= this)
    seed: int = 0


COOCCURRENCE_UNITS = (None, "token", "window", "sequence")


@dataclass
class Examples:
    """``k`` kept tokens per feature: key, activation and context (``[k, ctx, d_sae]``)."""

    key: Tensor
    value: Tensor
    sequence: Tensor
    position: Tensor
    context_ids: Tensor
    context_acts: Tensor

    @classmethod
    def empty(cls, k: int, ctx: int, d_sae: int, device) -> Examples:
        full = lambda *shape, v, dt: torch.full(shape, v, dtype=dt, device=device)  # noqa: E731
        return cls(full(k, d_sae, v=-torch.inf, dt=torch.float32), full(k, d_sae, v=0.0, dt=torch.float32),
                   full(k, d_sae, v=-1, dt=torch.long), full(k, d_sae, v=-1, dt=torch.long),
                   full(k, ctx, d_sae, v=-1, dt=torch.long), full(k, ctx, d_sae, v=0.0, dt=torch.float32))

    def merge(self, key: Float[Tensor, "nnz"], rows: Int[Tensor, "nnz"], feats: Int[Tensor, "nnz"],
              f: Float[Tensor, "n d_sae"], chunk: TokenChunk, left: int, right: int) -> None:
        """Keep the ``k`` largest keys among the kept ones and this chunk's firing entries.

        Only entries beating their feature's current k-th key, and only those features' columns,
        are touched, so the work per chunk shrinks as the kept keys rise.
        """
        k = self.key.shape[0]
        good = key > self.key[-1, feats]
        key, rows, feats = key[good], rows[good], feats[good]
        if len(key) == 0:
            return
        active, local = torch.unique(feats, return_inverse=True)  # the features with candidates
        m, device = len(active), f.device
        order = torch.sort(key, descending=True, stable=True).indices  # by key, then by feature (stable)
        order = order[torch.sort(local[order], stable=True).indices]
        counts = torch.bincount(local[order], minlength=m)
        rank = torch.arange(len(order), device=device) - (torch.cumsum(counts, 0) - counts)[local[order]]
        sel, rank = order[rank < k], rank[rank < k]
        cand_key = torch.full((k, m), -torch.inf, device=device)
        cand_key[rank, local[sel]] = key[sel]
        cand_rows = torch.zeros((k, m), dtype=torch.long, device=device)
        cand_rows[rank, local[sel]] = rows[sel]
        offsets = torch.arange(-left, right + 1, device=device)
        ctx_rows = cand_rows[:, None, :] + offsets[None, :, None]  # [k, ctx, m]
        inside = (ctx_rows >= 0) & (ctx_rows < f.shape[0])
        ctx_rows = ctx_rows.clamp(0, f.shape[0] - 1)
        same = inside & (chunk.sequence[ctx_rows] == chunk.sequence[cand_rows][:, None, :])
        same_acts = same & (chunk.position[ctx_rows] != 0)  # BOS activations are never shown
        ctx_acts = torch.where(same_acts, f[ctx_rows, active[None, None, :]], 0.0)
        ctx_ids = torch.where(same, chunk.token_ids[ctx_rows], -1)
        all_key = torch.cat([self.key[:, active], cand_key])
        keep = all_key.topk(k, dim=0).indices  # [k, m]
        keep_ctx = keep[:, None, :].expand(-1, ctx_rows.shape[1], -1)
        self.key[:, active] = all_key.gather(0, keep)
        for name, new in (("value", f[cand_rows, active[None, :]]), ("sequence", chunk.sequence[cand_rows]),
                          ("position", chunk.position[cand_rows])):
            old = getattr(self, name)
            old[:, active] = torch.cat([old[:, active], new]).gather(0, keep)
        for name, new in (("context_ids", ctx_ids), ("context_acts", ctx_acts)):
            old = getattr(self, name)
            old[:, :, active] = torch.cat([old[:, :, active], new]).gather(0, keep_ctx)


@dataclass
class DashboardData:
    """What the streaming pass keeps (all tensors on CPU at the end)."""

    config: DashboardConfig
    n_tokens: int
    fires: Int[Tensor, "d_sae"]
    act_sum: Float[Tensor, "d_sae"]
    act_max: Float[Tensor, "d_sae"]
    histogram: Int[Tensor, "d_sae n_bins"]
    top: Examples
    sample: Examples
    cooccurrence: sp.csr_matrix | None = None
    n_blocks: int = 0


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


def prune_counts(counts: Float[Tensor, "d_sae d_sae"], n_blocks: int, keep_all: int, keep_top: int) -> sp.csr_matrix:
    """The dense counts as a sparse matrix holding what the tables use: every pair among the ``keep_all``
    most frequent features, each feature's ``keep_top`` others of highest phi, and the diagonal."""
    d_sae = counts.shape[0]
    fires = counts.diagonal()
    frequent = torch.argsort(-fires, stable=True)[:keep_all]
    phi = phi_coefficients(counts, fires, fires, n_blocks)
    phi = phi.masked_fill(counts == 0, -torch.inf)  # never co-firing: nothing to show
    phi.fill_diagonal_(torch.inf)  # the diagonal is always kept
    _, top = phi.topk(min(keep_top + 1, d_sae), dim=1)
    arange = torch.arange(d_sae, device=counts.device)
    rows = torch.cat([frequent.repeat_interleave(len(frequent)), arange.repeat_interleave(top.shape[1]), arange])
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


def feature_dashboards(dictionary: Dictionary, chunks: Iterable[TokenChunk],
                       config: DashboardConfig = DashboardConfig(), where: str = "the activations") -> DashboardData:
    """Stream ``chunks`` (whole sequences, in order) through ``dictionary``; keep per-feature statistics."""
    if config.cooccurrence not in COOCCURRENCE_UNITS:
        raise InputError(f"cooccurrence must be one of {COOCCURRENCE_UNITS}, not {config.cooccurrence!r}")
    if config.cooccurrence == "window" and config.cooccurrence_window < 1:
        raise InputError(f"cooccurrence_window must be >= 1 token, not {config.cooccurrence_window}")
    device = dictionary.W_dec.device
    d_sae, ctx = dictionary.d_sae, config.left + config.right + 1
    generator = torch.Generator(device=device).manual_seed(config.seed)
    fires = torch.zeros(d_sae, dtype=torch.long, device=device)
    act_sum = torch.zeros(d_sae, dtype=torch.float64, device=device)
    act_max = torch.zeros(d_sae, device=device)
    histogram = torch.zeros(d_sae * config.n_bins, dtype=torch.long, device=device)
    lo, hi = config.log10_range
    top = Examples.empty(config.n_top, ctx, d_sae, device)
    sample = Examples.empty(config.n_bands * config.n_per_band, ctx, d_sae, device)
    cooc, n_blocks = None, 0
    n_tokens = torch.zeros((), dtype=torch.long, device=device)  # on the device: no host sync per chunk
    dense_cooc = config.cooccurrence is not None and d_sae <= config.dense_cooccurrence_max
    for chunk in chunks:
        check_fits(dictionary, chunk.activations.shape[-1], where)
        chunk = TokenChunk(*(t.to(device) for t in (chunk.activations, chunk.token_ids, chunk.sequence,
                                                    chunk.position)))
        with torch.no_grad():
            f = dictionary.encode(chunk.activations.to(dictionary.W_dec.dtype)).float()
        rows, feats = (f > 0).nonzero(as_tuple=True)
        if config.exclude_bos:
            keep = chunk.position[rows] != 0
            rows, feats = rows[keep], feats[keep]
        n_tokens += (chunk.position != 0).sum() if config.exclude_bos else f.shape[0]
        vals = f[rows, feats]
        fires += torch.bincount(feats, minlength=d_sae)
        act_sum.index_add_(0, feats, vals.double())
        act_max.scatter_reduce_(0, feats, vals, "amax")
        bins = ((vals.log10() - lo) / (hi - lo) * config.n_bins).long().clamp(0, config.n_bins - 1)
        histogram += torch.bincount(feats * config.n_bins + bins, minlength=histogram.numel())
        top.merge(vals, rows, feats, f, chunk, config.left, config.right)
        noise = torch.rand(vals.shape, generator=generator, device=device)
        sample.merge(noise, rows, feats, f, chunk, config.left, config.right)
        if config.cooccurrence:
            blocks, n = _blocks(rows, chunk, config.cooccurrence, config.cooccurrence_window)
            n_blocks += n
            if dense_cooc:
                if cooc is None:
                    cooc = torch.zeros(d_sae, d_sae, device=device)
                if n_blocks >= 2**24 and cooc.dtype == torch.float32:
                    cooc = cooc.double()  # float32 counts stop being exact at 2^24
                indicator = block_indicator(blocks, feats, n, d_sae).to(cooc.dtype)
                cooc.addmm_(indicator.T, indicator)
            else:
                counts = sparse_block_counts(blocks, feats, n, d_sae)
                cooc = counts if cooc is None else cooc + counts
    if dense_cooc and cooc is not None:
        cooc = prune_counts(cooc, n_blocks, config.keep_all_pairs, config.keep_top_others)
    n_tokens = int(n_tokens)
    if n_tokens == 0:
        raise DictionaryError(f"{where} holds no tokens (after excluding BOS): nothing to build dashboards from")
    cpu = lambda e: Examples(*(t.cpu() for t in vars(e).values()))  # noqa: E731
    return DashboardData(config, n_tokens, fires.cpu(), act_sum.float().cpu(), act_max.cpu(),
                         histogram.reshape(d_sae, config.n_bins).cpu(), cpu(top), cpu(sample), cooc, n_blocks)


def logit_effects(W_dec: Float[Tensor, "d_sae d_in"], W_U: Float[Tensor, "d_in d_vocab"], k: int = 10,
                  batch: int = 1024) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top ``k`` positive and negative entries of each row of ``W_dec @ W_U`` (values, token ids)."""
    if W_dec.shape[1] != W_U.shape[0]:
        raise DictionaryError(f"W_dec has d_in={W_dec.shape[1]} but W_U has d_model={W_U.shape[0]}; "
                              "the dictionary must sit in the residual stream of this model")
    out = [[], [], [], []]
    with torch.no_grad():
        W_U = W_U.float().to(W_dec.device)
        for start in range(0, W_dec.shape[0], batch):
            logits = W_dec[start:start + batch].float() @ W_U
            pos, neg = logits.topk(k, dim=1), (-logits).topk(k, dim=1)
            for slot, t in enumerate((pos.values, pos.indices, -neg.values, neg.indices)):
                out[slot].append(t)
    return tuple(torch.cat(o).cpu() for o in out)  # one transfer at the end, not one per batch


def unit_rows(W: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    return W.float() / W.float().norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_features(W_dec: Float[Tensor, "d_sae d_in"], k: int = 10, batch: int = 2048) -> tuple[Tensor, Tensor]:
    """Each feature's ``k`` nearest other features by decoder cosine (cosines, ids)."""
    unit = unit_rows(W_dec.detach())
    k = min(k, unit.shape[0] - 1)
    values, ids = [], []
    for start in range(0, unit.shape[0], batch):
        cos = unit[start:start + batch] @ unit.T
        cos[torch.arange(cos.shape[0]), torch.arange(start, start + cos.shape[0])] = -torch.inf
        top = cos.topk(k, dim=1)
        values.append(top.values)
        ids.append(top.indices)
    return torch.cat(values).cpu(), torch.cat(ids).cpu()


def match_features(W_a: Float[Tensor, "n d"], W_b: Float[Tensor, "m d"]) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of A's features to B's maximising decoder cosine (Hungarian); -1 if unmatched.
    Above ``approx_matching.EXACT_MAX`` latents the dense assignment is infeasible (O(n^3), n x m costs): the
    assignment is solved exactly on each feature's 16 best candidates both ways (``interp/approx_matching.py``)."""
    from interp.approx_matching import EXACT_MAX, match_by_candidates

    if max(W_a.shape[0], W_b.shape[0]) > EXACT_MAX:
        return match_by_candidates(W_a, W_b)
    cos = (unit_rows(W_a.detach()) @ unit_rows(W_b.detach()).T).cpu().numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    match = np.full(cos.shape[0], -1)
    match[rows] = cols
    score = np.where(match >= 0, cos[np.arange(cos.shape[0]), match.clip(0)], np.nan)
    return match, score


def auto_labels(top_ids: Int[Tensor, "k d_sae"], top_values: Float[Tensor, "k d_sae"], decode,
                n_tokens: int = 3) -> list[str]:
    """A short label per feature: its top activating tokens, weighted by activation."""
    ids, values = top_ids.T.tolist(), top_values.T.tolist()
    labels = []
    for row_ids, row_values in zip(ids, values):
        weight = Counter()
        for token, value in zip(row_ids, row_values):
            if token >= 0 and value > 0:
                weight[token] += value
        words = [decode(t).strip() or repr(decode(t)) for t, _ in weight.most_common(n_tokens)]
        labels.append(" · ".join(words) if words else "(dead)")
    return labels


def _example_rows(ex: Examples, kind: str, order: Tensor, band: Tensor, center: int, decode) -> pd.DataFrame:
    """Long table of kept examples (one row per feature and example), empty slots dropped."""
    keep = ex.key.gather(0, order) > -torch.inf
    rank, feat = keep.nonzero(as_tuple=True)
    idx = order[rank, feat]
    ids_np, acts_np = ex.context_ids[idx, :, feat].numpy(), ex.context_acts[idx, :, feat].numpy()
    vocab = {t: decode(t) for t in np.unique(ids_np).tolist() if t >= 0}
    valid = ids_np >= 0
    ids_list = [row[ok].tolist() for row, ok in zip(ids_np, valid)]
    return pd.DataFrame({
        "feature": feat.numpy(), "kind": kind, "rank": rank.numpy(), "band": band[rank, feat].numpy(),
        "activation": ex.value[idx, feat].numpy(), "sequence": ex.sequence[idx, feat].numpy(),
        "position": ex.position[idx, feat].numpy(), "token_id": ids_np[:, center],
        "token": [vocab.get(t, "") for t in ids_np[:, center].tolist()],
        "context_ids": ids_list,
        "context_tokens": [[vocab[t] for t in row] for row in ids_list],
        "context_acts": [row[ok].tolist() for row, ok in zip(acts_np, valid)],
        "center": valid[:, :center].sum(1),
    })


def quantile_order(sample: Examples, n_bands: int) -> tuple[Tensor, Tensor]:
    """Sort each feature's random sample by activation and give each kept example its quantile band."""
    valid = sample.key > -torch.inf
    order = torch.where(valid, sample.value, -torch.inf).argsort(dim=0)
    size, count = valid.shape[0], valid.sum(0, keepdim=True)
    j = torch.arange(size)[:, None] - (size - count)
    return order, (j.clamp_min(0) * n_bands // count.clamp_min(1))


def dashboard_tables(data: DashboardData, W_dec: Float[Tensor, "d_sae d_in"], decode,
                     W_U: Float[Tensor, "d_in d_vocab"] | None = None, n_neighbours: int = 10,
                     n_cooccurring: int = 10) -> dict[str, pd.DataFrame]:
    """The dashboard's Parquet tables (see ``interp/ANALYSES.md``) from one streaming pass."""
    cfg = data.config
    d_sae = data.fires.shape[0]
    features = np.arange(d_sae)
    fires = data.fires.numpy()
    top_order = torch.arange(cfg.n_top)[:, None].expand(-1, d_sae)
    top = _example_rows(data.top, "top", top_order, torch.zeros_like(top_order), cfg.left, decode)
    order, band = quantile_order(data.sample, cfg.n_bands)
    quantile = _example_rows(data.sample, "quantile", order, band, cfg.left, decode)
    center_ids = data.top.context_ids[:, cfg.left, :]
    table = pd.DataFrame({
        "feature": features, "label": auto_labels(center_ids, data.top.value, decode),
        "n_fires": fires, "frequency": fires / data.n_tokens, "log10_frequency": np.log10(np.maximum(fires, 1e-9) / data.n_tokens),
        "mean_activation": (data.act_sum / data.fires.clamp_min(1)).numpy(), "max_activation": data.act_max.numpy(),
        "top_token_ids": center_ids.T.tolist(),
    })
    edges = np.logspace(*cfg.log10_range, cfg.n_bins + 1)
    hist = data.histogram.numpy()
    f, b = np.nonzero(hist)
    tables = {
        "features": table, "examples": pd.concat([top, quantile], ignore_index=True),
        "histograms": pd.DataFrame({"feature": f, "bin": b, "bin_left": edges[b], "bin_right": edges[b + 1],
                                    "count": hist[f, b]}),
    }
    cos, ids = nearest_features(W_dec, n_neighbours)
    k = cos.shape[1]
    tables["neighbours"] = pd.DataFrame({"feature": np.repeat(features, k), "rank": np.tile(np.arange(k), d_sae),
                                         "other": ids.flatten().numpy(), "cosine": cos.flatten().numpy()})
    if W_U is not None:
        pv, pi, nv, ni = logit_effects(W_dec, W_U, cfg.n_logits)
        rows = []
        for sign, values, ids in (("positive", pv, pi), ("negative", nv, ni)):
            k = values.shape[1]
            vocab = {t: decode(t) for t in torch.unique(ids).tolist()}
            rows.append(pd.DataFrame({"feature": np.repeat(features, k), "sign": sign,
                                      "rank": np.tile(np.arange(k), d_sae), "token_id": ids.flatten().numpy(),
                                      "token": [vocab[t] for t in ids.flatten().tolist()],
                                      "logit": values.flatten().numpy()}))
        tables["logits"] = pd.concat(rows, ignore_index=True)
        positive = tables["logits"].query("sign == 'positive'").groupby("feature")["token"].apply(list)
        table["top_logit_tokens"] = positive.reindex(features).tolist()
    if data.cooccurrence is not None:
        tables["cooccurrence"] = cooccurrence_table(data.cooccurrence, data.cooccurrence.diagonal(),
                                                    data.n_blocks, n_cooccurring)
    return tables


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


def matched_features_table(W_decs: list[Tensor]) -> pd.DataFrame:
    """For each member of an ensemble, each feature's Hungarian match in every other member."""
    frames = []
    for a, W_a in enumerate(W_decs):
        for b, W_b in enumerate(W_decs):
            if a != b:
                match, score = match_features(W_a, W_b)
                frames.append(pd.DataFrame({"member": a, "feature": np.arange(len(match)), "other_member": b,
                                            "other_feature": match, "cosine": score}))
    return pd.concat(frames, ignore_index=True)
