"""Attention basics on the planted toy (exact answers) and the demo model's known induction circuit."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from circuit_toys import induction_toy, one_thread, planted_induction_model, planted_prompts  # noqa: E402, F401

from interp.circuits.attention import (
    CircuitInputError,
    attention_patterns,
    composition_baseline,
    composition_frame,
    composition_scores,
    coupling_coefficient,
    direct_logit_attribution,
    head_scores_frame,
    head_scores_on_repeated_tokens,
    logit_lens,
    observable_head_feature,
)
from interp.models.loading import DEMO_WEIGHTS


def test_planted_heads_score_as_planted(planted):
    model, tokens, _ = planted
    patterns = attention_patterns(model, tokens)
    assert patterns.shape == (2, 16, 2, 11, 11)
    from interp.circuits.attention import induction_score, previous_token_score

    assert previous_token_score(patterns[0])[0] > 0.99
    assert induction_score(patterns[1][:, :, :, :], 5)[0] > 0.99
    frame = head_scores_frame({"previous_token": torch.tensor([[0.9, 0.1], [0.2, 0.3]])})
    assert frame.query("layer == 0 and head == 0").previous_token.item() == pytest.approx(0.9)


def test_dla_of_the_only_writer_equals_the_logit(planted):
    model, tokens, mask = planted
    dla = direct_logit_attribution(model, tokens)
    logits = model(tokens)
    targets = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)
    target_logits = logits.gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(dla[1, 0], target_logits, atol=1e-4, rtol=1e-4)
    assert dla[0].abs().max() < 1e-5 and dla[1, 1].abs().max() < 1e-5


def test_logit_lens_is_uniform_before_the_induction_head(planted):
    model, tokens, mask = planted
    lens = logit_lens(model, tokens)
    assert lens.shape == (3, 16, 11)
    torch.testing.assert_close(lens[:2], torch.full_like(lens[:2], -math.log(8)))
    assert lens[2][:, 6:10].mean() > -0.1


def test_composition_baseline_and_frame(planted):
    model, _, _ = planted
    baseline = composition_baseline(64, 8)
    assert 0.05 < baseline < 0.3
    frame = composition_frame(composition_scores(model))
    assert len(frame) == 4 and set(frame.columns) == {"layer_a", "head_a", "layer_b", "head_b", "q", "k", "v"}
    assert frame.sort_values("k").iloc[-1][["head_a", "head_b"]].tolist() == [0, 0]


def test_observable_feature_is_the_planted_copy_direction(planted):
    model, _, _ = planted
    n = torch.zeros(8)
    n[3] = 1.0
    y = observable_head_feature(model, n, 1, 0)
    expected = torch.zeros(40)
    expected[3] = 10.0  # L1H0 copies token 3 (subspace T) to its logit with gain 10
    torch.testing.assert_close(y, expected)
    assert observable_head_feature(model, n, 1, 1).abs().max() == 0  # writes only into J, which W_U ignores
    assert coupling_coefficient(y, y) == pytest.approx(1.0)
    assert coupling_coefficient(y, -2 * y) == pytest.approx(-2.0)
    with pytest.raises(CircuitInputError, match="observable"):
        observable_head_feature(model, torch.zeros(5), 1, 0)


def test_three_edge_methods_agree_on_the_planted_circuit(planted, tmp_path):
    """Composition, SVD tracing and path patching all rank the planted L0H0 -> L1H0 edge first."""
    from interp.circuits.patching import next_token_metric
    from interp.pipeline import analyze_circuits

    model, tokens, mask = planted
    corrupt = tokens.clone()
    corrupt[:, 1:6] = (tokens[:, 1:6] % 7) + 1  # a different token at every first-copy position
    summary = analyze_circuits(model, tokens, corrupt, next_token_metric(tokens, slice(6, 10)), mask, tmp_path)
    assert set(summary["rank_agreement"]["top_edge"].values()) == {"L0H0->L1H0"}
    assert summary["heads"] == {"previous_token": [0, 0], "induction": [1, 0]}
    assert summary["signal_dimensionality"]["L1H0"] == 1.0
    graph = json.loads((tmp_path / "svd_trace.json").read_text())
    assert {(e["source"], e["target"], e["side"]) for e in graph["edges"]} == {
        ("L0H0", "L1H0", "key")
    }  # one per source position
    assert summary["svd_trace"]["nodes"] == ["L0H0", "L1H0"]


def test_three_edge_methods_agree_on_a_trained_induction_circuit(tmp_path):
    """A trained (not hand-set) induction model: composition, SVD tracing and path patching single out
    the same previous-token head -> induction head edge on the key side."""
    from interp.circuits.prompts import induction_prompts
    from interp.pipeline import analyze_circuits

    model = induction_toy()
    prompts = induction_prompts(model, 12, 16)
    metric = prompts.metric()
    assert float(metric(model(prompts.clean))) > float(metric(model(prompts.corrupt))) + 2  # it does induction
    summary = analyze_circuits(model, prompts.clean, prompts.corrupt, metric, prompts.second_copy, tmp_path)
    tops = set(summary["rank_agreement"]["top_edge"].values())
    assert len(tops) == 1, summary["rank_agreement"]
    sender = tops.pop().split("->")[0]
    assert sender == "L{}H{}".format(*summary["heads"]["previous_token"])
    assert min(summary["rank_agreement"]["spearman"].values()) > 0.3, summary["rank_agreement"]


def test_prompt_longer_than_context_is_refused(planted):
    model, _, _ = planted
    with pytest.raises(CircuitInputError, match="longer than the model's context of 12"):
        attention_patterns(model, torch.zeros(2, 13, dtype=torch.long))


def _demo_not_ready() -> str:
    """Why the bundled demo model cannot serve as the known answer ('' when it can)."""
    if not (DEMO_WEIGHTS / "model.safetensors").exists():
        return "demo weights not built (python -m interp.models.demo.train_demo_model)"
    scores = json.loads((DEMO_WEIGHTS / "circuit.json").read_text()).get("induction_scores_layer1", [1.0])
    if max(scores) < 0.2:
        return f"the bundled demo model has not formed an induction head (induction scores {scores}); retrain it"
    return ""


demo_weights = pytest.mark.skipif(bool(_demo_not_ready()), reason=_demo_not_ready() or "ready")


@demo_weights
@pytest.mark.slow
def test_demo_circuit_found_by_scores_composition_svd_and_path_patching(tmp_path):
    """The three edge methods single out previous-token head -> induction head (K-composition)."""
    from interp.circuits.prompts import induction_prompts
    from interp.models.loading import demo_circuit, load_model
    from interp.pipeline import analyze_circuits

    model = load_model("demo", device="cpu")
    circuit = demo_circuit()
    scores = head_scores_on_repeated_tokens(model, 8, 20)
    prev, ind = tuple(circuit["previous_token_head"]), tuple(circuit["induction_head"])
    assert int(scores["previous_token"][prev[0]].argmax()) == prev[1]
    assert scores["induction"][ind[0], ind[1]] > scores["induction"][ind[0]].max() - 0.05  # induction is spread
    prompts = induction_prompts(model, 8, 20)
    summary = analyze_circuits(model, prompts.clean, prompts.corrupt, prompts.metric(), prompts.second_copy, tmp_path)
    # The demo model has one previous-token head and induction spread over all layer-1 heads:
    # every method must pick an edge from that previous-token head into an induction head.
    induction_heads = {f"L{ind[0]}H{h}" for h in range(model.cfg.n_heads) if scores["induction"][ind[0], h] > 0.3}
    for method, top_edge in summary["rank_agreement"]["top_edge"].items():
        source, target = top_edge.split("->")
        assert source == f"L{prev[0]}H{prev[1]}" and target in induction_heads, (method, top_edge)
    # beyond the top edge the methods agree loosely on the weak edges (measured 0.37-0.90 on these weights)
    assert min(summary["rank_agreement"]["spearman"].values()) > 0.25
    print(
        json.dumps(
            {"rank_agreement": summary["rank_agreement"], "attribution_vs_exact": summary["attribution_vs_exact"]}
        )
    )
    for name in ("head_scores", "composition", "svd_edges", "patch_residual", "path_patch"):
        assert (tmp_path / f"{name}.parquet").exists()


@demo_weights
@pytest.mark.slow
def test_cli_writes_circuit_results(tmp_path):
    from typer.testing import CliRunner

    from app.cli import app

    result = CliRunner().invoke(
        app, ["analyze", "circuits", "induction", "--out", str(tmp_path), "--n-prompts", "4", "--half-length", "12"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "summary.json").read_text())["prompt_set"] == "induction"
    bad = CliRunner().invoke(app, ["analyze", "circuits", "induction", "--out", str(tmp_path), "--half-length", "100"])
    assert bad.exit_code == 2 and "exceed the context" in bad.output


def test_a_typed_prompt_that_is_empty_or_too_long_is_a_clear_error(tiny_model):
    from interp.circuits.attention import prompt_tokens, top_next_tokens

    with pytest.raises(CircuitInputError, match="empty"):
        prompt_tokens(tiny_model, "  \n")
    with pytest.raises(CircuitInputError, match="longer than the model's context of 32"):
        prompt_tokens(tiny_model, "word " * 100)
    tokens = prompt_tokens(tiny_model, "a short prompt")
    patterns, top = top_next_tokens(tiny_model, tokens, k=3)
    assert patterns.shape[:3] == (2, 1, 2) and len(top) == 3
    assert sorted((p for _, p in top), reverse=True) == [p for _, p in top] and 0 < sum(p for _, p in top) <= 1


def test_a_rerun_killed_midway_leaves_the_prompt_set_absent_and_keeps_other_files(planted, tmp_path, monkeypatch):
    """Whole or absent: a rerun removes the earlier run's files and summary before writing; killed after its first
    tables, the set is not listed (no old summary over new tables); files the analysis did not make are kept."""
    from interp.circuits import patching
    from interp.pipeline import analyze_circuits
    from interp.store.analysis_folder import circuit_sets

    model, tokens, mask = planted
    corrupt = tokens.clone()
    corrupt[:, 1:6] = (tokens[:, 1:6] % 7) + 1
    metric = patching.next_token_metric(tokens, slice(6, 10))
    out = tmp_path / "circuits" / "planted"
    analyze_circuits(model, tokens, corrupt, metric, mask, out)
    files = json.loads((out / "summary.json").read_text())["files"]
    assert {"head_scores.parquet", "svd_trace.json", "patch_heads.parquet"} <= set(files), files
    assert circuit_sets(tmp_path) == ["planted"]
    (out / "notes.json").write_text("{}")  # the user's own file in the same folder

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill after the head tables and the SVD trace were rewritten

    monkeypatch.setattr(patching, "patch_residual", killed)
    with pytest.raises(KeyboardInterrupt):
        analyze_circuits(model, tokens, corrupt, metric, mask, out)
    assert circuit_sets(tmp_path) == []
    assert (out / "head_scores.parquet").exists() and not (out / "patch_heads.parquet").exists()
    monkeypatch.undo()
    analyze_circuits(model, tokens, corrupt, metric, mask, out)
    assert circuit_sets(tmp_path) == ["planted"]
    rerun = json.loads((out / "summary.json").read_text())["files"]
    assert rerun == files and (out / "notes.json").exists()
