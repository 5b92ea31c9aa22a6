"""Prompt sets: induction pairs, IOI generator on a tiny local GPT-2, real GPT-2 IOI when a checkpoint exists."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from circuit_toys import one_thread  # noqa: E402, F401

from interp.circuits.attention import CircuitInputError
from interp.circuits.decomposition import trace_circuit
from interp.circuits.patching import patch_heads, path_patch
from interp.circuits.prompts import (
    induction_prompts,
    ioi_logit_diff,
    ioi_names,
    ioi_prompts,
    prompt_table,
    single_token_names,
)


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp.models.loading import demo_tokenizer

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = demo_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=len(tokenizer), n_positions=64, n_ctx=64,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_gpt2_dir):
    from interp.models.loading import load_model

    return load_model(str(tiny_gpt2_dir), device="cpu")


def test_ioi_prompts_are_counterfactual_pairs(tiny_gpt2):
    prompts = ioi_prompts(tiny_gpt2, n_prompts=10, seed=1)
    assert prompts.clean.shape == prompts.corrupt.shape and prompts.clean.shape[0] == 10
    differs = (prompts.clean != prompts.corrupt).sum(1)
    assert (differs == 1).all()  # only the repeated subject is swapped for a third name
    for text, io, s, end, row in zip(prompts.texts, prompts.io, prompts.subject, prompts.end, prompts.clean):
        io_name, s_name = tiny_gpt2.tokenizer.decode([int(io)]), tiny_gpt2.tokenizer.decode([int(s)])
        assert text.count(s_name) == 2 and text.count(io_name) == 1
        assert row[end + 1:].eq(tiny_gpt2.tokenizer.pad_token_id).all()
    for text, io, s, abba in zip(prompts.texts, prompts.io, prompts.subject, prompts.abba):
        io_first = text.index(tiny_gpt2.tokenizer.decode([int(io)])) < text.index(tiny_gpt2.tokenizer.decode([int(s)]))
        assert io_first == bool(abba)  # ABBA: IO comes first
    assert int(prompts.abba.sum()) == 5  # half and half


def test_ioi_order_is_not_tied_to_the_template(tiny_model):
    """With two templates and alternating orders every template would always have one order (a model could
    answer from the template alone); random orders give each template both."""
    from interp.circuits.prompts import DEMO_IOI_NAMES

    templates = ("When{A} and{B} went out,{C} gave a ring to", "Then{A} and{B} sat down.{C} gave a book to")
    for order, both in (("random", True), ("alternate", False)):
        prompts = ioi_prompts(tiny_model, 64, 3, templates, DEMO_IOI_NAMES, order=order)
        first = prompts.abba[0::2]  # the prompts on the first template
        assert (0 < int(first.sum()) < len(first)) == both, order


def test_ioi_pipeline_runs_on_a_tiny_local_gpt2(tiny_gpt2):
    prompts = ioi_prompts(tiny_gpt2, n_prompts=6)
    metric = prompts.metric()
    heads = patch_heads(tiny_gpt2, prompts.clean, prompts.corrupt, metric)
    edges = path_patch(tiny_gpt2, prompts.clean, prompts.corrupt, metric, sides=("q",))
    assert heads.shape == (2, 4) and torch.isfinite(heads).all() and heads.abs().sum() > 0
    assert edges.shape == (1, 2, 4, 2, 4) and torch.isfinite(edges).all()
    end_mask = torch.zeros_like(prompts.clean, dtype=torch.bool)
    end_mask[torch.arange(6), prompts.end] = True
    graph = trace_circuit(tiny_gpt2, prompts.clean, (1, 0), end_mask, cutoff=1.0)
    assert all(edge["target"] == "L1H0" and edge["position"] <= int(prompts.end.max()) for edge in graph["edges"])


def test_ioi_command_writes_results(tiny_gpt2_dir, tiny_gpt2, tmp_path):
    import json

    from typer.testing import CliRunner

    from app.cli import app

    result = CliRunner().invoke(
        app, ["analyze", "circuits", "ioi", "--model", str(tiny_gpt2_dir), "--out", str(tmp_path), "--n-prompts", "4"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["prompt_set"] == "ioi" and summary["n_prompts"] == 4
    assert summary["svd_trace"]["start_firings"] <= 4  # only firings END -> IO start the trace
    assert len(__import__("pandas").read_parquet(tmp_path / "path_patch.parquet")) == 3 * 2 * 4 * 2 * 4
    stored = __import__("pandas").read_parquet(tmp_path / "prompts.parquet")  # the prompts the tables were made on
    assert summary["model"] == tiny_gpt2.cfg.model_name
    assert len(stored) == 4 and list(stored.prompt) == [0, 1, 2, 3]
    for clean, corrupt in zip(stored.clean, stored.corrupt):  # ABC: the repeated subject replaced by a third name
        assert corrupt != clean and corrupt.replace(f" {ioi_names(clean)[1]} ", " ", 1) != corrupt
    assert all(len(tokens) == summary["n_positions"] for tokens in stored.clean_tokens)


def test_induction_prompts_corrupt_only_the_first_copy(tiny_gpt2):
    prompts = induction_prompts(tiny_gpt2, n_prompts=4, half_length=10)
    assert torch.equal(prompts.clean[:, 11:], prompts.corrupt[:, 11:])
    assert (prompts.clean[:, 1:11] != prompts.corrupt[:, 1:11]).any(1).all()
    assert torch.equal(prompts.clean[:, 1:11], prompts.clean[:, 11:])
    with pytest.raises(CircuitInputError, match="exceed the context"):
        induction_prompts(tiny_gpt2, half_length=40)


def test_prompt_table_decodes_every_token_of_both_sides(tiny_model):
    prompts = induction_prompts(tiny_model, n_prompts=3, half_length=5)
    table = prompt_table(tiny_model.tokenizer, prompts.clean, prompts.corrupt)
    assert len(table) == 3 and all(len(row) == 11 for row in table.clean_tokens)
    for row, tokens, text in zip(prompts.clean.tolist(), table.clean_tokens, table.clean):
        assert list(tokens) == [tiny_model.tokenizer.decode([t]) for t in row] and text == "".join(tokens)
    assert [list(t[6:]) for t in table.corrupt_tokens] == [list(t[6:]) for t in table.clean_tokens]  # second copy


@pytest.mark.parametrize("text, io, s", [
    ("When Mary and John went to the store, John gave a drink to", "Mary", "John"),  # ABBA
    ("When John and Mary went to the store, John gave a drink to", "Mary", "John"),  # BABA
    ("Then Romeo and Juliet met. Romeo gave a ring to", "Juliet", "Romeo"),  # 'Then' opens a sentence: no name
    ("Romeo and Juliet met. Romeo gave a ring to", "Juliet", "Romeo"),  # a repeated opener is a name
])
def test_ioi_names_finds_the_repeated_subject_and_the_other_name(text, io, s):
    assert ioi_names(text) == (io, s)


@pytest.mark.parametrize("text", ["The cat sat on the mat", "When Mary went out, Mary gave a drink to",
                                  "When Mary and John met Anne, John gave a drink to",
                                  "When Mary and John went out, Anne gave a drink to"])
def test_a_prompt_that_is_not_ioi_shaped_is_named_so(text):
    with pytest.raises(CircuitInputError, match="not an IOI-shaped prompt"):
        ioi_names(text)


def test_ioi_logit_diff_of_a_typed_prompt_is_the_direct_difference(tiny_model):
    text = "When Romeo and Juliet went to the court, Romeo gave a ring to"
    found = ioi_logit_diff(tiny_model, text)
    logits = tiny_model(tiny_model.to_tokens(text))[0, -1]
    io, s = tiny_model.to_single_token(" Juliet"), tiny_model.to_single_token(" Romeo")
    assert (found["io"], found["s"]) == ("Juliet", "Romeo")
    assert found["logit_diff"] == pytest.approx(float(logits[io] - logits[s]), abs=1e-5)
    assert found["p_io"] == pytest.approx(float(logits.softmax(-1)[io]), rel=1e-4)
    with pytest.raises(CircuitInputError, match="'Mary' is 2 tokens"):
        ioi_logit_diff(tiny_model, "When Mary and Romeo went out, Romeo gave a drink to")


def test_ioi_names_must_be_single_tokens(tiny_gpt2):
    assert len(single_token_names(tiny_gpt2.tokenizer)) >= 3
    with pytest.raises(CircuitInputError, match="single tokens"):
        ioi_prompts(tiny_gpt2, names=("Xqzwv", "Jjkkq", "Mary"))


@pytest.mark.slow
def test_real_gpt2_ioi_trace_reaches_s_inhibition_heads():
    """GPT-2 small: tracing name mover 9.9's query at END ranks S-inhibition heads high (PAPERS.md 2.4)."""
    from huggingface_hub import try_to_load_from_cache

    from interp.models.loading import load_model

    if not isinstance(try_to_load_from_cache("gpt2", "config.json"), str):
        pytest.skip("no local GPT-2 small checkpoint in the Hugging Face cache")
    model = load_model("gpt2", device="cpu", fold_ln=True)
    prompts = ioi_prompts(model, n_prompts=8)
    mask = torch.zeros_like(prompts.clean, dtype=torch.bool)
    mask[torch.arange(8), prompts.end] = True
    graph = trace_circuit(model, prompts.clean, (9, 9), mask, top_k=8, threshold=0.0, max_depth=1)
    query_sources = {e["source"] for e in graph["edges"] if e["side"] == "query"}
    assert query_sources & {"L7H3", "L7H9", "L8H6", "L8H10"}


def test_ioi_task_labels_and_counterfactuals_change_one_attribute_each(tiny_model):
    """Each counterfactual changes only its attribute: another IO (one token), another S (both mentions),
    or the order of the first two names; the labels say which name sits where."""
    from interp.circuits.prompts import DEMO_IOI_HELD_OUT_NAMES, ioi_task

    task = ioi_task(tiny_model, n_prompts=12, seed=3)
    ids = task.values["IO"]
    for i in range(12):
        row = task.tokens[i]
        io, s = ids[task.labels["IO"][i]], ids[task.labels["S"][i]]
        assert (row == io).sum() == 1 and (row == s).sum() == 2 and task.correct[i] == io and task.wrong[i] == s
        first_name = row[(row == io) | (row == s)][0]
        assert (first_name == io) == (task.labels["position"][i] == 0)  # ABBA: IO first
        assert int((task.counterfactuals["IO"].tokens[i] != row).sum()) == 1
        assert int((task.counterfactuals["S"].tokens[i] != row).sum()) == 2
        swapped = task.counterfactuals["position"].tokens[i]
        assert int((swapped != row).sum()) == 2 and sorted(swapped.tolist()) == sorted(row.tolist())
    assert int(task.position[0]) == task.tokens.shape[1] - 1 and len(ids) == len(DEMO_IOI_HELD_OUT_NAMES)
    with pytest.raises(CircuitInputError, match="single tokens"):
        ioi_task(tiny_model, 4, names=("Romeo", "Juliet", "Xqzwvjj", "Kate"))


@pytest.mark.parametrize("n", [0, -3])
def test_a_prompt_count_below_one_is_a_clear_error(tiny_model, n):
    from interp.circuits.prompts import ioi_task

    for make in (
        lambda: ioi_prompts(tiny_model, n),
        lambda: induction_prompts(tiny_model, n, 4),
        lambda: ioi_task(tiny_model, n),
    ):
        with pytest.raises(CircuitInputError, match="at least 1"):
            make()
