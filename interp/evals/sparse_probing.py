"""Sparse probing as SAEBench's ``evals/sparse_probing`` does it (after Gurnee et al. 2023): each text's
activations are mean-pooled over its tokens (BOS and padding excluded); a k-sparse probe keeps the k latents
with the largest class-mean difference on the training split and fits a logistic regression on them; the
baseline is a logistic probe on the full (pooled) activations, and the same top-k selection on activation
channels. Accuracies are on the held-out split.

Where we differ: SAEBench trains its full-width probes with its own torch loop on a GPU; we use
scikit-learn's ``LogisticRegression`` (on standardised inputs for the full-width probes, so lbfgs converges)
everywhere, and skip the probe on all latents above ``FULL_SAE_PROBE_MAX`` latents.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from jaxtyping import Float, Int
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from interp.cache.writer import stop_layer_for
from interp.evals.tasks import BinaryTask
from interp.features.dictionary import Dictionary
from interp.models.data import bos_token_id

K_VALUES = (1, 2, 5, 10, 20)
FULL_SAE_PROBE_MAX = 8192


@torch.no_grad()
def pooled_features(model, hook: str, texts: list[str], dictionaries: dict[str, Dictionary], context: int = 128,
                    batch_size: int = 32) -> dict[str, Float[Tensor, "n d"]]:
    """Per text, the mean over its tokens (BOS and padding excluded) of the activations at ``hook`` (key
    ``llm``) and of each dictionary's latents (its key). One model pass serves every dictionary; memory is
    one batch of tokens plus ``n x d`` pooled rows."""
    bos = bos_token_id(model.tokenizer)
    ids = [[bos, *model.tokenizer.encode(t, add_special_tokens=False)][:context] for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pooled: dict[str, Tensor] = {}
    stop = stop_layer_for((hook,))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(ids[i]) for i in rows)
        tokens = torch.full((len(rows), width), bos, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, i in enumerate(rows):
            tokens[r, :len(ids[i])] = torch.tensor(ids[i])
            mask[r, 1:len(ids[i])] = True
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=hook, stop_at_layer=stop)
        acts = cache[hook].reshape(len(rows), width, -1).float().cpu()  # attention hooks: heads flattened
        count = mask.sum(1, keepdim=True).clamp_min(1)
        flat = acts[mask]
        index = torch.arange(len(rows)).repeat_interleave(mask.sum(1))
        for name, dictionary in {"llm": None, **dictionaries}.items():
            codes = flat if dictionary is None else dictionary.encode(flat.to(dictionary.W_dec.device)).float().cpu()
            if name not in pooled:  # allocated once (not per batch: [n_texts, d_sae] is large at 24k latents)
                pooled[name] = torch.zeros(len(ids), codes.shape[-1])
            pooled[name][rows] = torch.zeros(len(rows), codes.shape[-1]).index_add_(0, index, codes) / count
    return pooled


def top_k_mean_diff(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], k: int) -> Int[Tensor, " k"]:
    """The k columns with the largest ``|mean(x | y=1) - mean(x | y=0)|`` (SAEBench's ``get_top_k_mean_diff_mask``)."""
    diff = (x[y == 1].mean(0) - x[y == 0].mean(0)).abs()
    return torch.argsort(diff, descending=True, stable=True)[:k]


def probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   standardise: bool = False) -> float:
    """Test accuracy of an L2 logistic regression (C=1, max_iter 1000: SAEBench's ``train_sklearn_probe``)."""
    probe = LogisticRegression(max_iter=1000)
    if standardise:
        probe = make_pipeline(StandardScaler(), probe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(x_train, y_train)
    return float((probe.predict(x_test) == y_test).mean())


def top_k_accuracies(train: Tensor, test: Tensor, y_train: Int[Tensor, " n"], y_test: Int[Tensor, " m"],
                     prefix: str, ks: tuple[int, ...] = K_VALUES) -> dict[str, float | None]:
    """``<prefix>_top_<k>_test_accuracy`` for each k: a probe on the k columns of largest class-mean difference
    (None where k exceeds the width)."""
    yt, ye = y_train.numpy(), y_test.numpy()
    out: dict[str, float | None] = {}
    for k in ks:
        if k > train.shape[1]:
            out[f"{prefix}_top_{k}_test_accuracy"] = None
            continue
        cols = top_k_mean_diff(train, y_train, k)
        out[f"{prefix}_top_{k}_test_accuracy"] = probe_accuracy(train[:, cols].numpy(), yt, test[:, cols].numpy(), ye)
    return out


def llm_probes(llm: tuple[Tensor, Tensor], y_train: Int[Tensor, " n"], y_test: Int[Tensor, " m"],
               ks: tuple[int, ...] = K_VALUES) -> dict[str, float | None]:
    """The activation-side results of one task (the same for every SAE of a hook: computed once per group)."""
    full = probe_accuracy(llm[0].numpy(), y_train.numpy(), llm[1].numpy(), y_test.numpy(), True)
    return {"llm_test_accuracy": full, **top_k_accuracies(*llm, y_train, y_test, "llm", ks)}


def probe_task(llm: tuple[Tensor, Tensor], sae: tuple[Tensor, Tensor], y_train: Int[Tensor, " n"],
               y_test: Int[Tensor, " m"], ks: tuple[int, ...] = K_VALUES,
               llm_results: dict[str, float | None] | None = None) -> dict[str, float | None]:
    """SAEBench's per-class results for one binary task: the full probes and the top-k probes on the pooled
    activations (``llm``: train, test) and latents (``sae``: train, test); ``llm_results``: the activation
    side already computed (``llm_probes``)."""
    mine = llm_results if llm_results is not None else llm_probes(llm, y_train, y_test, ks)
    full = probe_accuracy(sae[0].numpy(), y_train.numpy(), sae[1].numpy(), y_test.numpy(), True) \
        if sae[0].shape[1] <= FULL_SAE_PROBE_MAX else None
    return {"llm_test_accuracy": mine["llm_test_accuracy"], "sae_test_accuracy": full,
            **{k: v for k, v in mine.items() if k != "llm_test_accuracy"},
            **top_k_accuracies(*sae, y_train, y_test, "sae", ks)}


def task_indices(tasks: list[BinaryTask]) -> tuple[list[str], list[tuple[list[int], list[int]]]]:
    """The distinct texts of all tasks (so each is run through the model once) and each task's train / test
    rows into them."""
    index: dict[str, int] = {}
    rows = []
    for task in tasks:
        rows.append(([index.setdefault(t, len(index)) for t in task.train_texts],
                     [index.setdefault(t, len(index)) for t in task.test_texts]))
    return list(index), rows


def mean_results(results: list[dict]) -> dict[str, float | None]:
    """Key-wise mean over results, skipping None (a None everywhere stays None)."""
    keys = dict.fromkeys(k for r in results for k in r)
    out = {}
    for key in keys:
        values = [r[key] for r in results if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def task_llm_probes(tasks: list[BinaryTask], rows: list[tuple[list[int], list[int]]], llm: Tensor,
                    ks: tuple[int, ...] = K_VALUES) -> list[dict[str, float | None]]:
    """``llm_probes`` of every task: what all SAEs of one hook share."""
    return [llm_probes((llm[train], llm[test]), torch.tensor(task.train_labels), torch.tensor(task.test_labels), ks)
            for task, (train, test) in zip(tasks, rows)]


def sparse_probing_parts(tasks: list[BinaryTask], rows: list[tuple[list[int], list[int]]], llm: Tensor, sae: Tensor,
                         ks: tuple[int, ...] = K_VALUES, llm_results: list[dict] | None = None
                         ) -> tuple[dict[str, dict], list[dict], dict]:
    """SAEBench's output parts: metrics ``llm`` / ``sae`` (mean over datasets of the mean over their tasks),
    one detail per dataset, and every task's own results (unstructured). ``llm_results``: ``task_llm_probes``
    already computed for this hook (else computed here)."""
    llm_results = llm_results if llm_results is not None else task_llm_probes(tasks, rows, llm, ks)
    per_task, by_dataset = {}, {}
    for task, (train, test), mine in zip(tasks, rows, llm_results):
        result = probe_task((llm[train], llm[test]), (sae[train], sae[test]), torch.tensor(task.train_labels),
                            torch.tensor(task.test_labels), ks, mine)
        per_task[task.name] = result | {"dataset": task.dataset, "n_train": len(train), "n_test": len(test)}
        by_dataset.setdefault(task.dataset, []).append(result)
    details = [{"dataset_name": name, **mean_results(results)} for name, results in by_dataset.items()]
    overall = mean_results([{k: v for k, v in d.items() if k != "dataset_name"} for d in details])
    metrics = {"llm": {k: v for k, v in overall.items() if k.startswith("llm_")},
               "sae": {k: v for k, v in overall.items() if k.startswith("sae_")}}
    return metrics, details, per_task
