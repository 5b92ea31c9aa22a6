"""One source for an SAE's FVU, L0 and dead fraction: the run's final evaluation (``eval.json``), and the
sentence that says which tokens it measured. Home, Training and Compare all show these."""

from __future__ import annotations

import math

EVAL_COLUMNS = {"fvu": "FVU", "l0": "L0", "dead_fraction": "dead fraction"}


def eval_tokens(members: list[dict] | tuple[dict, ...]) -> int | None:
    """Tokens the evaluation read (the same for every member), None when unrecorded."""
    counts = {int(m["eval_tokens"]) for m in members if isinstance(m.get("eval_tokens"), (int, float))}
    return counts.pop() if len(counts) == 1 else None


def eval_source(run_id: str, members: list[dict] | tuple[dict, ...]) -> str:
    """Which evaluation the figures come from, in one sentence."""
    tokens = eval_tokens(members)
    what = f"{tokens:,} tokens" if tokens else "its evaluation tokens"
    return (f"`runs/{run_id}/eval.json`: the final evaluation on {what} of the training cache, reshuffled with "
            "another seed (the demo's cache is also its training data: not held-out text)")


def eval_figures(member: dict) -> dict[str, float | None]:
    """``{"FVU": …, "L0": …, "dead fraction": …}`` of one member (None when missing or not finite)."""
    out = {}
    for key, name in EVAL_COLUMNS.items():
        value = member.get(key)
        out[name] = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    return out
