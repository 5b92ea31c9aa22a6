"""Principled SAE evaluation against supervised dictionaries (PAPERS.md section 4, Makelov et al.).

A task gives prompts with known attributes. The supervised dictionary ``u[attr][value] =
E[a | attr = value] - E[a]`` reconstructs an activation from its labels alone; an SAE is scored
against it on sufficiency (patch the reconstruction in: how much of the logit difference stays),
necessity (remove the explained part: how much goes), control (edit one attribute: does the model
follow) and interpretability (best-F1 latent per attribute value, with occlusion and
over-splitting flags). The synthetic task here is induction on the demo model: ``[BOS] A B
filler... A`` should predict ``B``; attributes are ``A`` and ``B``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.dictionary import Dictionary, check_fits
from interp.errors import InputError


@dataclass
class SupervisedDictionary:
    """Mean activation and one vector per (attribute, value)."""

    mean: Float[Tensor, "d"]
    u: dict[str, Float[Tensor, "n_values d"]]

    def reconstruct(self, labels: dict[str, Int[Tensor, "n"]]) -> Float[Tensor, "n d"]:
        out = self.mean.expand(len(next(iter(labels.values()))), -1).clone()
        for attr, values in labels.items():
            out += self.u[attr][values]
        return out

    def edit(self, acts: Float[Tensor, "n d"], attr: str, source: Int[Tensor, "n"],
             target: Int[Tensor, "n"]) -> Float[Tensor, "n d"]:
        """Change one attribute: ``a - u[attr][source] + u[attr][target]``."""
        return acts - self.u[attr][source] + self.u[attr][target]


def supervised_dictionary(acts: Float[Tensor, "n d"], labels: dict[str, Int[Tensor, "n"]]) -> SupervisedDictionary:
    """``u[attr][v] = E[a | attr = v] - E[a]`` (MSE-optimal under additive independent attributes)."""
    acts = acts.float()
    mean = acts.mean(0)
    u = {}
    for attr, values in labels.items():
        if len(values) != len(acts):
            raise ValueError(f"attribute '{attr}' has {len(values)} labels for {len(acts)} activations")
        n_values = int(values.max()) + 1
        sums = torch.zeros(n_values, acts.shape[1]).index_add_(0, values, acts)
        counts = torch.bincount(values, minlength=n_values).clamp_min(1)[:, None]
        u[attr] = sums / counts - mean
    return SupervisedDictionary(mean, u)


def explained_variance(acts: Float[Tensor, "n d"], recon: Float[Tensor, "n d"]) -> float:
    return float(1 - (acts - recon).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum())


def fraction_kept(patched: Tensor, clean: Tensor, ablated: Tensor) -> float:
    """``(LD_patched - LD_ablated) / (LD_clean - LD_ablated)``, averaged logit differences."""
    return float((patched.mean() - ablated.mean()) / (clean.mean() - ablated.mean()))


# ---- interpretability: latents as attribute classifiers ---------------------------------------

def latent_f1(codes: Float[Tensor, "n d_sae"], labels: dict[str, Int[Tensor, "n"]]) -> pd.DataFrame:
    """Precision, recall and F1 of every latent (fires = positive) for every attribute value."""
    fired = (codes > 0).float()
    rows = []
    for attr, values in labels.items():
        for value in torch.unique(values).tolist():
            truth = (values == value).float()
            tp = truth @ fired
            precision = tp / fired.sum(0).clamp_min(1)
            recall = tp / truth.sum().clamp_min(1)
            f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
            rows.append(pd.DataFrame({"attribute": attr, "value": value, "latent": np.arange(codes.shape[1]),
                                      "precision": precision.numpy(), "recall": recall.numpy(), "f1": f1.numpy()}))
    return pd.concat(rows, ignore_index=True)


def occlusion_and_splitting(f1: pd.DataFrame, codes: Float[Tensor, "n d_sae"], labels: dict[str, Int[Tensor, "n"]],
                            precise: float = 0.9, good: float = 0.5) -> pd.DataFrame:
    """Per attribute value: best latent and F1; occluded if no latent reaches ``good`` F1; over-split
    if several precise latents together cover the value that no single latent covers."""
    fired = codes > 0
    rows = []
    for (attr, value), group in f1.groupby(["attribute", "value"]):
        best = group.loc[group.f1.idxmax()]
        narrow = group[(group.precision >= precise) & (group.recall > 0)]
        truth = labels[attr] == value
        union = fired[:, torch.as_tensor(narrow.latent.to_numpy().copy())].any(1) if len(narrow) else torch.zeros_like(truth)
        covered = float((union & truth).sum() / truth.sum().clamp_min(1))
        rows.append({"attribute": attr, "value": value, "best_latent": int(best.latent), "best_f1": float(best.f1),
                     "occluded": bool(best.f1 < good), "n_precise": len(narrow), "covered_recall": covered,
                     "over_split": bool(len(narrow) >= 2 and best.recall < good <= covered)})
    return pd.DataFrame(rows)


# ---- control: budgeted SAE edits --------------------------------------------------------------

def sae_edit(dictionary: Dictionary, source: Float[Tensor, "n d"], target: Float[Tensor, "n d"],
             budget: int = 4) -> Float[Tensor, "n d"]:
    """Move ``source`` toward ``target`` by switching at most ``budget`` latents to the target's values,
    chosen greedily to shrink the remaining distance (error term kept)."""
    with torch.no_grad():
        f_s, f_t = dictionary.encode(source), dictionary.encode(target)
        W = dictionary.W_dec.float()
        delta = f_t - f_s
        norms = W.pow(2).sum(1)
        edited, residual = source.clone().float(), (target - source).float()
        rows = torch.arange(len(source))
        for _ in range(budget):
            gain = 2 * delta * (residual @ W.T) - delta.pow(2) * norms
            j = gain.argmax(1)
            step = delta[rows, j][:, None] * W[j] * (gain[rows, j] > 0)[:, None]
            edited += step
            residual -= step
            delta[rows, j] = 0
        return edited


# ---- the induction task on a model ------------------------------------------------------------

@dataclass
class Task:
    tokens: Int[Tensor, "n ctx"]
    labels: dict[str, Int[Tensor, "n"]]
    values: dict[str, Int[Tensor, "n_values"]]  # attribute value -> token id
    correct: Int[Tensor, "n"]
    wrong: Int[Tensor, "n"]


def induction_task(candidates: Int[Tensor, "m"], n_prompts: int = 256, n_values: int = 8, filler: int = 6,
                   vocab: int | None = None, bos: int = 0, seed: int = 0) -> Task:
    """``[BOS] A B filler... A``: the model should predict ``B`` over ``A``; A and B drawn from ``n_values`` each."""
    g = torch.Generator().manual_seed(seed)
    pick = candidates[torch.randperm(len(candidates), generator=g)[:2 * n_values]]
    if len(pick) < 2 * n_values:
        raise InputError(f"need {2 * n_values} candidate tokens, got {len(candidates)}")
    values = {"A": pick[:n_values], "B": pick[n_values:]}
    a, b = torch.randint(0, n_values, (n_prompts,), generator=g), torch.randint(0, n_values, (n_prompts,), generator=g)
    high = vocab or int(candidates.max()) + 1
    fill = torch.randint(1, high, (n_prompts, filler), generator=g)
    tokens = torch.cat([torch.full((n_prompts, 1), bos), values["A"][a, None], values["B"][b, None], fill,
                        values["A"][a, None]], 1)
    return Task(tokens, {"A": a, "B": b}, values, values["B"][b], values["A"][a])


def logit_diff(model, task: Task, hook: str, replacement: Float[Tensor, "n d"] | None = None) -> Float[Tensor, "n"]:
    """``logit(correct) - logit(wrong)`` at the last position, optionally with the hook's last-position
    activation replaced."""
    def patch(act, hook=None):
        act[:, -1] = replacement.to(act.dtype).reshape(act[:, -1].shape)
        return act

    hooks = [] if replacement is None else [(hook, patch)]
    with torch.no_grad():
        logits = model.run_with_hooks(task.tokens, fwd_hooks=hooks)[:, -1]
    rows = torch.arange(len(task.tokens))
    return (logits[rows, task.correct] - logits[rows, task.wrong]).float().cpu()


def last_activations(model, task: Task, hook: str) -> Float[Tensor, "n d"]:
    with torch.no_grad():
        _, cache = model.run_with_cache(task.tokens, names_filter=hook)
    return cache[hook][:, -1].reshape(len(task.tokens), -1).float().cpu()


def evaluate_dictionaries(model, hook: str, task: Task, dictionaries: dict[str, Dictionary],
                          budget: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sufficiency, necessity, edit success and F1 of the supervised dictionary and each SAE.

    Returns a summary (one row per dictionary) and the per-value occlusion / over-splitting table.
    """
    acts = last_activations(model, task, hook)
    sup = supervised_dictionary(acts, task.labels)
    clean = logit_diff(model, task, hook)
    ablated = logit_diff(model, task, hook, acts.mean(0).expand_as(acts))
    # edit B -> B' (a different value) and ask whether the model now prefers B' over B
    shift = (task.labels["B"] + 1) % len(task.values["B"])
    edit_task = Task(task.tokens, task.labels, task.values, task.values["B"][shift], task.correct)
    counterfactual = acts.clone()
    for value in range(len(task.values["B"])):  # the mean activation of prompts that have the target value
        counterfactual[shift == value] = acts[task.labels["B"] == value].mean(0)
    hat = sup.reconstruct(task.labels)
    recon = {"supervised": hat}
    necessity = {"supervised": acts - hat + hat.mean(0)}
    edits = {"supervised": sup.edit(acts, "B", task.labels["B"], shift)}
    flags = []
    for name, dictionary in dictionaries.items():
        check_fits(dictionary, acts.shape[1], f"hook '{hook}'")
        with torch.no_grad():
            codes = dictionary.encode(acts).float()
            recon[name] = dictionary.decode(codes).float()
        necessity[name] = acts - recon[name] + recon[name].mean(0)
        edits[name] = sae_edit(dictionary, acts, counterfactual, budget)
        flags.append(occlusion_and_splitting(latent_f1(codes, task.labels), codes, task.labels).assign(dictionary=name))
    rows = []
    for name in recon:
        success = logit_diff(model, edit_task, hook, edits[name]) > 0
        rows.append({"dictionary": name, "explained_variance": explained_variance(acts, recon[name]),
                     "sufficiency": fraction_kept(logit_diff(model, task, hook, recon[name]), clean, ablated),
                     "necessity": fraction_kept(logit_diff(model, task, hook, necessity[name]), clean, ablated),
                     "edit_success": float(success.float().mean()),
                     "edit_norm": float((edits[name] - acts).norm(dim=1).mean())})
    summary = pd.DataFrame(rows)
    flags = pd.concat(flags, ignore_index=True) if flags else pd.DataFrame()
    if len(flags):
        per = flags.groupby("dictionary").agg(mean_best_f1=("best_f1", "mean"), n_occluded=("occluded", "sum"),
                                              n_over_split=("over_split", "sum"))
        summary = summary.merge(per, left_on="dictionary", right_index=True, how="left")
    return summary, flags
