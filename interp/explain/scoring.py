"""Scores of an explanation on held-out windows, each beside the score of a random (another feature's) one.

Four scores, after delphi's classifier scorers and Bills et al.'s simulation (``PAPERS.md`` of the project
10.2), applied to a rule's predictions instead of an LLM's answers. As in delphi's defaults, the
non-activating windows are random ones; the hard negatives get a score of their own:

- **detection**: does the explanation tell which windows activate the feature? Activating windows drawn
  across quantiles against random non-activating ones; a window is predicted active when the rule matches
  any of its tokens. Balanced accuracy (0.5 = chance).
- **detection_hard**: the same against the hard negatives (windows on the feature's top tokens where it is
  silent): does the explanation tell when its own tokens do not fire?
- **fuzzing**: are the highlighted tokens the activating ones? delphi's construction: activating windows
  with their tokens at >= 0.3 of the window's maximum highlighted (correct), and random non-activating
  windows with as many random tokens highlighted as the activating ones have firing tokens (incorrect).
  The rule calls a highlighting correct when it matches every highlighted token. Balanced accuracy.
- **simulation**: the correlation of the rule's 0/1 prediction with the true activation over every token
  of the activating and random windows (0 when the prediction is constant).
"""

from __future__ import annotations

import math

import numpy as np

from interp.explain.examples import FeatureExamples
from interp.explain.rules import Rule, Vocabulary

SCORES = ("detection", "detection_hard", "fuzzing", "simulation")
HIGHLIGHT = 0.3  # delphi's threshold: tokens at >= 0.3 of the window's maximum are highlighted


def balanced_accuracy(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean of the true positive and true negative rates; NaN without both classes."""
    if actual.all() or not actual.any():
        return math.nan
    return float(0.5 * (predicted[actual].mean() + (~predicted[~actual]).mean()))


def detection(match: np.ndarray, held: FeatureExamples) -> float:
    predicted = (match & held.evaluable).any(1)
    return balanced_accuracy(predicted, held.positive)


def highlights(held: FeatureExamples, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """delphi's fuzzing samples: one highlighting ``[n, ctx]`` per window, whether it is the correct one, and
    whether the window has one (an activating window always does)."""
    rng = np.random.default_rng(seed)
    evaluable, positive = held.evaluable, held.positive
    peak = np.where(evaluable, held.acts, 0).max(1, keepdims=True)
    marked = evaluable & (held.acts > 0) & (held.acts >= HIGHLIGHT * peak)
    n_wrong = max(1, math.ceil(((held.acts > 0) & evaluable)[positive].sum(1).mean())) if positive.any() else 1
    draw = np.where(evaluable, rng.random(evaluable.shape), np.inf)  # n_wrong random evaluable places per row
    rank = np.argsort(np.argsort(draw, axis=1), axis=1)
    marked |= (~positive)[:, None] & evaluable & (rank < n_wrong)
    return marked, positive, marked.any(1)


def fuzzing(match: np.ndarray, held: FeatureExamples, seed: int = 0) -> float:
    marked, correct, keep = highlights(held, seed)
    said_correct = (~marked | match).all(1)
    return balanced_accuracy(said_correct[keep], correct[keep])


def simulation(match: np.ndarray, held: FeatureExamples) -> float:
    keep = held.evaluable
    predicted, actual = match[keep].astype(np.float64), held.acts[keep].astype(np.float64)
    predicted, actual = predicted - predicted.mean(), actual - actual.mean()
    norm = np.sqrt((predicted ** 2).sum() * (actual ** 2).sum())
    return float((predicted * actual).sum() / norm) if norm > 0 else 0.0


def score_rule(rule: Rule, held: FeatureExamples, vocab: Vocabulary, seed: int = 0) -> dict[str, float]:
    """The four scores of ``rule`` on one feature's held-out windows."""
    match = rule.matches(held.ids, vocab)
    hard = np.char.endswith(held.set.astype(str), "hard")
    natural, contrast = ~hard, held.positive | hard
    plain = held.take(natural)
    return {"detection": detection(match[natural], plain),
            "detection_hard": detection(match[contrast], held.take(contrast)),
            "fuzzing": fuzzing(match[natural], plain, seed), "simulation": simulation(match[natural], plain)}


def baseline_partners(explained: list[int], n: int, seed: int = 0) -> dict[int, list[int]]:
    """For each explained feature, ``n`` other explained features whose explanations serve as its random
    baseline (seeded, the same on a rerun)."""
    pool = np.asarray(sorted(explained))
    if len(pool) < 2:
        return {int(f): [] for f in pool}
    rng = np.random.default_rng(seed)
    out = {}
    for f in pool.tolist():
        others = pool[pool != f]
        out[f] = sorted(rng.choice(others, size=min(n, len(others)), replace=False).tolist())
    return out
