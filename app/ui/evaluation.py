"""One source for an SAE's FVU, L0 and dead fraction: the run's final evaluation (its owner's file), and the
sentence that says which tokens it measured. Home, Training and Compare all show these."""

from __future__ import annotations

import math

from interp.store.run_folder import EVALUATION

EVAL_COLUMNS = {"fvu": "FVU", "l0": "L0", "dead_fraction": "dead fraction"}


def eval_tokens(members: list[dict] | tuple[dict, ...]) -> int | None:
    """Tokens the evaluation read (the same for every member), None when unrecorded."""
    counts = {int(m["eval_tokens"]) for m in members if isinstance(m.get("eval_tokens"), (int, float))}
    return counts.pop() if len(counts) == 1 else None


def eval_note(members: list[dict] | tuple[dict, ...]) -> str:
    """What the final evaluation measured, in one clause."""
    tokens = eval_tokens(members)
    what = f"{tokens:,} tokens" if tokens else "its evaluation tokens"
    return (f"the final evaluation on {what} of the training cache, reshuffled with another seed (not held-out "
            "text: the cache is also the training data; a different sample from the Evaluate page's core metrics)")


def eval_source(run_id: str, members: list[dict] | tuple[dict, ...]) -> str:
    """Which evaluation the figures come from, in one sentence."""
    return f"`runs/{run_id}/{EVALUATION}`: {eval_note(members)}"


def eval_figures(member: dict) -> dict[str, float | None]:
    """``{"FVU": …, "L0": …, "dead fraction": …}`` of one member (None when missing or not finite)."""
    out = {}
    for key, name in EVAL_COLUMNS.items():
        value = member.get(key)
        out[name] = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    return out
