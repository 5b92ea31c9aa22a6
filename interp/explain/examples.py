"""Examples to explain a feature from and, kept apart, examples to score the explanation on.

One streaming pass of a dictionary over whole sequences (a cache or a live model, as for the dashboards)
keeps, per feature, seven small sets of token windows (``left`` tokens before the centre token, ``right``
after it, with this feature's activation on each), as delphi's constructor and samplers do
(``latents/constructors.py``, ``latents/samplers.py``):

- training: the ``top`` activating tokens, a uniform ``train_sample`` of firing tokens (cut into activation
  quantile bands), ``train_random`` non-activating windows and ``train_hard`` negatives;
- held-out: a uniform ``test_sample`` of firing tokens (labelled by quantile band), ``test_random``
  non-activating windows and ``test_hard`` negatives: windows centred on one of the feature's top tokens
  where the feature does not fire.

A non-activating window has the feature at zero on every one of its tokens. The split is by sequence (a
seeded hash sends each sequence to training or held-out), so no held-out window shares a sequence, let
alone a token, with a window the explanation was made from. State is ``O(k * d_sae * context)``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.cache.store import TokenChunk
from interp.features.dashboards import Examples, encoded_chunks
from interp.features.dictionary import Dictionary, DictionaryError

TRAIN_SETS = ("top", "train_sample", "train_random", "train_hard")
TEST_SETS = ("test_sample", "test_random", "test_hard")
SETS = TRAIN_SETS + TEST_SETS
POSITIVE = {"top", "train_sample", "test_sample"}  # the sets of activating windows


@dataclass(frozen=True)
class ExampleConfig:
    """How many windows of each kind the pass keeps per feature."""

    n_top: int = 16  # training: top activating windows
    n_train_sample: int = 24  # training: firing tokens sampled uniformly
    n_test: int = 32  # held-out: firing tokens sampled uniformly (delphi tests on 50 across 10 quantiles)
    n_random: int = 16  # non-activating windows per split
    n_hard: int = 16  # hard negatives per split
    n_bands: int = 4  # activation quantile bands of the sampled windows
    left: int = 8
    right: int = 3
    random_rows: int = 32  # tokens drawn per chunk as candidates for random non-activating windows
    hard_tokens: int = 3  # a feature's most frequent top tokens that define its hard negatives
    seed: int = 0

    def k(self, name: str) -> int:
        return {"top": self.n_top, "train_sample": self.n_train_sample, "test_sample": self.n_test,
                "train_random": self.n_random, "test_random": self.n_random,
                "train_hard": self.n_hard, "test_hard": self.n_hard}[name]


def held_out(sequence: Int[Tensor, " n"], seed: int = 0) -> Bool[Tensor, " n"]:
    """Which sequences are held out for scoring: the top bit of a multiplicative hash (about half)."""
    return (((sequence * 2654435761 + seed * 40503) & 0xFFFFFFFF) >> 31) == 1


@dataclass
class ExampleSets:
    """What the pass keeps (on CPU): the seven sets, and firing and token counts per split."""

    config: ExampleConfig
    sets: dict[str, Examples]
    n_tokens: dict[str, int]  # "train" / "test" tokens (BOS excluded)
    fires: dict[str, Int[Tensor, " d_sae"]]


def hard_token_map(top_ids: Int[Tensor, "d_sae m"]) -> tuple[Tensor, Tensor]:
    """(token, feature) pairs sorted by token, for finding the features a token is a hard negative of."""
    d_sae, m = top_ids.shape
    tokens, feats = top_ids.flatten(), torch.arange(d_sae, device=top_ids.device).repeat_interleave(m)
    keep = tokens >= 0
    order = torch.argsort(tokens[keep], stable=True)
    return tokens[keep][order], feats[keep][order]


def _pairs_for_tokens(token_ids: Int[Tensor, " n"], map_tokens: Tensor, map_feats: Tensor) -> tuple[Tensor, Tensor]:
    """Every (row, feature) whose row's token is one of that feature's hard tokens."""
    lo = torch.searchsorted(map_tokens, token_ids, right=False)
    hi = torch.searchsorted(map_tokens, token_ids, right=True)
    counts = hi - lo
    rows = torch.arange(len(token_ids), device=token_ids.device).repeat_interleave(counts)
    start = (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    offset = torch.arange(len(rows), device=token_ids.device) - start
    return rows, map_feats[lo.repeat_interleave(counts) + offset]


def _clean(rows: Tensor, feats: Tensor, firing: Bool[Tensor, "n d_sae"], sequence: Tensor, left: int,
           right: int) -> Tensor:
    """Whether the feature is zero on every token of the window around each (row, feature)."""
    offsets = torch.arange(-left, right + 1, device=rows.device)
    idx = rows[:, None] + offsets
    inside = (idx >= 0) & (idx < firing.shape[0])
    idx = idx.clamp(0, firing.shape[0] - 1)
    same = inside & (sequence[idx] == sequence[rows][:, None])
    return ~(firing[idx, feats[:, None]] & same).any(1)


def collect_examples(dictionary: Dictionary, chunks: Iterable[TokenChunk], top_ids: Int[Tensor, "d_sae m"],
                     config: ExampleConfig = ExampleConfig(), where: str = "the activations") -> ExampleSets:
    """Stream ``chunks`` (whole sequences) through ``dictionary`` and keep each feature's example sets.

    ``top_ids``: each feature's top tokens (``-1`` pads), e.g. the dashboards' ``top_token_ids``; their
    ``hard_tokens`` most frequent ones are where its hard negatives are centred."""
    device = dictionary.W_dec.device
    d_sae, ctx = dictionary.d_sae, config.left + config.right + 1
    hard = _most_frequent(top_ids, config.hard_tokens).to(device)
    if hard.shape[0] != d_sae:
        raise DictionaryError(f"top_ids has {hard.shape[0]} features but the dictionary has {d_sae}; pass the "
                              "dashboards of this same SAE")
    map_tokens, map_feats = hard_token_map(hard)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    sets = {name: Examples.empty(config.k(name), ctx, d_sae, device) for name in SETS}
    fires = {s: torch.zeros(d_sae, dtype=torch.long, device=device) for s in ("train", "test")}
    n_tokens = {"train": 0, "test": 0}
    merge = lambda name, key, rows, feats: sets[name].merge(key, rows, feats, f, chunk, config.left,
                                                            config.right)
    for chunk, f in encoded_chunks(chunks, dictionary, device, where):
        not_bos = chunk.position != 0
        firing = (f > 0) & not_bos[:, None]
        test_row = held_out(chunk.sequence, config.seed)
        for split, mask in (("train", ~test_row), ("test", test_row)):
            n_tokens[split] += int((mask & not_bos).sum())
        rows, feats = firing.nonzero(as_tuple=True)
        in_test = test_row[rows]
        vals = f[rows, feats]
        noise = torch.rand(vals.shape, generator=generator, device=device)
        fires["train"] += torch.bincount(feats[~in_test], minlength=d_sae)
        fires["test"] += torch.bincount(feats[in_test], minlength=d_sae)
        merge("top", vals[~in_test], rows[~in_test], feats[~in_test])
        merge("train_sample", noise[~in_test], rows[~in_test], feats[~in_test])
        merge("test_sample", noise[in_test], rows[in_test], feats[in_test])
        # random non-activating windows: a few random tokens, every feature clean around them
        candidates = torch.nonzero(not_bos).flatten()
        pick = candidates[torch.randperm(len(candidates), generator=generator, device=device)[:config.random_rows]]
        r, ft = pick.repeat_interleave(d_sae), torch.arange(d_sae, device=device).repeat(len(pick))
        _merge_negatives(merge, "random", r, ft, firing, chunk, test_row, config, generator)
        # hard negatives: a feature's top token where the feature is silent around it
        r, ft = _pairs_for_tokens(chunk.token_ids, map_tokens, map_feats)
        keep = not_bos[r]
        _merge_negatives(merge, "hard", r[keep], ft[keep], firing, chunk, test_row, config, generator)
    if n_tokens["train"] + n_tokens["test"] == 0:
        raise DictionaryError(f"{where} holds no tokens (after excluding BOS): nothing to explain from")
    cpu = lambda e: Examples(*(t.cpu() for t in vars(e).values()))
    return ExampleSets(config, {name: cpu(e) for name, e in sets.items()}, n_tokens,
                       {s: v.cpu() for s, v in fires.items()})


def _merge_negatives(merge, kind: str, rows: Tensor, feats: Tensor, firing: Tensor, chunk: TokenChunk,
                     test_row: Tensor, config: ExampleConfig, generator: torch.Generator) -> None:
    clean = _clean(rows, feats, firing, chunk.sequence, config.left, config.right)
    rows, feats = rows[clean], feats[clean]
    key = torch.rand(rows.shape, generator=generator, device=rows.device)
    split = test_row[rows]
    merge(f"train_{kind}", key[~split], rows[~split], feats[~split])
    merge(f"test_{kind}", key[split], rows[split], feats[split])


def _most_frequent(top_ids: Int[Tensor, "d_sae m"], n: int) -> Int[Tensor, "d_sae n"]:
    """Each feature's ``n`` most frequent ids among ``top_ids`` (``-1`` pads), most frequent first."""
    top_ids = torch.as_tensor(np.asarray(top_ids, dtype=np.int64))
    out = torch.full((top_ids.shape[0], n), -1, dtype=torch.long)
    for feature, row in enumerate(top_ids.tolist()):
        ids, counts = np.unique([t for t in row if t >= 0], return_counts=True)
        best = ids[np.argsort(-counts, kind="stable")][:n]
        out[feature, :len(best)] = torch.as_tensor(best, dtype=torch.long)
    return out


def example_frame(sets: ExampleSets) -> pd.DataFrame:
    """The kept windows as one long table: a row per feature, set and window (fixed-length contexts, ``-1``
    outside the sequence), the sampled sets with their activation quantile band."""
    frames = []
    for name, ex in sets.sets.items():
        valid = ex.key > -torch.inf
        band = torch.zeros_like(ex.sequence)
        if name in ("train_sample", "test_sample"):
            band = _bands(ex.value, valid, sets.config.n_bands)
        rank, feat = valid.nonzero(as_tuple=True)
        frames.append(pd.DataFrame({
            "feature": feat.numpy(), "set": name, "rank": rank.numpy(), "band": band[rank, feat].numpy(),
            "activation": ex.value[rank, feat].numpy(), "sequence": ex.sequence[rank, feat].numpy(),
            "position": ex.position[rank, feat].numpy(),
            "context_ids": list(ex.context_ids[rank, :, feat].numpy()),
            "context_acts": list(ex.context_acts[rank, :, feat].numpy()),
        }))
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["feature", "set", "rank"], kind="stable", ignore_index=True)


def _bands(value: Float[Tensor, "k d_sae"], valid: Tensor, n_bands: int) -> Int[Tensor, "k d_sae"]:
    """Each kept window's activation quantile band among its feature's kept windows (0 = lowest)."""
    order = torch.where(valid, value, torch.inf).argsort(dim=0)
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(value.shape[0])[:, None].expand_as(order).contiguous())
    return rank * n_bands // valid.sum(0, keepdim=True).clamp_min(1)


@dataclass
class FeatureExamples:
    """One feature's windows: token ids and activations ``[n, ctx]``, which set each is in, the centre's
    sequence and position, and whether each context token may be judged (inside the sequence, not BOS)."""

    ids: np.ndarray
    acts: np.ndarray
    set: np.ndarray
    sequence: np.ndarray
    position: np.ndarray
    band: np.ndarray
    left: int

    @functools.cached_property
    def evaluable(self) -> np.ndarray:
        positions = self.position[:, None] - self.left + np.arange(self.ids.shape[1])[None, :]
        return (self.ids >= 0) & (positions > 0)

    def take(self, keep: np.ndarray) -> FeatureExamples:
        return FeatureExamples(self.ids[keep], self.acts[keep], self.set[keep], self.sequence[keep],
                               self.position[keep], self.band[keep], self.left)

    def subset(self, names) -> FeatureExamples:
        return self.take(np.isin(self.set, list(names)))

    @property
    def positive(self) -> np.ndarray:
        return np.isin(self.set, list(POSITIVE))

    def count(self, names) -> int:
        return int(np.isin(self.set, list(names)).sum())


class ExampleArrays:
    """Every feature's windows as flat arrays sorted by feature, sliced per feature without copies."""

    def __init__(self, frame: pd.DataFrame, left: int):
        frame = frame.sort_values(["feature", "set", "rank"], kind="stable")
        self.left = left
        self.feature = frame["feature"].to_numpy()
        ctx = len(frame["context_ids"].iloc[0]) if len(frame) else left + 1
        self.ids = (np.stack(frame["context_ids"].to_numpy()).astype(np.int64) if len(frame)
                    else np.zeros((0, ctx), np.int64))
        self.acts = (
            np.stack(frame["context_acts"].to_numpy()).astype(np.float32)
            if len(frame)
            else np.zeros((0, ctx), np.float32)
        )
        self.set = frame["set"].to_numpy().astype(str)
        self.sequence, self.position = frame["sequence"].to_numpy(), frame["position"].to_numpy()
        self.band = frame["band"].to_numpy()

    def feature_examples(self, feature: int) -> FeatureExamples:
        lo, hi = np.searchsorted(self.feature, feature, "left"), np.searchsorted(self.feature, feature, "right")
        return FeatureExamples(
            self.ids[lo:hi],
            self.acts[lo:hi],
            self.set[lo:hi],
            self.sequence[lo:hi],
            self.position[lo:hi],
            self.band[lo:hi],
            self.left,
        )
