"""An offline explainer: the best of a few families of token rules, chosen on the training examples only.

A rule says on which tokens the feature fires, from the token itself and its neighbours in the window:

- ``tokens``: the token is one of a set (``' king' or ' King'``);
- ``after``: such a token right after one of a set of previous tokens (``' crown' after ' the'``);
- ``before``: the next token is one of a set; its candidates include what the feature's decoder
  promotes through the unembedding (the logit side: a feature that predicts ``' lord'`` fires before it);
- ``class``: a token class (capitalised word, speaker name, punctuation, number, line break) or
  ``line start`` (the token after a line break);
- ``never``: the feature never fired.

Each candidate is scored by the phi coefficient (the correlation of two yes/no series) between "the rule
matches" and "the feature fires" over every token of the training windows (activating and not), minus a
small price per token listed, and the best one is kept with a readable text. Deterministic, no model.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from interp.explain.examples import FeatureExamples

CLASS_NAMES = ("capitalised word", "speaker name", "punctuation", "number", "line break")
SIZE_PRICE = 0.01  # phi given up per listed token beyond the first: a shorter rule wins a near tie
MAX_TOKENS = 6  # largest token set tried
MAX_CONTEXT = 4  # largest previous / next token set tried


def _classes(text: str) -> dict[str, bool]:
    word = text.strip()
    letters = [c for c in word if c.isalpha()]
    return {
        "capitalised word": bool(letters) and word[0].isalpha() and word[0].isupper(),
        "speaker name": len(letters) >= 2 and all(c.isupper() for c in letters),
        "punctuation": bool(word) and all(c in string.punctuation or not c.isalnum() and not c.isspace()
                                          for c in word),
        "number": bool(word) and word.replace(",", "").replace(".", "").isdigit(),
        "line break": "\n" in text,
    }


class Vocabulary:
    """Token strings and, per class, which ids belong to it (with a trailing ``False`` for the ``-1`` pad)."""

    def __init__(self, strings: list[str]):
        self.strings = list(strings)
        flags = [_classes(s) for s in self.strings]
        self.masks = {name: np.array([f[name] for f in flags] + [False]) for name in CLASS_NAMES}

    @classmethod
    def from_decode(cls, decode, size: int) -> Vocabulary:
        return cls([decode(t) for t in range(size)])

    def __len__(self) -> int:
        return len(self.strings)

    def show(self, token: int) -> str:
        return repr(self.strings[token]) if 0 <= token < len(self.strings) else f"<{token}>"

    def in_class(self, name: str, ids: np.ndarray) -> np.ndarray:
        mask = self.masks[name]
        return mask[np.where((ids >= 0) & (ids < len(self.strings)), ids, -1)]


def isin(ids: np.ndarray, tokens: tuple[int, ...]) -> np.ndarray:
    """``np.isin`` for the few ids of a rule: one comparison per id (much faster on small windows)."""
    out = np.zeros(ids.shape, dtype=bool)
    for t in tokens:
        out |= ids == t
    return out


def _shift(ids: np.ndarray, by: int) -> np.ndarray:
    """``ids`` moved right by ``by`` (previous token at each place: ``by=1``; next: ``by=-1``), ``-1`` filled."""
    out = np.full_like(ids, -1)
    if by > 0:
        out[:, by:] = ids[:, :-by]
    else:
        out[:, :by] = ids[:, -by:]
    return out


@dataclass(frozen=True)
class Rule:
    """Where the feature fires: ``family`` with its ``tokens`` / ``context`` ids or class ``name``."""

    family: str
    tokens: tuple[int, ...] = ()
    context: tuple[int, ...] = ()
    name: str = ""
    promoted: bool = field(default=False, compare=False)  # a ``before`` rule taken from the logit side

    def matches(self, ids: np.ndarray, vocab: Vocabulary) -> np.ndarray:
        """``[n, ctx]``: where in each window the rule says the feature fires."""
        if self.family == "tokens":
            return isin(ids, self.tokens)
        if self.family == "after":
            return isin(ids, self.tokens) & isin(_shift(ids, 1), self.context)
        if self.family == "before":
            return (ids >= 0) & isin(_shift(ids, -1), self.context)
        if self.family == "class":
            return vocab.in_class(self.name, ids)
        if self.family == "line start":
            return (ids >= 0) & vocab.in_class("line break", _shift(ids, 1))
        return np.zeros(ids.shape, dtype=bool)

    @property
    def size(self) -> int:
        return max(1, len(self.tokens) + len(self.context))

    def text(self, vocab: Vocabulary) -> str:
        show = lambda ids: " or ".join(vocab.show(t) for t in ids)
        if self.family == "tokens":
            return show(self.tokens)
        if self.family == "after":
            return f"{show(self.tokens)} after {show(self.context)}"
        if self.family == "before":
            return f"the token before {show(self.context)}" + (" (which it promotes)" if self.promoted else "")
        if self.family == "class":
            return {"capitalised word": "any capitalised word", "speaker name": "a speaker name (all-capitals word)",
                    "line break": "a line break"}.get(self.name, f"any {self.name} token")
        if self.family == "line start":
            return "the first token of a line"
        return "never fires"

    def to_json(self) -> str:
        return json.dumps({"family": self.family, "tokens": list(self.tokens), "context": list(self.context),
                           "name": self.name, "promoted": self.promoted}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Rule:
        d = json.loads(text)
        return cls(d["family"], tuple(d["tokens"]), tuple(d["context"]), d["name"], d.get("promoted", False))


NEVER = Rule("never")


def phi(predicted: np.ndarray, actual: np.ndarray) -> float:
    """The correlation of two boolean series (0 when either is constant)."""
    n, n_p, n_a = predicted.size, int(predicted.sum()), int(actual.sum())
    if n_p in (0, n) or n_a in (0, n):
        return 0.0
    both = int((predicted & actual).sum())
    return float((both * n - n_p * n_a) / np.sqrt(float(n_p) * (n - n_p) * n_a * (n - n_a)))


def _ranked(counter: Counter, n: int) -> list[int]:
    return [t for t, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def candidate_rules(train: FeatureExamples, promoted: list[int] | None = None) -> list[Rule]:
    """The rules worth trying for this feature, from the tokens where it fires in the training windows."""
    fires = (train.acts > 0) & train.evaluable
    rows, cols = np.nonzero(fires)
    tokens = train.ids[rows, cols]
    before = np.where(cols > 0, train.ids[rows, np.maximum(cols - 1, 0)], -1)
    after = np.where(cols + 1 < train.ids.shape[1], train.ids[rows, np.minimum(cols + 1, train.ids.shape[1] - 1)], -1)
    by_token = _ranked(Counter(tokens.tolist()), MAX_TOKENS)
    rules = [Rule("tokens", tuple(sorted(by_token[:k]))) for k in range(1, len(by_token) + 1)]
    for k in range(1, min(3, len(by_token)) + 1):
        chosen = np.isin(tokens, by_token[:k])
        previous = _ranked(Counter(t for t in before[chosen].tolist() if t >= 0), MAX_CONTEXT)
        rules += [Rule("after", tuple(sorted(by_token[:k])), tuple(sorted(previous[:j])))
                  for j in range(1, len(previous) + 1)]
    following = _ranked(Counter(t for t in after.tolist() if t >= 0), MAX_CONTEXT)
    rules += [Rule("before", context=tuple(sorted(following[:j]))) for j in range(1, len(following) + 1)]
    promoted = [t for t in (promoted or []) if t >= 0][:MAX_CONTEXT]
    rules += [Rule("before", context=tuple(sorted(promoted[:j])), promoted=True) for j in range(1, len(promoted) + 1)]
    rules += [Rule("class", name=name) for name in CLASS_NAMES] + [Rule("line start")]
    return list(dict.fromkeys(rules))  # drop repeats, keep order


def rule_fit(rule: Rule, examples: FeatureExamples, vocab: Vocabulary) -> float:
    """Token-level phi of the rule against firing over the evaluable tokens of ``examples``, less the size price."""
    keep = examples.evaluable
    return phi(rule.matches(examples.ids, vocab)[keep], (examples.acts > 0)[keep]) - SIZE_PRICE * (rule.size - 1)


@dataclass(frozen=True)
class Explanation:
    rule: Rule
    text: str
    fit: float  # the chosen rule's fit on the training windows


def explain(train: FeatureExamples, vocab: Vocabulary, promoted: list[int] | None = None) -> Explanation:
    """The best rule for one feature from its training windows, with a readable text."""
    if not ((train.acts > 0) & train.evaluable).any():
        return Explanation(NEVER, NEVER.text(vocab), 0.0)
    fits = [(rule_fit(rule, train, vocab), -i, rule) for i, rule in enumerate(candidate_rules(train, promoted))]
    fit, _, rule = max(fits, key=lambda x: (x[0], x[1]))
    return Explanation(rule, describe(rule, train, vocab, promoted), fit)


def describe(rule: Rule, train: FeatureExamples, vocab: Vocabulary, promoted: list[int] | None = None) -> str:
    """The rule's text, with what usually precedes the token when one previous token dominates, and what the
    feature promotes."""
    text = rule.text(vocab)
    if rule.family == "tokens":
        fires = (train.acts > 0) & train.evaluable & np.isin(train.ids, rule.tokens)
        rows, cols = np.nonzero(fires & (np.arange(train.ids.shape[1]) > 0))
        previous = Counter(train.ids[rows, cols - 1].tolist())
        if previous:
            token, count = max(previous.items(), key=lambda kv: (kv[1], -kv[0]))
            if count >= 0.5 * fires.sum() and token >= 0:
                text += f", mostly after {vocab.show(token)} ({count / fires.sum():.0%})"
    shown = [t for t in (promoted or []) if t >= 0][:3]
    if shown and not (rule.family == "before" and rule.promoted):
        text += "; promotes " + ", ".join(vocab.show(t) for t in shown)
    return text
