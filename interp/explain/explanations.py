"""Every feature explained from its training windows and scored on its held-out ones, beside a baseline.

``Explainer`` holds one SAE's example arrays and vocabulary; ``rows(features)`` returns one row per feature
(the columns of ``explanations`` in ``interp/ANALYSES.md``): the status (``explained``, ``dead``, ``too
rare``), the text and the rule (JSON), the three held-out scores, their random baseline (the mean score of
``n_baselines`` other features' rules on this feature's held-out windows) and the example counts. A feature
with fewer than ``min_examples`` activating windows in training or held-out is ``too rare`` and not scored
(its scores are NaN, never 0 or 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from interp.explain.examples import POSITIVE, TEST_SETS, TRAIN_SETS, ExampleArrays, FeatureExamples
from interp.explain.rules import Explanation, Rule, Vocabulary, explain
from interp.explain.scoring import SCORES, baseline_partners, score_rule

EXPLAINED, DEAD, TOO_RARE = "explained", "dead", "too rare"


@dataclass(frozen=True)
class ExplainConfig:
    min_examples: int = 5  # activating windows needed in each of training and held-out
    n_baselines: int = 3  # other features' explanations averaged into the random baseline
    seed: int = 0


class Explainer:
    """Explanations and scores of one SAE's features (rules computed once, reused as baselines)."""

    def __init__(self, arrays: ExampleArrays, vocab: Vocabulary, n_fires: np.ndarray, n_tokens: int,
                 promoted: dict[int, list[int]] | None = None, config: ExplainConfig = ExplainConfig()):
        self.arrays, self.vocab, self.config = arrays, vocab, config
        self.n_fires, self.n_tokens = np.asarray(n_fires), int(n_tokens)
        self.promoted = promoted or {}
        self.status = {f: self._status(f) for f in range(len(self.n_fires))}
        self.partners = baseline_partners([f for f, s in self.status.items() if s == EXPLAINED],
                                          config.n_baselines, config.seed)
        self._explanations: dict[int, Explanation] = {}

    def _status(self, feature: int) -> str:
        if self.n_fires[feature] == 0:
            return DEAD
        ex = self.arrays.feature_examples(feature)
        train_pos = ex.count(POSITIVE & set(TRAIN_SETS))
        test_pos = ex.count(POSITIVE & set(TEST_SETS))
        return EXPLAINED if min(train_pos, test_pos) >= self.config.min_examples else TOO_RARE

    def explanation(self, feature: int) -> Explanation:
        if feature not in self._explanations:
            train = self.arrays.feature_examples(feature).subset(TRAIN_SETS)
            self._explanations[feature] = explain(train, self.vocab, self.promoted.get(feature))
        return self._explanations[feature]

    def held_out(self, feature: int) -> FeatureExamples:
        return self.arrays.feature_examples(feature).subset(TEST_SETS)

    def row(self, feature: int) -> dict:
        ex = self.arrays.feature_examples(feature)
        row = {"feature": feature, "status": self.status[feature], "n_fires": int(self.n_fires[feature]),
               "n_train_positive": ex.count(POSITIVE & set(TRAIN_SETS)),
               "n_train_negative": ex.count(set(TRAIN_SETS) - POSITIVE),
               "n_test_positive": ex.count(POSITIVE & set(TEST_SETS)),
               "n_test_negative": ex.count(set(TEST_SETS) - POSITIVE), "fit": math.nan,
               **{s: math.nan for s in SCORES}, **{f"baseline_{s}": math.nan for s in SCORES},
               "baseline_features": []}
        status = self.status[feature]
        if status == DEAD:
            return {
                **row,
                "explanation": f"dead: never fired in {self.n_tokens:,} tokens",
                "rule": Rule("never").to_json(),
                "family": "never",
            }
        if status == TOO_RARE:
            return {
                **row,
                "explanation": f"too rare to explain ({row['n_fires']} firings in {self.n_tokens:,} tokens)",
                "rule": "",
                "family": "",
            }
        explanation, held = self.explanation(feature), self.held_out(feature)
        seed = self.config.seed + feature
        scores = score_rule(explanation.rule, held, self.vocab, seed)
        partners = self.partners.get(feature, [])
        baselines = [score_rule(self.explanation(p).rule, held, self.vocab, seed) for p in partners]
        for s in SCORES:
            values = [b[s] for b in baselines if not math.isnan(b[s])]
            row[f"baseline_{s}"] = float(np.mean(values)) if values else math.nan
        return {
            **row,
            **scores,
            "fit": explanation.fit,
            "explanation": explanation.text,
            "rule": explanation.rule.to_json(),
            "family": explanation.rule.family,
            "baseline_features": partners,
        }

    def rows(self, features) -> pd.DataFrame:
        return pd.DataFrame([self.row(int(f)) for f in features])
