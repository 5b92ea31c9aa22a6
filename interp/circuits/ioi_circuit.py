"""Which heads solve an IOI task: name movers and the heads that tell them which name not to move.

Wang et al. (2022) find, in GPT-2 small, duplicate-token heads (at S2, attending to S1), S-inhibition
heads (at END, attending to S2) and name movers (at END, attending to IO and copying it). A 2-layer
model can only hold the last two roles in sequence: a layer-0 head at END reads the repeated name,
and a layer-1 name mover avoids it. Per head this module measures what identifies each role:

- ``dla_logit_diff``: the head's direct contribution to ``logit(IO) - logit(S)`` at END;
- ``attn_end_io`` / ``attn_end_s1`` / ``attn_end_s2``: attention from END to each name's position;
- ``attn_s2_s1``: attention from S2 to S1 (a duplicate-token head);
- ``patch_effect``: the logit difference lost when the head's output takes its value on the ABC
  counterfactual (activation patching, from ``interp.circuits.patching``).
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from interp.circuits.attention import CircuitInputError, attention_patterns, direct_logit_attribution
from interp.circuits.patching import patch_heads
from interp.circuits.prompts import IOIPrompts


def name_positions(prompts: IOIPrompts) -> dict[str, Int[Tensor, "batch"]]:
    """Positions of IO, S1 (the subject's first mention) and S2 (its repeat) in each clean prompt."""
    rows = {"io": [], "s1": [], "s2": []}
    for clean, io, subject, end in zip(prompts.clean, prompts.io, prompts.subject, prompts.end):
        tokens = clean[: int(end) + 1]
        io_at = (tokens == io).nonzero().flatten()
        s_at = (tokens == subject).nonzero().flatten()
        if len(io_at) != 1 or len(s_at) != 2:
            raise CircuitInputError("an IOI prompt must mention IO once and S twice before END; "
                                    f"found IO {len(io_at)} and S {len(s_at)} times")
        rows["io"].append(int(io_at[0]))
        rows["s1"].append(int(s_at[0]))
        rows["s2"].append(int(s_at[1]))
    return {name: torch.tensor(values) for name, values in rows.items()}


def ioi_head_table(model, prompts: IOIPrompts) -> pd.DataFrame:
    """One row per head with the measures in the module docstring (means over prompts)."""
    if not torch.equal(prompts.end, prompts.end[:1].expand_as(prompts.end)):
        raise CircuitInputError("IOI circuit analysis needs prompts of one length (END at one position): "
                                "use one template and single-token places and objects")
    batch = torch.arange(len(prompts.end))
    end = prompts.end
    at = name_positions(prompts)
    patterns = attention_patterns(model, prompts.clean).permute(1, 3, 4, 0, 2)  # [batch, q, k, layer, head]
    attn = lambda q, k: patterns[batch, q, k].mean(0)  # noqa: E731  [layer, head]
    targets = lambda ids: ids[:, None].expand_as(prompts.clean)  # noqa: E731
    dla_io = direct_logit_attribution(model, prompts.clean, targets(prompts.io))[:, :, batch, end]
    dla_s = direct_logit_attribution(model, prompts.clean, targets(prompts.subject))[:, :, batch, end]
    effect = patch_heads(model, prompts.clean, prompts.corrupt, prompts.metric())
    measures = {
        "dla_logit_diff": (dla_io - dla_s).mean(-1),
        "attn_end_io": attn(end, at["io"]), "attn_end_s1": attn(end, at["s1"]), "attn_end_s2": attn(end, at["s2"]),
        "attn_s2_s1": attn(at["s2"], at["s1"]),
        "patch_effect": effect,
    }
    n_layers, n_heads = effect.shape
    index = torch.cartesian_prod(torch.arange(n_layers), torch.arange(n_heads))
    return pd.DataFrame({"layer": index[:, 0], "head": index[:, 1],
                         **{name: values.flatten().tolist() for name, values in measures.items()}})


def ioi_roles(table: pd.DataFrame) -> dict[str, list[int]]:
    """The name mover (last layer, largest direct effect on the logit difference) and the head before
    it that matters most under patching (largest patching effect among earlier layers)."""
    last = table.layer.max()
    mover = table[table.layer == last].sort_values("dla_logit_diff", ascending=False).iloc[0]
    earlier = table[table.layer < last]
    signal = earlier.loc[earlier.patch_effect.abs().idxmax()]
    return {"name_mover": [int(mover.layer), int(mover["head"])],
            "s_signal": [int(signal.layer), int(signal["head"])]}
