"""Principled SAE evaluation against supervised dictionaries (PAPERS.md section 4, Makelov et al.).

A task gives prompts with known attributes. The supervised dictionary ``u[attr][value] =
E[a | attr = value] - E[a]`` reconstructs an activation from its labels alone; an SAE is scored
against it on sufficiency (patch the reconstruction in: how much of the logit difference stays),
necessity (remove the explained part: how much goes), control (edit one attribute: does the model
follow) and interpretability (best-F1 latent per attribute value, with occlusion and
over-splitting flags). Any ``Task`` plugs in (prompts of one length, labels, the answer pair, the
position read, counterfactual prompts per edited attribute); the built-in one is induction:
``[BOS] A B filler... A`` should predict ``B``; attributes are ``A`` and ``B``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.features.dictionary import Dictionary, check_fits
from interp.store.errors import InputError


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
        union = (
            fired[:, torch.as_tensor(narrow.latent.to_numpy().copy())].any(1)
            if len(narrow)
            else torch.zeros_like(truth)
        )
        covered = float((union & truth).sum() / truth.sum().clamp_min(1))
        rows.append(
            {
                "attribute": attr,
                "value": value,
                "best_latent": int(best.latent),
                "best_f1": float(best.f1),
                "occluded": bool(best.f1 < good),
                "n_precise": len(narrow),
                "covered_recall": covered,
                "over_split": bool(len(narrow) >= 2 and best.recall < good <= covered),
            }
        )
    return pd.DataFrame(rows)


# ---- control: budgeted SAE edits --------------------------------------------------------------


def sae_edit(
    dictionary: Dictionary, source: Float[Tensor, "n d"], target: Float[Tensor, "n d"], budget: int = 4
) -> Float[Tensor, "n d"]:
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


# ---- tasks -------------------------------------------------------------------------------------


@dataclass
class Counterfactual:
    """The prompts with one attribute changed: their tokens (same shape as the task's) and new labels."""

    tokens: Int[Tensor, "n ctx"]
    labels: Int[Tensor, "n"]


@dataclass
class Task:
    """Prompts with attribute labels, the answer pair of the logit difference, where the activation is
    read (``position``, default the last token; IOI: END) and, per editable attribute, counterfactual
    prompts whose activation is the edit target."""

    tokens: Int[Tensor, "n ctx"]
    labels: dict[str, Int[Tensor, "n"]]
    values: dict[str, Int[Tensor, "n_values"]]  # attribute value -> token id (or any id)
    correct: Int[Tensor, "n"]
    wrong: Int[Tensor, "n"]
    position: Int[Tensor, "n"] | None = None
    counterfactuals: dict[str, Counterfactual] = field(default_factory=dict)

    def __post_init__(self):
        n, ctx = self.tokens.shape
        if self.position is None:
            self.position = torch.full((n,), ctx - 1, dtype=torch.long)
        for attr, cf in self.counterfactuals.items():
            if attr not in self.labels:
                raise InputError(
                    f"counterfactual for unknown attribute '{attr}'; the task's attributes are {sorted(self.labels)}"
                )
            if tuple(cf.tokens.shape) != (n, ctx):
                raise InputError(
                    f"counterfactual prompts for '{attr}' have shape {tuple(cf.tokens.shape)} but the task's "
                    f"prompts have {(n, ctx)}: every prompt of a task must tokenize to the same length"
                )


def aligned_tokens(model, texts: list[str], prepend_bos: bool = True) -> Int[Tensor, "n ctx"]:
    """Tokenize a task's prompts, which must all have the same length (positions are compared across prompts)."""
    rows = [model.to_tokens(text, prepend_bos=prepend_bos)[0] for text in texts]
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        odd = next(text for text, r in zip(texts, rows) if len(r) != len(rows[0]))
        raise InputError(
            f"the task's prompts tokenize to different lengths {lengths} (e.g. {odd!r} vs {texts[0]!r}); "
            "use templates and names that give every prompt the same number of tokens"
        )
    return torch.stack(rows)


def induction_task(
    candidates: Int[Tensor, "m"],
    n_prompts: int = 256,
    n_values: int = 8,
    filler: int = 6,
    vocab: int | None = None,
    bos: int = 0,
    seed: int = 0,
) -> Task:
    """``[BOS] A B filler... A``: the model should predict ``B`` over ``A``; A and B drawn from ``n_values`` each.

    The counterfactual for ``B`` is the same prompt with the next value of B (``B' = B + 1 mod n``)."""
    g = torch.Generator().manual_seed(seed)
    pick = candidates[torch.randperm(len(candidates), generator=g)[: 2 * n_values]]
    if len(pick) < 2 * n_values:
        raise InputError(f"need {2 * n_values} candidate tokens, got {len(candidates)}")
    values = {"A": pick[:n_values], "B": pick[n_values:]}
    a, b = torch.randint(0, n_values, (n_prompts,), generator=g), torch.randint(0, n_values, (n_prompts,), generator=g)
    high = vocab or int(candidates.max()) + 1
    fill = torch.randint(1, high, (n_prompts, filler), generator=g)
    tokens = torch.cat(
        [torch.full((n_prompts, 1), bos), values["A"][a, None], values["B"][b, None], fill, values["A"][a, None]], 1
    )
    shifted = (b + 1) % n_values
    cf_tokens = tokens.clone()
    cf_tokens[:, 2] = values["B"][shifted]
    return Task(
        tokens,
        {"A": a, "B": b},
        values,
        values["B"][b],
        values["A"][a],
        counterfactuals={"B": Counterfactual(cf_tokens, shifted)},
    )


def _run(
    model, tokens, position, hook: str | None = None, replacement: Tensor | None = None
) -> Float[Tensor, "n vocab"]:
    """Logits at ``position``, optionally with the hook's activation there replaced."""
    rows = torch.arange(len(tokens))

    def patch(act, hook=None):
        act[rows, position] = replacement.to(act.dtype).reshape(act[rows, position].shape)
        return act

    hooks = [] if replacement is None else [(hook, patch)]
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=hooks)[rows, position].float().cpu()


def logit_diff(model, task: Task, hook: str, replacement: Float[Tensor, "n d"] | None = None) -> Float[Tensor, "n"]:
    """``logit(correct) - logit(wrong)`` at the task's position, optionally with the hook's activation
    there replaced."""
    logits = _run(model, task.tokens, task.position, hook, replacement)
    rows = torch.arange(len(task.tokens))
    return logits[rows, task.correct] - logits[rows, task.wrong]


def position_activations(
    model, tokens: Int[Tensor, "n ctx"], position: Int[Tensor, "n"], hook: str
) -> Float[Tensor, "n d"]:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
    return cache[hook][torch.arange(len(tokens)), position].reshape(len(tokens), -1).float().cpu()


def last_activations(model, task: Task, hook: str) -> Float[Tensor, "n d"]:
    """The hook's activation at the task's position (the last token unless the task says otherwise)."""
    return position_activations(model, task.tokens, task.position, hook)


def evaluate_dictionaries(
    model, hook: str, task: Task, dictionaries: dict[str, Dictionary], budget: int = 4
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sufficiency, necessity, control and F1 of the supervised dictionary and each SAE.

    Control, for each attribute with counterfactual prompts: the edit's target is the counterfactual
    prompt's own activation (the SAE switches at most ``budget`` latents towards it; the supervised
    dictionary swaps ``u[attr][v]`` for ``u[attr][v']``). ``edit_accuracy`` (the paper's success):
    the edited run's top prediction equals the counterfactual prompt's; ``edit_logit_diff``: the
    edited run prefers the counterfactual answer over the clean one. Returns a summary (one row per
    dictionary and edited attribute) and the per-value occlusion / over-splitting table.
    """
    acts = last_activations(model, task, hook)
    sup = supervised_dictionary(acts, task.labels)
    clean = logit_diff(model, task, hook)
    ablated = logit_diff(model, task, hook, acts.mean(0).expand_as(acts))
    hat = sup.reconstruct(task.labels)
    recon = {"supervised": hat}
    necessity = {"supervised": acts - hat + hat.mean(0)}
    flags, codes = [], {}
    for name, dictionary in dictionaries.items():
        check_fits(dictionary, acts.shape[1], f"hook '{hook}'")
        with torch.no_grad():
            codes[name] = dictionary.encode(acts).float()
            recon[name] = dictionary.decode(codes[name]).float()
        necessity[name] = acts - recon[name] + recon[name].mean(0)
        flags.append(
            occlusion_and_splitting(latent_f1(codes[name], task.labels), codes[name], task.labels).assign(
                dictionary=name
            )
        )
    rows = []
    for name in recon:
        row = {
            "dictionary": name,
            "explained_variance": explained_variance(acts, recon[name]),
            "sufficiency": fraction_kept(logit_diff(model, task, hook, recon[name]), clean, ablated),
            "necessity": fraction_kept(logit_diff(model, task, hook, necessity[name]), clean, ablated),
        }
        if not task.counterfactuals:
            rows.append(row)
        for attr, cf in task.counterfactuals.items():
            target = position_activations(model, cf.tokens, task.position, hook)
            cf_logits = _run(model, cf.tokens, task.position)
            edited = (
                sup.edit(acts, attr, task.labels[attr], cf.labels)
                if name == "supervised"
                else sae_edit(dictionaries[name], acts, target, budget)
            )
            logits = _run(model, task.tokens, task.position, hook, edited)
            rows_idx = torch.arange(len(acts))
            new_answer = cf_logits.argmax(-1)
            rows.append(
                row
                | {
                    "attribute": attr,
                    "edit_accuracy": float((logits.argmax(-1) == new_answer).float().mean()),
                    "edit_logit_diff": float(
                        ((logits[rows_idx, new_answer] - logits[rows_idx, task.correct]) > 0).float().mean()
                    ),
                    "edit_error": float((edited - target).norm(dim=1).mean() / target.norm(dim=1).mean()),
                    "edit_norm": float((edited - acts).norm(dim=1).mean()),
                }
            )
    summary = pd.DataFrame(rows)
    flags = pd.concat(flags, ignore_index=True) if flags else pd.DataFrame()
    if len(flags):
        per = flags.groupby("dictionary").agg(
            mean_best_f1=("best_f1", "mean"), n_occluded=("occluded", "sum"), n_over_split=("over_split", "sum")
        )
        summary = summary.merge(per, left_on="dictionary", right_index=True, how="left")
    return summary, flags
