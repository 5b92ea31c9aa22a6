"""Prompt sets with counterfactual pairs: induction (repeated random tokens) and IOI (Wang et al.).

Each set carries clean and corrupted tokens of the same shape and what its metric needs, so the
patching functions take them as they are.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.circuits.attention import CircuitInputError, default_vocab_range, prompt_tokens, repeated_random_tokens
from interp.circuits.patching import Metric, logit_diff_metric, next_token_metric
from interp.features.principled_eval import Counterfactual, Task, aligned_tokens


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
    the whole vocabulary but its special tokens)."""
    low, high = vocab_range if vocab_range is not None else default_vocab_range(model)
    _check_count(n_prompts)
    if half_length < 2:
        raise CircuitInputError(f"half_length must be at least 2 tokens, not {half_length}")
    if 1 + 2 * half_length > model.cfg.n_ctx:
        raise CircuitInputError(
            f"induction prompts of {1 + 2 * half_length} tokens exceed the context of {model.cfg.n_ctx}; "
            f"use half_length <= {(model.cfg.n_ctx - 1) // 2}"
        )
    bos = (
        model.tokenizer.bos_token_id if model.tokenizer is not None and model.tokenizer.bos_token_id is not None else 0
    )
    clean = repeated_random_tokens(n_prompts, half_length, low, high, bos, seed)
    other = repeated_random_tokens(n_prompts, half_length, low, high, bos, seed + 1)
    corrupt = clean.clone()
    corrupt[:, 1 : half_length + 1] = other[:, 1 : half_length + 1]
    return InductionPrompts(clean.to(model.cfg.device), corrupt.to(model.cfg.device), half_length)


IOI_TEMPLATES = (
    "When{A} and{B} went to the {PLACE},{C} gave a {OBJECT} to",
    "After{A} and{B} went to the {PLACE},{C} gave a {OBJECT} to",
    "While{A} and{B} were working at the {PLACE},{C} gave a {OBJECT} to",
    "Then,{A} and{B} had a long argument. Afterwards,{C} said to",
    "Friends{A} and{B} found a {OBJECT} at the {PLACE}.{C} gave it to",
)
IOI_NAMES = (
    "Mary",
    "John",
    "Alice",
    "Bob",
    "James",
    "Sarah",
    "Michael",
    "Anna",
    "Tom",
    "Kate",
    "Henry",
    "Richard",
    "Edward",
    "Anne",
    "Romeo",
    "Juliet",
    "Hamlet",
    "Lear",
    "Paul",
    "Peter",
    "David",
    "Lucy",
    "Jane",
    "George",
)
IOI_PLACES = ("store", "garden", "school", "market", "house", "church")
IOI_OBJECTS = ("ring", "book", "drink", "letter", "flower", "kiss")

# The demo model's IOI task: Shakespeare's characters, whose names are single tokens of its vocabulary.
# Its training phase uses the train names and templates only; the held-out ones measure whether it
# learned a general name mover rather than the names.
DEMO_IOI_NAMES = (
    "Achilles",
    "Angelo",
    "Anne",
    "Antonio",
    "Antony",
    "Bardolph",
    "Bolingbroke",
    "Brutus",
    "Buckingham",
    "Caesar",
    "Capulet",
    "Cassio",
    "Cassius",
    "Clarence",
    "Claudio",
    "Clifford",
    "Edward",
    "Falstaff",
    "Ford",
    "Gloucester",
    "Hamlet",
    "Harry",
    "Hector",
    "Helen",
    "Henry",
    "Hero",
    "Iago",
    "Jack",
    "John",
    "Juliet",
    "Kate",
    "Kent",
    "Lucius",
    "Macbeth",
    "Marcius",
    "Margaret",
    "Paris",
    "Percy",
    "Pompey",
    "Richard",
    "Romeo",
    "Somerset",
    "Suffolk",
    "Talbot",
    "Timon",
    "Troilus",
    "Valentine",
    "Warwick",
    "William",
    "York",
)
DEMO_IOI_HELD_OUT_NAMES = DEMO_IOI_NAMES[2::4]  # every fourth name, spread over the alphabet
DEMO_IOI_TRAIN_NAMES = tuple(name for name in DEMO_IOI_NAMES if name not in DEMO_IOI_HELD_OUT_NAMES)
DEMO_IOI_TRAIN_TEMPLATES = (
    "When{A} and{B} went to the {PLACE},{C} gave a {OBJECT} to",
    "Then{A} and{B} came to the {PLACE}, and{C} gave the {OBJECT} to",
    "After{A} and{B} met in the {PLACE},{C} sent a {OBJECT} to",
    "{A} and{B} walked to the {PLACE}.{C} gave a {OBJECT} to",
    "While{A} and{B} were at the {PLACE},{C} brought a {OBJECT} to",
    "Now{A} and{B} stood in the {PLACE}, where{C} gave his {OBJECT} to",
)
DEMO_IOI_HELD_OUT_TEMPLATES = (
    "Once{A} and{B} had reached the {PLACE},{C} offered a {OBJECT} to",
    "In the {PLACE},{A} and{B} spoke long; at last{C} gave a {OBJECT} to",
    # added before phase 7 was evaluated on them (so not chosen to suit it)
    "Ere dawn{A} and{B} left the {PLACE}; later{C} passed a {OBJECT} to",
    "{A} and{B} dined in the {PLACE}, but{C} refused to pass the {OBJECT} to",
)
# A last test set, written down before the final phase (phase 9) was trained and looked at only once it
# had finished: the held-out templates above guided the choice of its data (names at varying positions and
# distances), so they are no longer untouched.
DEMO_IOI_FINAL_TEST_TEMPLATES = (
    "Soon after{A} and{B} arrived at the {PLACE},{C} tossed a {OBJECT} to",
    "On that day{A} and{B} rested by the {PLACE}, and{C} carried the {OBJECT} to",
)
# Training templates are also drawn at random from these pieces, so that names sit at varying distances
# from each other and from the end: a rule tied to the positions of six fixed templates cannot solve them.
# No opener, clause, join or action of the held-out templates ("Once", "had reached", "offered", "In the",
# "spoke long", "at last", "Ere dawn", "left the", "; later", "passed", "dined", ", but", "refused to pass")
# is among the pieces.
DEMO_IOI_OPENERS = (
    "When",
    "Then",
    "After",
    "While",
    "Now",
    "As",
    "Because",
    "Before",
    "So",
    "Later,",
    "At the {PLACE},",
    "Outside the {PLACE},",
    "That night,",
)
DEMO_IOI_CLAUSES = (
    "went to the {PLACE}",
    "came to the {PLACE}",
    "walked to the {PLACE}",
    "met in the {PLACE}",
    "were at the {PLACE}",
    "stood in the {PLACE}",
    "rode to the {PLACE}",
    "sat in the {PLACE}",
    "talked for hours",
    "were waiting",
    "laughed together",
    "argued loudly",
    "ate and drank",
)
DEMO_IOI_FILLERS = (
    "",
    "",
    "",
    " that night",
    " at dawn",
    " in haste",
    " after supper",
    " with the king",
    " for a while",
    " again",
    " in the rain",
    " with their friends",
)
DEMO_IOI_JOINS = (",", ", and", ". Then", "; then", ", where", ". Soon", ". Afterwards,", ". Later")
DEMO_IOI_ACTIONS = (
    "gave a {OBJECT} to",
    "gave the {OBJECT} to",
    "sent a {OBJECT} to",
    "brought a {OBJECT} to",
    "handed a {OBJECT} to",
    "threw the {OBJECT} to",
    "showed the {OBJECT} to",
    "lent a {OBJECT} to",
    "gave his {OBJECT} to",
    "said goodbye to",
    "wrote a letter to",
    "gave it to",
    # longer and multi-token verbs: the repeated name sits at varying distances from the end
    "quickly gave a {OBJECT} to",
    "then handed the {OBJECT} to",
    "at once sent a {OBJECT} to",
    "gave a fine {OBJECT} to",
    "handed over the {OBJECT} to",
    "sent the {OBJECT} back to",
    "delivered a {OBJECT} to",
    "presented the {OBJECT} to",
    "returned the {OBJECT} to",
    "gave a small {OBJECT} and a kiss to",
    "bestowed a {OBJECT} on",
)


def random_demo_ioi_template(rng: random.Random) -> str:
    """A training template assembled from the pieces above (never a held-out template)."""
    return (
        f"{rng.choice(DEMO_IOI_OPENERS)}{{A}} and{{B}} {rng.choice(DEMO_IOI_CLAUSES)}"
        f"{rng.choice(DEMO_IOI_FILLERS)}{rng.choice(DEMO_IOI_JOINS)}{{C}} {rng.choice(DEMO_IOI_ACTIONS)}"
    )


DEMO_IOI_PLACES = ("court", "palace", "church", "field", "house", "castle", "garden", "tower")
DEMO_IOI_OBJECTS = ("ring", "letter", "crown", "sword", "purse", "book", "jewel", "flower")
COUNTERFACTUALS = ("abc", "swap_names", "swap_order")


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
    abba: Bool[Tensor, "batch"]  # True where IO comes first (A B ... B -> A)
    corrupt_io: Int[Tensor, "batch"]  # the counterfactual prompt's answer and subject
    corrupt_subject: Int[Tensor, "batch"]

    def metric(self) -> Metric:
        """Mean ``logit(IO) - logit(S)`` at the last prompt token."""
        return logit_diff_metric(self.end, self.io, self.subject)


def single_token_names(tokenizer, names: tuple[str, ...] = IOI_NAMES) -> list[str]:
    """The names (or words) that are one token after a space (IOI needs single-token names)."""
    return [name for name in names if len(tokenizer.encode(" " + name, add_special_tokens=False)) == 1]


def ioi_prompts(
    model,
    n_prompts: int = 16,
    seed: int = 0,
    templates: tuple[str, ...] = IOI_TEMPLATES,
    names: tuple[str, ...] | None = None,
    counterfactual: str = "abc",
    places: tuple[str, ...] = IOI_PLACES,
    objects: tuple[str, ...] = IOI_OBJECTS,
    order: str = "random",
) -> IOIPrompts:
    """IOI prompts for ``model``'s tokenizer, half ABBA, half BABA, each with a counterfactual.

    ``order``: ``random`` shuffles which prompts are ABBA; ``alternate`` makes prompt i ABBA when i is
    even. With an even number of templates (template i mod n), ``alternate`` ties each template to
    one order, so a model can answer from the template alone: the demo model's phase 3 trained on
    that and learned exactly that rule.

    ``counterfactual``: ``abc`` replaces the repeated subject by a third name (no answer left),
    ``swap_names`` exchanges IO and S everywhere (the answer flips), ``swap_order`` exchanges the
    order of the first two names (same answer, ABBA <-> BABA).
    """
    if model.tokenizer is None:
        raise CircuitInputError("IOI prompts need a model with a tokenizer")
    _check_count(n_prompts)
    if counterfactual not in COUNTERFACTUALS:
        raise CircuitInputError(f"unknown counterfactual '{counterfactual}'; use one of {COUNTERFACTUALS}")
    if names is None:  # the default list: keep the names this tokenizer keeps whole
        usable = single_token_names(model.tokenizer, IOI_NAMES)
    else:
        usable = single_token_names(model.tokenizer, tuple(names))
        split = [name for name in names if name not in usable]
        if split:
            raise CircuitInputError(
                f"IOI names must be single tokens (after a space) for this tokenizer; these are not: {split}"
            )
    if len(usable) < 3:
        raise CircuitInputError(
            f"only {len(usable)} single-token names ({usable}); IOI needs at least 3: "
            "pass names= that the tokenizer keeps whole"
        )
    if order not in ("random", "alternate"):
        raise CircuitInputError(f"order must be 'random' or 'alternate', not {order!r}")
    rng = random.Random(seed)
    is_abba = [i % 2 == 0 for i in range(n_prompts)]
    if order == "random":
        random.Random(seed + 7919).shuffle(is_abba)
    texts, corrupt_texts, answers, abba = [], [], [], []
    for i in range(n_prompts):
        template = templates[i % len(templates)]
        a, b, c = rng.sample(usable, 3)  # a: indirect object, b: subject, c: a third name
        fill = dict(PLACE=rng.choice(places), OBJECT=rng.choice(objects))
        order = (a, b) if is_abba[i] else (b, a)  # the subject repeats either way
        texts.append(_fill(template, order, b, fill))
        if counterfactual == "abc":
            corrupt_texts.append(_fill(template, order, c, fill))
            corrupt_answer = (a, b)  # no right answer remains; kept for shape
        elif counterfactual == "swap_names":
            corrupt_texts.append(_fill(template, order[::-1], a, fill))
            corrupt_answer = (b, a)
        else:
            corrupt_texts.append(_fill(template, order[::-1], b, fill))
            corrupt_answer = (a, b)
        answers.append((a, b, *corrupt_answer))
        abba.append(is_abba[i])
    clean, end = _pad(model, texts)
    corrupt, corrupt_end = _pad(model, corrupt_texts)
    if not torch.equal(end, corrupt_end):
        raise CircuitInputError("a counterfactual prompt tokenised to a different length; use single-token names")
    device = model.cfg.device
    ids = torch.tensor([[_name_id(model.tokenizer, name) for name in row] for row in answers], device=device)
    return IOIPrompts(
        texts,
        corrupt_texts,
        clean,
        corrupt,
        end.to(device),
        ids[:, 0],
        ids[:, 1],
        torch.tensor(abba, device=device),
        ids[:, 2],
        ids[:, 3],
    )


def demo_ioi_prompts(
    model,
    n_prompts: int = 64,
    seed: int = 0,
    held_out_names: bool = True,
    held_out_templates: bool = False,
    counterfactual: str = "abc",
    template: int | None = None,
) -> IOIPrompts:
    """The demo model's IOI task: its held-out (default) or training names, on its training (default) or
    held-out templates. The demo model solves held-out names on the training templates (99.6 %) and on
    the held-out templates (91.9 % on average; ``weights/circuit.json`` has each template's figure).

    ``template`` picks one template and the single-token places and objects, so every prompt has
    one length (what position-wise analyses such as patching need).
    """
    names = DEMO_IOI_HELD_OUT_NAMES if held_out_names else DEMO_IOI_TRAIN_NAMES
    templates = DEMO_IOI_HELD_OUT_TEMPLATES if held_out_templates else DEMO_IOI_TRAIN_TEMPLATES
    places, objects = DEMO_IOI_PLACES, DEMO_IOI_OBJECTS
    if template is not None:
        if not 0 <= template < len(templates):
            raise CircuitInputError(
                f"template {template} out of range: there are {len(templates)} (0..{len(templates) - 1})"
            )
        templates = (templates[template],)
        places, objects = (tuple(single_token_names(model.tokenizer, words)) for words in (places, objects))
    return ioi_prompts(model, n_prompts, seed, templates, names, counterfactual, places, objects)


def ioi_scores(model, prompts: IOIPrompts) -> dict[str, float]:
    """Mean ``logit(IO) - logit(S)`` at the end, the share of prompts where it is positive, and the
    share where IO is the single most likely next token."""
    with torch.no_grad():
        logits = model(prompts.clean)
    rows = torch.arange(len(prompts.end), device=logits.device)
    final = logits[rows, prompts.end]
    diff = final[rows, prompts.io] - final[rows, prompts.subject]
    return {
        "logit_diff": float(diff.mean()),
        "accuracy": float((diff > 0).float().mean()),
        "top1": float((final.argmax(-1) == prompts.io).float().mean()),
    }


def _check_count(n_prompts: int) -> None:
    if n_prompts < 1:
        raise CircuitInputError(f"the number of prompts must be at least 1, not {n_prompts}")


def _fill(template: str, order: tuple[str, str], repeated: str, fill: dict[str, str]) -> str:
    return template.format(A=" " + order[0], B=" " + order[1], C=" " + repeated, **fill)


def _name_id(tokenizer, name: str) -> int:
    return tokenizer.encode(" " + name, add_special_tokens=False)[0]


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


def ioi_task(
    model,
    n_prompts: int = 256,
    seed: int = 0,
    names: tuple[str, ...] = DEMO_IOI_HELD_OUT_NAMES,
    template: str = DEMO_IOI_TRAIN_TEMPLATES[0],
    places: tuple[str, ...] = DEMO_IOI_PLACES,
    objects: tuple[str, ...] = DEMO_IOI_OBJECTS,
):
    """The IOI task for principled evaluation (Makelov et al.): one template, attributes ``IO`` and ``S``
    (indices into ``names``) and ``position`` (0: ABBA, 1: BABA), read at END.

    Counterfactuals, one per attribute, are the same prompt with that attribute alone changed: another IO
    name (the answer moves to it), another S name (both mentions), the other order.
    """
    if model.tokenizer is None:
        raise CircuitInputError("the IOI task needs a model with a tokenizer")
    _check_count(n_prompts)
    split = [name for name in names if name not in single_token_names(model.tokenizer, names)]
    if split:
        raise CircuitInputError(
            f"IOI names must be single tokens (after a space) for this tokenizer; these are not: {split}"
        )
    places, objects = (tuple(single_token_names(model.tokenizer, words)) for words in (places, objects))
    if len(names) < 4 or not places or not objects:
        raise CircuitInputError("the IOI task needs at least 4 names and one single-token place and object")
    rng = random.Random(seed)
    rows = []  # (io, s, order, fill, new_io, new_s)
    for _ in range(n_prompts):
        io, s, new_io, new_s = rng.sample(range(len(names)), 4)
        rows.append(
            (io, s, rng.randrange(2), dict(PLACE=rng.choice(places), OBJECT=rng.choice(objects)), new_io, new_s)
        )

    def text(io: int, s: int, order: int, fill: dict) -> str:
        pair = (names[io], names[s]) if order == 0 else (names[s], names[io])
        return _fill(template, pair, names[s], fill)

    tokens = aligned_tokens(model, [text(io, s, order, fill) for io, s, order, fill, _, _ in rows])
    variants = {
        "IO": [text(new_io, s, order, fill) for io, s, order, fill, new_io, _ in rows],
        "S": [text(io, new_s, order, fill) for io, s, order, fill, _, new_s in rows],
        "position": [text(io, s, 1 - order, fill) for io, s, order, fill, _, _ in rows],
    }
    new_labels = {"IO": [r[4] for r in rows], "S": [r[5] for r in rows], "position": [1 - r[2] for r in rows]}
    counterfactuals = {}
    for attr, texts in variants.items():
        cf_tokens = aligned_tokens(model, texts)
        if cf_tokens.shape != tokens.shape:
            raise CircuitInputError(
                f"the '{attr}' counterfactuals tokenize to {tuple(cf_tokens.shape)}, "
                f"the prompts to {tuple(tokens.shape)}"
            )
        counterfactuals[attr] = Counterfactual(cf_tokens.to(model.cfg.device), torch.tensor(new_labels[attr]))
    ids = torch.tensor([_name_id(model.tokenizer, name) for name in names])
    labels = {
        "IO": torch.tensor([r[0] for r in rows]),
        "S": torch.tensor([r[1] for r in rows]),
        "position": torch.tensor([r[2] for r in rows]),
    }
    return Task(
        tokens.to(model.cfg.device),
        labels,
        {"IO": ids, "S": ids, "position": torch.arange(2)},
        ids[labels["IO"]].to(model.cfg.device),
        ids[labels["S"]].to(model.cfg.device),
        counterfactuals=counterfactuals,
    )


def prompt_table(tokenizer, clean: Int[Tensor, "batch pos"], corrupt: Int[Tensor, "batch pos"],
                 texts: list[str] | None = None, corrupt_texts: list[str] | None = None) -> pd.DataFrame:
    """One row per prompt pair: ``prompt``, the ``clean`` and ``corrupt`` texts (given, else the decoded tokens)
    and each side's tokens as strings (``clean_tokens``, ``corrupt_tokens``: what a position axis is labelled with)."""
    def decoded(tokens: Tensor) -> list[list[str]]:
        return [[tokenizer.decode([t]) for t in row] for row in tokens.tolist()]

    clean_tokens, corrupt_tokens = decoded(clean), decoded(corrupt)
    return pd.DataFrame({
        "prompt": range(len(clean_tokens)),
        "clean": texts if texts is not None else ["".join(row) for row in clean_tokens],
        "corrupt": corrupt_texts if corrupt_texts is not None else ["".join(row) for row in corrupt_tokens],
        "clean_tokens": clean_tokens,
        "corrupt_tokens": corrupt_tokens,
    })


IOI_EXAMPLE = "When Mary and John went to the store, John gave a drink to"
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z]*\b")
_SENTENCE_END = re.compile(r"(^|[.!?;:\n])[\s\"'(]*$")


def ioi_names(text: str) -> tuple[str, str]:
    """``(IO, S)`` of an IOI-shaped prompt: of its capitalised words (a word that opens a sentence counts only
    when it occurs again: *When*, *Then* are not names), exactly one occurs twice or more (the subject S) and
    exactly one other occurs once (the indirect object IO)."""
    found = [(m.group(), bool(_SENTENCE_END.search(text[: m.start()]))) for m in _CAPITALISED.finditer(text)]
    counts = Counter(word for word, _ in found)
    openers = {word for word, opens in found if opens and counts[word] == 1}
    counts = Counter({word: n for word, n in counts.items() if word not in openers})
    repeated = [w for w, n in counts.items() if n >= 2]
    once = [w for w, n in counts.items() if n == 1]
    if len(repeated) != 1 or len(once) != 1:
        found = ", ".join(f"{w} ×{n}" for w, n in counts.items()) or "none"
        raise CircuitInputError(
            f"not an IOI-shaped prompt: it needs two names, one of them repeated (names found: {found}); "
            f"e.g. '{IOI_EXAMPLE}'"
        )
    return once[0], repeated[0]


def ioi_logit_diff(model, text: str) -> dict:
    """``logit(IO) − logit(S)`` after the last token of a typed IOI-shaped prompt (``ioi_names``), both names
    read as their single token after a space; keys ``io, s, logit_io, logit_s, logit_diff, p_io, p_s``."""
    io, s = ioi_names(text)
    for name in (io, s):
        pieces = model.tokenizer.encode(" " + name, add_special_tokens=False)
        if len(pieces) != 1:
            raise CircuitInputError(
                f"'{name}' is {len(pieces)} tokens for this model's tokenizer: logit(IO) − logit(S) needs names "
                "that are one token after a space; try another name"
            )
    with torch.no_grad():
        logits = model(prompt_tokens(model, text))[0, -1]
    probs = logits.softmax(-1)
    io_id, s_id = _name_id(model.tokenizer, io), _name_id(model.tokenizer, s)
    return {"io": io, "s": s, "logit_io": float(logits[io_id]), "logit_s": float(logits[s_id]),
            "logit_diff": float(logits[io_id] - logits[s_id]), "p_io": float(probs[io_id]), "p_s": float(probs[s_id])}
