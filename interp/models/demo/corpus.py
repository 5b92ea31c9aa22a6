"""The bundled corpus split into works, with one work held out of the demo model's later phases.

The held-out work is what the demo's checks of general behaviour (repeating natural text, held-out
language-modelling loss) read, so they measure the model on text its induction and IOI phases
never trained on.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import torch
from jaxtyping import Int
from torch import Tensor

from interp.models.data import DEMO_CORPUS, pack_token_stream

HELD_OUT_WORKS = ("tempest",)
BOS = "<|bos|>"


def demo_works() -> Iterator[tuple[str, str]]:
    """``(title, text)`` of each work of the bundled corpus, in file order."""
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            yield record["title"], record["text"]


def demo_windows(tokenizer, context_size: int, held_out: bool) -> Int[Tensor, "n ctx"]:
    """BOS-prefixed windows of the training works (``held_out=False``) or of the held-out works.

    ``tokenizer`` is a `tokenizers.Tokenizer` or a Hugging Face tokenizer (special tokens not added).
    """
    raw = getattr(tokenizer, "backend_tokenizer", tokenizer)  # the `tokenizers.Tokenizer` inside an HF one
    texts = (text for title, text in demo_works() if (title in HELD_OUT_WORKS) == held_out)
    token_lists = (raw.encode(text, add_special_tokens=False).ids for text in texts)
    return torch.stack(list(pack_token_stream(token_lists, context_size, raw.token_to_id(BOS))))
