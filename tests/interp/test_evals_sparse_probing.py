"""Sparse probing: a planted latent equal to the label, the same dictionary without it, pooling, task files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from interp.evals.sparse_probing import (
    pooled_features,
    probe_task,
    sparse_probing_parts,
    task_indices,
    task_llm_probes,
)
from interp.evals.tasks import BinaryTask, file_tasks, read_task_file, verse_or_prose
from interp.store.errors import InputError
from tests.interp.evals_toys import LinearDictionary, exact_dictionary

PROJECTION = 0.3 * torch.randn(16, 31, generator=torch.Generator().manual_seed(99))


def planted(n: int, seed: int):
    """Activations carrying the label weakly along e0, and latents: [the label itself, 31 ReLUs of fixed random
    projections of the activations]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 16, generator=g)
    x[:, 0] += 0.8 * (2 * y - 1)
    others = torch.relu(x @ PROJECTION)
    return x, torch.cat([y[:, None].float(), others], 1), y


def test_a_latent_equal_to_the_label_gives_a_perfect_one_sparse_probe_and_without_it_no_better_than_baseline():
    (x_tr, z_tr, y_tr), (x_te, z_te, y_te) = planted(400, 0), planted(200, 1)
    with_it = probe_task((x_tr, x_te), (z_tr, z_te), y_tr, y_te)
    assert with_it["sae_top_1_test_accuracy"] == 1.0
    baseline = with_it["llm_test_accuracy"]
    assert 0.6 < baseline < 0.9  # the activations carry the label, imperfectly
    without = probe_task((x_tr, x_te), (z_tr[:, 1:], z_te[:, 1:]), y_tr, y_te)
    for k in (1, 2, 5, 10, 20):
        assert without[f"sae_top_{k}_test_accuracy"] <= baseline + 0.02


def test_outputs_average_tasks_within_datasets_then_datasets():
    (x_tr, z_tr, y_tr), (x_te, z_te, y_te) = planted(200, 0), planted(100, 1)
    texts = [f"t{i}" for i in range(300)]
    task = BinaryTask("a", "set1", texts[:200], y_tr.tolist(), texts[200:], y_te.tolist())
    other = BinaryTask("b", "set2", texts[:200], y_tr.tolist(), texts[200:], y_te.tolist())
    pool, rows = task_indices([task, other])
    assert pool == texts and rows[0] == rows[1] == (list(range(200)), list(range(200, 300)))
    llm, sae = torch.cat([x_tr, x_te]), torch.cat([z_tr, z_te])
    metrics, details, per_task = sparse_probing_parts([task, other], rows, llm, sae)
    assert [d["dataset_name"] for d in details] == ["set1", "set2"]
    assert metrics["sae"]["sae_top_1_test_accuracy"] == 1.0 == per_task["a"]["sae_top_1_test_accuracy"]
    assert set(metrics["llm"]) >= {"llm_test_accuracy", "llm_top_1_test_accuracy", "llm_top_20_test_accuracy"}


def test_activation_probes_made_once_serve_every_dictionary():
    """``task_llm_probes`` shared across SAEs gives the same outputs as each SAE's own activation probes."""
    (x_tr, z_tr, y_tr), (x_te, z_te, y_te) = planted(200, 0), planted(100, 1)
    texts = [f"t{i}" for i in range(300)]
    task = BinaryTask("a", "set1", texts[:200], y_tr.tolist(), texts[200:], y_te.tolist())
    _, rows = task_indices([task])
    llm = torch.cat([x_tr, x_te])
    shared = task_llm_probes([task], rows, llm)
    for sae in (torch.cat([z_tr, z_te]), torch.cat([z_tr, z_te])[:, 1:]):
        assert sparse_probing_parts([task], rows, llm, sae, llm_results=shared) == sparse_probing_parts(
            [task], rows, llm, sae)
    with_it = sparse_probing_parts([task], rows, llm, torch.cat([z_tr, z_te]), llm_results=shared)
    assert with_it[0]["sae"]["sae_top_1_test_accuracy"] == 1.0

def test_pooling_averages_each_texts_tokens_without_bos(tiny_model):
    hook = "blocks.0.hook_resid_post"
    texts = ["To be, or not to be", "that is the question whether tis nobler"]
    pooled = pooled_features(tiny_model, hook, texts, {"exact": exact_dictionary(tiny_model.cfg.d_model)}, batch_size=2)
    tokens = tiny_model.to_tokens(texts[1])  # BOS + text
    _, cache = tiny_model.run_with_cache(tokens, names_filter=hook)
    expected = cache[hook][0, 1:].mean(0)
    assert torch.allclose(pooled["llm"][1], expected, atol=1e-5)
    d = tiny_model.cfg.d_model
    manual = torch.relu(torch.cat([cache[hook][0, 1:], -cache[hook][0, 1:]], -1)).mean(0)
    assert torch.allclose(pooled["exact"][1], manual, atol=1e-5) and pooled["exact"].shape == (2, 2 * d)


def write(tmp_path, rows, name="task.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_task_files_one_class_missing_labels_or_too_few_are_refused(tmp_path):
    with pytest.raises(InputError, match="one class only"):
        read_task_file(write(tmp_path, [{"text": f"x{i}", "label": "a"} for i in range(50)]))
    rows = [{"text": f"x{i}", "label": "ab"[i % 2]} for i in range(60)]
    rows[7]["label"] = None
    with pytest.raises(InputError, match="1 rows have no label .*row 8"):
        read_task_file(write(tmp_path, rows))
    few = [{"text": f"x{i}", "label": "a"} for i in range(30)] + [{"text": f"y{i}", "label": "b"} for i in range(7)]
    with pytest.raises(InputError, match="class 'b' has 7 examples; give at least 20"):
        read_task_file(write(tmp_path, few))
    with pytest.raises(InputError, match="no 'label'"):
        read_task_file(write(tmp_path, [{"text": "x"}]))


def test_a_parquet_task_file_becomes_balanced_disjoint_tasks(tmp_path):
    path = tmp_path / "sentiment.parquet"
    pd.DataFrame({"text": [f"good {i}" for i in range(40)] + [f"bad {i}" for i in range(60)],
                  "label": ["pos"] * 40 + ["neg"] * 60}).to_parquet(path)
    (task,) = file_tasks(path, n_train=25, n_test=10)
    assert task.dataset == "user/sentiment" and task.name == "sentiment:pos"
    assert sum(task.train_labels) * 2 == len(task.train_labels) and sum(task.test_labels) * 2 == len(task.test_labels)
    assert not set(task.train_texts) & set(task.test_texts)
    assert all(t.startswith("good") == bool(y) for t, y in zip(task.train_texts, task.train_labels))
    three = file_tasks(write(tmp_path, [{"text": f"{c}{i}", "label": c} for c in "xyz" for i in range(25)]))
    assert [t.name for t in three] == ["task:x", "task:y", "task:z"]


def test_verse_and_prose_by_layout():
    verse = ["To be, or not to be,--that is the question:--", "Whether 'tis nobler in the mind to suffer",
             "The slings and arrows of outrageous fortune"]
    prose = ["You are afraid, and therein the wiser. If you buy ladies' flesh",
             "at a million a dram, you cannot preserve it from tainting. But I",
             "see you have some religion in you, that you fear."]
    assert verse_or_prose(verse) == "verse" and verse_or_prose(prose) == "prose"
    assert verse_or_prose(verse[:2]) is None


def test_a_linear_toy_dictionary_is_a_dictionary():
    d = LinearDictionary(torch.eye(2), torch.eye(2))
    assert d.encode(torch.tensor([[1.0, -1.0]])).tolist() == [[1.0, 0.0]]
