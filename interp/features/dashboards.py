"""Feature dashboard data: one streaming pass of a dictionary over ordered tokens, bounded memory.

``feature_dashboards`` encodes chunks of whole sequences (from a cache or a live model) and keeps,
per feature: firing count, activation sum and max, a log-spaced activation histogram, the top-k
activating tokens with their context (token ids and this feature's activation on each context
token), and a uniform random sample of firing tokens (random-key top-k) from which examples are
drawn per activation quantile band, plus optional co-occurrence counts (``interp.features.cooccurrence``).
State is ``O(k * d_sae * context)`` whatever the number of tokens. ``dashboard_tables`` turns the
result, the logit effects and the decoder neighbours (``interp.features.feature_weights``) into the Parquet
tables of ``interp/ANALYSES.md``; ``interp.store.io.write_tables`` / ``AnalysisFolder`` write them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.cache.store import TokenChunk
from interp.features.cooccurrence import CooccurrenceCounter, check_unit, cooccurrence_table
from interp.features.dictionary import Dictionary, DictionaryError, check_fits
from interp.features.feature_weights import logit_effects, nearest_features


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
    # co-firing counts (interp.features.cooccurrence), all three modes flat in the token count: up to this d_sae, one
    # matmul per chunk into a dense float [d_sae, d_sae] matrix on the device (1 GiB at 16k), exact below 2^24 blocks
    dense_cooccurrence_max: int = 16_384
    # above dense and up to this d_sae: each chunk's sparse B^T B added into an int32 [d_sae, d_sae] host matrix
    # (d_sae^2 x 4 bytes: 2.4 GB at 24k, 4.3 GB at 32k); above it, firing entries spilled to a temporary file
    # (8 bytes per deduplicated entry) and counted at the end in passes over rows of features
    host_cooccurrence_max: int = 32_768
    # host memory for one pass's int32 [rows, d_sae] counts, and for the float64 temporaries of each pruned
    # row-block in every mode (the end of the pass peaks at about twice this); at least one row per pass
    cooccurrence_pass_bytes: int = 1 << 30
    keep_all_pairs: int = 2048  # dense counts kept in full among this many most frequent features (geometry)
    keep_top_others: int = 64  # and each feature's this many others of highest phi (dashboards show <= this)
    seed: int = 0


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


def encoded_chunks(chunks: Iterable[TokenChunk], dictionary: Dictionary, device, where: str):
    """Each chunk moved to ``device`` with its float32 codes ``[tokens, d_sae]`` (no grad); the chunk's width is
    checked against the dictionary first, naming ``where`` in the error."""
    for chunk in chunks:
        check_fits(dictionary, chunk.activations.shape[-1], where)
        chunk = TokenChunk(*(t.to(device) for t in (chunk.activations, chunk.token_ids, chunk.sequence,
                                                    chunk.position)))
        with torch.no_grad():
            yield chunk, dictionary.encode(chunk.activations.to(dictionary.W_dec.dtype)).float()


def feature_dashboards(dictionary: Dictionary, chunks: Iterable[TokenChunk],
                       config: DashboardConfig = DashboardConfig(), where: str = "the activations",
                       progress: bool = False) -> DashboardData:
    """Stream ``chunks`` (whole sequences, in order) through ``dictionary``; keep per-feature statistics.
    ``progress``: a tqdm bar over the co-occurrence counting and pruning that follows the stream."""
    check_unit(config.cooccurrence, config.cooccurrence_window)
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
    n_tokens = torch.zeros((), dtype=torch.long, device=device)  # on the device: no host sync per chunk
    cooc = CooccurrenceCounter(config.cooccurrence, config.cooccurrence_window, d_sae, device,
                               config.dense_cooccurrence_max, config.keep_all_pairs,
                               config.keep_top_others, config.host_cooccurrence_max, config.cooccurrence_pass_bytes,
                               progress) if config.cooccurrence else None
    with cooc if cooc is not None else nullcontext():  # closing deletes a spill file, on error too
        for chunk, f in encoded_chunks(chunks, dictionary, device, where):
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
            if cooc is not None:
                cooc.add(rows, feats, chunk)
        n_tokens = int(n_tokens)
        if n_tokens == 0:
            raise DictionaryError(f"{where} holds no tokens (after excluding BOS): nothing to build dashboards from")
        counts = cooc.result() if cooc is not None else None
    cpu = lambda e: Examples(*(t.cpu() for t in vars(e).values()))  # noqa: E731
    return DashboardData(config, n_tokens, fires.cpu(), act_sum.float().cpu(), act_max.cpu(),
                         histogram.reshape(d_sae, config.n_bins).cpu(), cpu(top), cpu(sample),
                         counts, cooc.n_blocks if cooc is not None else 0)


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
    table = pd.DataFrame(
        {
            "feature": features,
            "label": auto_labels(center_ids, data.top.value, decode),
            "n_fires": fires,
            "frequency": fires / data.n_tokens,
            "log10_frequency": np.log10(np.maximum(fires, 1e-9) / data.n_tokens),
            "mean_activation": (data.act_sum / data.fires.clamp_min(1)).numpy(),
            "max_activation": data.act_max.numpy(),
            "top_token_ids": center_ids.T.tolist(),
        }
    )
    edges = np.logspace(*cfg.log10_range, cfg.n_bins + 1)
    hist = data.histogram.numpy()
    f, b = np.nonzero(hist)
    tables = {
        "features": table,
        "examples": pd.concat([top, quantile], ignore_index=True),
        "histograms": pd.DataFrame(
            {"feature": f, "bin": b, "bin_left": edges[b], "bin_right": edges[b + 1], "count": hist[f, b]}
        ),
    }
    cos, ids = nearest_features(W_dec, n_neighbours)
    k = cos.shape[1]
    tables["neighbours"] = pd.DataFrame(
        {
            "feature": np.repeat(features, k),
            "rank": np.tile(np.arange(k), d_sae),
            "other": ids.flatten().numpy(),
            "cosine": cos.flatten().numpy(),
        }
    )
    if W_U is not None:
        pv, pi, nv, ni = logit_effects(W_dec, W_U, cfg.n_logits)
        rows = []
        for sign, values, ids in (("positive", pv, pi), ("negative", nv, ni)):
            k = values.shape[1]
            vocab = {t: decode(t) for t in torch.unique(ids).tolist()}
            rows.append(
                pd.DataFrame(
                    {
                        "feature": np.repeat(features, k),
                        "sign": sign,
                        "rank": np.tile(np.arange(k), d_sae),
                        "token_id": ids.flatten().numpy(),
                        "token": [vocab[t] for t in ids.flatten().tolist()],
                        "logit": values.flatten().numpy(),
                    }
                )
            )
        tables["logits"] = pd.concat(rows, ignore_index=True)
        positive = tables["logits"].query("sign == 'positive'").groupby("feature")["token"].apply(list)
        table["top_logit_tokens"] = positive.reindex(features).tolist()
    if data.cooccurrence is not None:
        tables["cooccurrence"] = cooccurrence_table(
            data.cooccurrence, data.cooccurrence.diagonal(), data.n_blocks, n_cooccurring
        )
    return tables
