"""Principled evaluation: supervised dictionaries on planted additive data, detectors, edits, patching."""

from __future__ import annotations

import pytest
import torch

from interp.features.principled_eval import (
    evaluate_dictionaries,
    explained_variance,
    induction_task,
    latent_f1,
    logit_diff,
    occlusion_and_splitting,
    sae_edit,
    supervised_dictionary,
)

D = 32


def additive_data(n=6000, seed=0):
    """``a = mu + u_IO[v1] + u_S[v2] + u_Pos[v3] + noise`` with centred random attribute vectors."""
    g = torch.Generator().manual_seed(seed)
    sizes = {"IO": 5, "S": 5, "Pos": 2}
    u = {k: torch.randn(v, D, generator=g) for k, v in sizes.items()}
    u = {k: v - v.mean(0) for k, v in u.items()}
    labels = {k: torch.randint(0, v, (n,), generator=g) for k, v in sizes.items()}
    mu = torch.randn(D, generator=g)
    acts = mu + sum(u[k][labels[k]] for k in u) + 0.1 * torch.randn(n, D, generator=g)
    return acts, labels, u


class SignedIdentity:
    """An exact dictionary: latents are +e_i and -e_i."""

    d_in, d_sae = D, 2 * D

    @property
    def W_dec(self):
        return torch.cat([torch.eye(D), -torch.eye(D)])

    def encode(self, x):
        return torch.relu(torch.cat([x, -x], -1))

    def decode(self, f):
        return f @ self.W_dec


def test_supervised_dictionary_recovers_planted_attributes():
    acts, labels, u = additive_data()
    sup = supervised_dictionary(acts, labels)
    for attr in u:
        cos = torch.nn.functional.cosine_similarity(sup.u[attr], u[attr], dim=1)
        assert cos.min() > 0.99
    hat = sup.reconstruct(labels)
    assert explained_variance(acts, hat) > 0.95
    target = (labels["IO"] + 1) % 5
    moved = sup.edit(hat, "IO", labels["IO"], target)
    assert torch.allclose(moved, sup.reconstruct({**labels, "IO": target}), atol=1e-5)


def test_detectors_flag_planted_occlusion_and_over_splitting():
    _, labels, _ = additive_data(n=2000)
    io, pos = labels["IO"], labels["Pos"]
    # latents 0-4: one per IO value (clean); latents 5-9: Pos = 1 split by IO name; no latent for Pos = 0
    codes = torch.cat([torch.nn.functional.one_hot(io, 5).float(),
                       torch.nn.functional.one_hot(io, 5).float() * (pos == 1)[:, None]], 1)
    subset = {"IO": io, "Pos": pos}
    flags = occlusion_and_splitting(latent_f1(codes, subset), codes, subset).set_index(["attribute", "value"])
    assert (flags.loc["IO"].best_f1 == 1).all() and not flags.loc["IO"].occluded.any()
    assert flags.loc[("Pos", 0)].occluded
    assert flags.loc[("Pos", 1)].over_split and flags.loc[("Pos", 1)].n_precise == 5
    assert flags.loc[("Pos", 1)].covered_recall == pytest.approx(1.0)


def test_sae_edit_spends_its_budget_on_the_largest_moves():
    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(10, D, generator=g).abs(), torch.randn(10, D, generator=g).abs()
    full = sae_edit(SignedIdentity(), source, target, budget=2 * D)
    assert torch.allclose(full, target, atol=1e-5)
    one = sae_edit(SignedIdentity(), source, target, budget=1)  # positive coordinates: one latent each
    gap = (target - source).abs()
    assert torch.allclose((target - one).pow(2).sum(1), (gap.pow(2).sum(1) - gap.max(1).values.pow(2)), atol=1e-4)


def test_patching_metrics_have_their_known_endpoints(tiny_model):
    hook = "blocks.1.hook_resid_post"
    task = induction_task(torch.arange(100, 400), n_prompts=64, vocab=4096)
    assert (task.tokens[:, -1] == task.tokens[:, 1]).all() and (task.correct == task.tokens[:, 2]).all()
    clean = logit_diff(tiny_model, task, hook)
    acts = torch.stack([tiny_model.run_with_cache(task.tokens, names_filter=hook)[1][hook][:, -1]]).squeeze(0)
    assert torch.allclose(logit_diff(tiny_model, task, hook, acts), clean, atol=1e-4)
    summary, flags = evaluate_dictionaries(tiny_model, hook, task, {"exact": SignedIdentity()})
    exact = summary.set_index("dictionary").loc["exact"]
    assert exact.sufficiency == pytest.approx(1.0, abs=1e-4) and exact.necessity == pytest.approx(0.0, abs=1e-4)
    assert exact.explained_variance == pytest.approx(1.0, abs=1e-5)
    assert set(flags.attribute) == {"A", "B"}
    assert list(summary.dictionary) == ["supervised", "exact"] and summary.edit_accuracy.between(0, 1).all()
    assert set(summary.attribute) == {"B"}
    with pytest.raises(Exception, match="d_in"):
        evaluate_dictionaries(tiny_model, hook, task, {"bad": type("Bad", (SignedIdentity,), {"d_in": 8})()})


def test_an_exact_dictionary_with_a_full_budget_reaches_the_counterfactual(tiny_model):
    """At the last layer's residual, an edit that reaches the counterfactual prompt's activation makes
    the model's output the counterfactual's: edit accuracy 1, edit error 0."""
    hook = "blocks.1.hook_resid_post"
    d = tiny_model.cfg.d_model
    task = induction_task(torch.arange(100, 400), n_prompts=32, vocab=4096)
    cf = task.counterfactuals["B"]
    assert (cf.tokens[:, 2] == task.values["B"][cf.labels]).all() and (cf.labels != task.labels["B"]).all()
    exact = type(
        "Exact",
        (SignedIdentity,),
        {"d_in": d, "d_sae": 2 * d, "W_dec": property(lambda self: torch.cat([torch.eye(d), -torch.eye(d)]))},
    )()
    summary, _ = evaluate_dictionaries(tiny_model, hook, task, {"exact": exact}, budget=2 * d)
    row = summary.set_index("dictionary").loc["exact"]
    assert row.edit_accuracy == 1.0 and row.edit_error < 1e-5
    few, _ = evaluate_dictionaries(tiny_model, hook, task, {"exact": exact}, budget=1)
    assert few.set_index("dictionary").loc["exact"].edit_error > row.edit_error


def test_a_task_must_have_aligned_prompts(tiny_model):
    from interp.features.principled_eval import Counterfactual, Task
    from interp.store.errors import InputError

    task = induction_task(torch.arange(100, 400), n_prompts=4, vocab=4096)
    with pytest.raises(InputError, match=r"shape \(4, 11\) but the task's prompts have \(4, 10\)"):
        Task(
            task.tokens,
            task.labels,
            task.values,
            task.correct,
            task.wrong,
            counterfactuals={"B": Counterfactual(torch.zeros(4, 11, dtype=torch.long), task.labels["B"])},
        )
    with pytest.raises(InputError, match="unknown attribute 'C'"):
        Task(
            task.tokens,
            task.labels,
            task.values,
            task.correct,
            task.wrong,
            counterfactuals={"C": Counterfactual(task.tokens, task.labels["B"])},
        )


def test_aligned_tokens_names_the_lengths_that_differ(tiny_model):
    from interp.features.principled_eval import aligned_tokens
    from interp.store.errors import InputError

    same = aligned_tokens(tiny_model, ["the cat", "the cat"])
    assert same.shape[0] == 2 and torch.equal(same[0], same[1])
    short, long = "the cat", "the cat sat on the mat"
    n_short, n_long = (len(tiny_model.to_tokens(t)[0]) for t in (short, long))
    with pytest.raises(InputError, match=rf"different lengths \[{n_short}, {n_long}\]"):
        aligned_tokens(tiny_model, [short, long])


def test_ioi_task_on_the_demo_model_supervised_dictionary_is_sufficient_and_edits_io(demo_model):
    """On the demo's IOI task at END of layer 1, the supervised dictionary (IO, S, position) explains most
    of the variance, keeps the logit difference when patched in, and editing IO moves the answer."""
    from interp.circuits.prompts import ioi_task

    task = ioi_task(demo_model, 128, seed=4)
    summary, _ = evaluate_dictionaries(demo_model, "blocks.1.hook_resid_post", task, {})
    supervised = summary[summary.dictionary == "supervised"].set_index("attribute")
    assert supervised.explained_variance.iloc[0] > 0.7 and supervised.sufficiency.iloc[0] > 0.8
    assert supervised.loc["IO", "edit_logit_diff"] > 0.9
