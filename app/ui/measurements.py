"""Which tokens each page's SAE figures were measured on, in one place: the run's final training evaluation
(``runs/<id>/eval.json``: Home, Training, Compare) and the evaluation suite's core metric
(``analyses/<id>/eval/core.json``: Evaluate) read different samples of the training cache, so their dead
fractions (and FVU, L0) differ; every page labels which one it shows."""

from __future__ import annotations

import pandas as pd

from interp.figures.evals import HEADLINE
from interp.store.run_folder import EVALUATION

CORE_TOKENS = "core.total_tokens_eval_sparsity_variance"
CE_TOKENS = "core.total_tokens_eval_reconstruction"
CORE_DEAD = HEADLINE["core.dead_fraction"]


def _count(wide: pd.DataFrame, column: str) -> str | None:
    """``65,536`` when every SAE read that many tokens, ``1,024 to 65,536`` when they differ, None if unrecorded."""
    values = sorted({int(v) for v in wide[column].dropna()}) if column in wide else []
    if not values:
        return None
    return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,} to {values[-1]:,}"


def core_note(wide: pd.DataFrame) -> str:
    """What the Evaluate page's core figures (L0, explained variance, dead, CE and KL scores) measured, and
    that they are not the final training evaluation's."""
    tokens, ce = _count(wide, CORE_TOKENS), _count(wide, CE_TOKENS)
    what = f"the first {tokens} tokens" if tokens else "tokens"
    out = (f"Core metrics (L0, explained variance, {CORE_DEAD}): `eval/core.json`, over {what} of each SAE's "
           "training cache in cache order (live corpus windows for a run without one), BOS left out; not held-out "
           "text: the cache is the training data")
    if ce:
        out += f"; CE and KL scores over {ce} tokens of corpus windows"
    return (out + ". The Home and Training pages show another measurement, each run's final training evaluation "
            f"(`{EVALUATION}`, a reshuffled sample of the same cache): a dead fraction depends on how many tokens "
            "are read, so the two differ.")
