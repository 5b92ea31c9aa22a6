"""Prompt sets with counterfactual pairs: induction (repeated random tokens) and IOI (Wang et al.).

Each set carries clean and corrupted tokens of the same shape and what its metric needs, so the
patching functions take them as they are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.attention import CircuitInputError, repeated_random_tokens
from interp.patching import Metric, logit_diff_metric, next_token_metric


@dataclass(frozen=True)
class InductionPrompts:
    """BOS + span + span (clean) and BOS + other span + span (corrupt: no earlier copy to induct from)."""

    clean: Int[Tensor, "batch pos"]
    corrupt: Int[Tensor, "batch pos"]
    half_length: int

    @property
    def second_copy(self) -> Bool[Tensor, "batch pos"]:
        """Destinations in the second copy that have a token to predict after them."""
        mask = torch.zeros_like(self.clean, dtype=torch.bool)
        mask[:, self.half_length + 1: 2 * self.half_length] = True
        return mask

    def metric(self) -> Metric:
        """Mean log-probability of the correct next token over the second copy."""
        return next_token_metric(self.clean, slice(self.half_length + 1, 2 * self.half_length))


def induction_prompts(model, n_prompts: int = 16, half_length: int = 20, seed: int = 0,
                      vocab_range: tuple[int, int] | None = None) -> InductionPrompts:
    """Induction prompt pairs for ``model`` (its BOS id; tokens drawn from ``vocab_range``, by default
    the demo model's induction alphabet for the demo model and ``[3, d_vocab)`` otherwise)."""
    from interp.attention import default_vocab_range

    low, high = vocab_range if vocab_range is not None else default_vocab_range(model)
    if 1 + 2 * half_length > model.cfg.n_ctx:
        raise CircuitInputError(
            f"induction prompts of {1 + 2 * half_length} tokens exceed the context of {model.cfg.n_ctx}; "
            f"use half_length <= {(model.cfg.n_ctx - 1) // 2}"
        )
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None and model.tokenizer.bos_token_id is not None else 0
    clean = repeated_random_tokens(n_prompts, half_length, low, high, bos, seed)
    other = repeated_random_tokens(n_prompts, half_length, low, high, bos, seed + 1)
    corrupt = clean.clone()
    corrupt[:, 1: half_length + 1] = other[:, 1: half_length + 1]
    return InductionPrompts(clean.to(model.cfg.device), corrupt.to(model.cfg.device), half_length)


IOI_TEMPLATES = (
    "When{A} and{B} went to the {PLACE},{C} gave a {OBJECT} to",
    "After{A} and{B} went to the {PLACE},{C} gave a {OBJECT} to",
    "While{A} and{B} were working at the {PLACE},{C} gave a {OBJECT} to",
    "Then,{A} and{B} had a long argument. Afterwards,{C} said to",
    "Friends{A} and{B} found a {OBJECT} at the {PLACE}.{C} gave it to",
)
IOI_NAMES = (
    "Mary", "John", "Alice", "Bob", "James", "Sarah", "Michael", "Anna", "Tom", "Kate", "Henry", "Richard",
    "Edward", "Anne", "Romeo", "Juliet", "Hamlet", "Lear", "Paul", "Peter", "David", "Lucy", "Jane", "George",
)
IOI_PLACES = ("store", "garden", "school", "market", "house", "church")
IOI_OBJECTS = ("ring", "book", "drink", "letter", "flower", "kiss")


@dataclass(frozen=True)
class IOIPrompts:
    """IOI prompts (ABBA and BABA), their ABC counterfactuals, and the answer tokens."""

    texts: list[str]
    corrupt_texts: list[str]
    clean: Int[Tensor, "batch pos"]
    corrupt: Int[Tensor, "batch pos"]
    end: Int[Tensor, "batch"]
    io: Int[Tensor, "batch"]
    subject: Int[Tensor, "batch"]

    def metric(self) -> Metric:
        """Mean ``logit(IO) - logit(S)`` at the last prompt token."""
        return logit_diff_metric(self.end, self.io, self.subject)


def single_token_names(tokenizer, names: tuple[str, ...] = IOI_NAMES) -> list[str]:
    """The names that are one token after a space (IOI needs single-token names)."""
    return [name for name in names if len(tokenizer.encode(" " + name, add_special_tokens=False)) == 1]


def ioi_prompts(model, n_prompts: int = 16, seed: int = 0, templates: tuple[str, ...] = IOI_TEMPLATES,
                names: tuple[str, ...] = IOI_NAMES) -> IOIPrompts:
    """Generate IOI prompts for ``model``'s tokenizer; half ABBA, half BABA, each with an ABC counterfactual."""
    if model.tokenizer is None:
        raise CircuitInputError("IOI prompts need a model with a tokenizer")
    usable = single_token_names(model.tokenizer, names)
    if len(usable) < 3:
        raise CircuitInputError(
            f"only {len(usable)} of the names are single tokens for this tokenizer ({usable}); IOI needs at least 3: "
            "pass names= that the tokenizer keeps whole"
        )
    rng = random.Random(seed)
    texts, corrupt_texts, io, subject = [], [], [], []
    for i in range(n_prompts):
        template = templates[i % len(templates)]
        a, b, c = rng.sample(usable, 3)
        fill = dict(PLACE=rng.choice(IOI_PLACES), OBJECT=rng.choice(IOI_OBJECTS))
        first, second = (a, b) if i % 2 == 0 else (b, a)  # ABBA, then BABA: the subject repeats either way
        texts.append(template.format(A=" " + first, B=" " + second, C=" " + b, **fill))
        corrupt_texts.append(template.format(A=" " + first, B=" " + second, C=" " + c, **fill))
        io.append(model.tokenizer.encode(" " + a, add_special_tokens=False)[0])
        subject.append(model.tokenizer.encode(" " + b, add_special_tokens=False)[0])
    clean, end = _pad(model, texts)
    corrupt, corrupt_end = _pad(model, corrupt_texts)
    if not torch.equal(end, corrupt_end):
        raise CircuitInputError("a counterfactual prompt tokenised to a different length; use single-token names")
    device = model.cfg.device
    return IOIPrompts(texts, corrupt_texts, clean, corrupt, end.to(device), torch.tensor(io, device=device),
                      torch.tensor(subject, device=device))


def _pad(model, texts: list[str]) -> tuple[Tensor, Tensor]:
    """BOS-prefixed tokens right-padded to one length (causal attention keeps padding out of view)."""
    rows = [model.to_tokens(text, prepend_bos=True)[0] for text in texts]
    length = max(len(row) for row in rows)
    if length > model.cfg.n_ctx:
        raise CircuitInputError(f"IOI prompts of {length} tokens exceed the context of {model.cfg.n_ctx}")
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return tokens.to(model.cfg.device), torch.tensor([len(row) - 1 for row in rows])
