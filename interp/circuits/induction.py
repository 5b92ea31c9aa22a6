"""Does a model copy what it has seen? Repeated spans from three token sources, and the loss ratio.

An induction circuit predicts the second copy of ``BOS + span + span`` far better than the first.
A circuit that only works on one narrow alphabet is not induction, so the check draws spans from
three sources (Olsson et al. 2022 use uniform random tokens; natural text is what users type):

- ``uniform``: ids uniform over the whole vocabulary, special tokens excluded;
- ``frequent``: uniform over the corpus's most frequent tokens (common words);
- ``text``: a window of real text, repeated.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.store.errors import InputError

TOKEN_SOURCES = ("uniform", "frequent", "text")


def special_token_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (BOS, EOS, padding, ...), never drawn as span tokens."""
    return set(getattr(tokenizer, "all_special_ids", []) or [])


def ordinary_token_ids(tokenizer, d_vocab: int) -> Int[Tensor, "n"]:
    """Every id below ``d_vocab`` that is not a special token."""
    special = special_token_ids(tokenizer)
    return torch.tensor([i for i in range(d_vocab) if i not in special], dtype=torch.long)


def most_frequent_tokens(token_lists, n: int, exclude: set[int] = frozenset()) -> Int[Tensor, "n"]:
    """The ``n`` most frequent ids over an iterable of token-id lists, most frequent first."""
    counts: Counter[int] = Counter()
    for ids in token_lists:
        counts.update(ids)
    ranked = [token for token, _ in counts.most_common() if token not in exclude]
    if len(ranked) < n:
        raise InputError(f"the text has only {len(ranked)} distinct tokens; asked for the {n} most frequent")
    return torch.tensor(ranked[:n], dtype=torch.long)


def spans_from_pool(
    pool: Int[Tensor, "n"], n_rows: int, span: int, generator: torch.Generator
) -> Int[Tensor, "rows span"]:
    """``[n_rows, span]`` ids drawn uniformly (with replacement) from ``pool``."""
    return pool[torch.randint(0, len(pool), (n_rows, span), generator=generator)]


def spans_from_windows(
    windows: Int[Tensor, "n ctx"], n_rows: int, span: int, generator: torch.Generator
) -> Int[Tensor, "rows span"]:
    """``[n_rows, span]`` contiguous slices of text windows (position 0, the BOS, never included)."""
    if span > windows.shape[1] - 1:
        raise InputError(f"span {span} is longer than a text window of {windows.shape[1] - 1} tokens")
    rows = torch.randint(0, windows.shape[0], (n_rows,), generator=generator)
    starts = torch.randint(1, windows.shape[1] - span + 1, (n_rows,), generator=generator)
    index = starts[:, None] + torch.arange(span)[None]
    return windows[rows][torch.arange(n_rows)[:, None], index]


def repeated(spans: Int[Tensor, "rows span"], bos: int) -> Int[Tensor, "rows 1+2*span"]:
    """``BOS + span + span`` for each row."""
    return torch.cat([torch.full((spans.shape[0], 1), bos, dtype=spans.dtype), spans, spans], dim=1)


@dataclass(frozen=True)
class RepeatLoss:
    """Mean next-token loss on the first and on the second copy (same offsets inside the span)."""

    first: float
    second: float

    @property
    def ratio(self) -> float:
        return self.second / self.first


def repeat_loss(model, spans: Int[Tensor, "rows span"], bos: int) -> RepeatLoss:
    """Loss predicting span tokens 2..span in the first copy vs the same tokens in the second.

    The first token of each copy is left out: nothing in the prompt predicts it.
    """
    span = spans.shape[1]
    tokens = repeated(spans, bos).to(model.cfg.device)
    if tokens.shape[1] > model.cfg.n_ctx:
        raise InputError(
            f"a repeated span of {span} needs {tokens.shape[1]} tokens; the model's context is {model.cfg.n_ctx}"
        )
    with torch.no_grad():
        losses: Float[Tensor, "rows pos-1"] = model(tokens, return_type="loss", loss_per_token=True)
    # loss index i predicts token i+1: first copy tokens 2..span sit at 2..span, second copy at span+2..2*span
    first = losses[:, 1:span].mean()
    second = losses[:, span + 1 : 2 * span].mean()
    return RepeatLoss(float(first), float(second))
