"""``analyze_explain`` on the test workspace: every feature gets a row, the table round-trips, a killed run
resumes without explaining or scoring its finished chunks again."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from interp.explain.examples import TEST_SETS, TRAIN_SETS
from interp.explain.explanations import Explainer
from interp.explain.rules import Rule
from interp.pipeline.explain import analyze_explain, summary
from interp.store.analysis_folder import EXPLAIN_EXAMPLES, EXPLANATIONS, AnalysisFolder

CHUNK = 16


@pytest.fixture()
def copy(workspace, tmp_path):
    shutil.copytree(workspace / "analyses", tmp_path / "analyses")
    return tmp_path


@pytest.fixture(scope="module")
def explained(workspace, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("explained")
    shutil.copytree(workspace / "analyses", root / "analyses")
    folders = analyze_explain(workspace / "runs" / "demo-mfr", root / "analyses", model_spec=tiny_model,
                              chunk_features=CHUNK)
    return root, folders


def test_every_feature_of_every_member_gets_an_explanation(explained):
    _, folders = explained
    assert len(folders) == 2
    for folder in folders:
        table = folder.read_table(EXPLANATIONS)
        d_sae = len(folder.read_table("features"))
        assert table.feature.tolist() == list(range(d_sae))
        assert set(table.status) <= {"explained", "dead", "too rare"} and (table.status == "explained").any()
        scored = table[table.status == "explained"]
        for column in ("detection", "fuzzing", "simulation", "baseline_detection"):
            assert scored[column].notna().all(), column
        assert ((scored.detection >= 0) & (scored.detection <= 1)).all()
        for text in scored.rule:
            Rule.from_json(text)  # every stored rule parses back
        assert not folder.explanation_parts()  # parts folded into the table
        assert "explained" in summary(folder)


def test_stored_examples_keep_training_and_held_out_sequences_apart(explained):
    _, folders = explained
    frame = folders[0].read_table(EXPLAIN_EXAMPLES)
    for _, group in frame.groupby("feature"):
        train = set(group[group.set.isin(TRAIN_SETS)].sequence)
        test = set(group[group.set.isin(TEST_SETS)].sequence)
        assert not train & test


def test_a_killed_run_resumes_without_redoing_finished_chunks(explained, copy, workspace, tiny_model, monkeypatch):
    _, folders = explained
    reference = folders[0].read_table(EXPLANATIONS)
    original = Explainer.rows
    calls = []

    def dies_on_the_third_chunk(self, features):
        features = list(features)
        calls.append(features[0])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return original(self, features)

    member = workspace / "runs" / "demo-mfr" / "sae_0"
    monkeypatch.setattr(Explainer, "rows", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        analyze_explain(member, copy / "analyses", model_spec=tiny_model, chunk_features=CHUNK)
    folder = AnalysisFolder.of_sae(copy / "analyses", member)
    assert sorted(folder.explanation_parts()) == [0, 1] and not folder.has(EXPLANATIONS)
    calls.clear()
    monkeypatch.setattr(Explainer, "rows", lambda self, features: (calls.append(next(iter(features))),
                                                                   original(self, features))[1])
    analyze_explain(member, copy / "analyses", model_spec=tiny_model, chunk_features=CHUNK)
    assert calls == list(range(2 * CHUNK, len(reference), CHUNK))  # only the unfinished chunks
    pd.testing.assert_frame_equal(folder.read_table(EXPLANATIONS), reference)
    calls.clear()
    analyze_explain(member, copy / "analyses", model_spec=tiny_model, chunk_features=CHUNK)
    assert calls == []  # finished with the same settings: nothing to do


def test_changed_settings_start_over(explained, copy, workspace, tiny_model):
    member = workspace / "runs" / "demo-mfr" / "sae_0"
    from interp.explain.examples import ExampleConfig

    (folder,) = analyze_explain(member, copy / "analyses", model_spec=tiny_model, chunk_features=CHUNK,
                                config=ExampleConfig(n_test=8))
    record = json.loads(folder.json_path("explain_run").read_text())
    assert record["examples"]["n_test"] == 8
    counts = folder.read_table(EXPLANATIONS).n_test_positive
    assert counts.max() <= 8 and np.all(counts >= 0)


def test_without_dashboards_the_error_says_what_to_run(workspace, tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="workbench analyze features"):
        analyze_explain(workspace / "runs" / "demo-mfr" / "sae_0", tmp_path / "analyses", model_spec=tiny_model)


def test_the_cli_with_an_unreachable_llm_keeps_the_offline_explanations(copy, workspace, tiny_model, monkeypatch):
    import socket

    from typer.testing import CliRunner

    import interp.pipeline.explain as pipeline
    from app.cli import app

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    real = pipeline.analyze_explain
    monkeypatch.setattr(pipeline, "analyze_explain", lambda *a, **k: real(*a, **{**k, "model_spec": tiny_model}))
    member = workspace / "runs" / "demo-mfr" / "sae_0"
    result = CliRunner().invoke(app, ["analyze", "explain", str(member), "--out", str(copy / "analyses"),
                                      "--llm-url", f"http://127.0.0.1:{port}/v1", "--llm-timeout", "2"])
    assert result.exit_code == 0, result.output
    assert f"warning: LLM endpoint http://127.0.0.1:{port}/v1 did not answer" in result.output
    table = AnalysisFolder.of_sae(copy / "analyses", member).read_table(EXPLANATIONS)
    explained = table[table.status == "explained"]
    assert (explained.llm_status == "unreachable").all() and explained.detection.notna().all()
    bad = CliRunner().invoke(app, ["analyze", "explain", str(member), "--out", str(copy / "analyses"),
                                   "--llm-url", "localhost:8080"])
    assert bad.exit_code == 2 and "is not an http(s) URL" in bad.output


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_its_finished_chunks(copy, workspace, tiny_model, monkeypatch):
    """A real ``kill -9`` of ``workbench analyze explain`` (one feature per chunk), then a resume in process."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    member = workspace / "runs" / "demo-mfr" / "sae_0"
    folder = AnalysisFolder.of_sae(copy / "analyses", member)
    script = ("import sys; from tests.conftest import make_tiny_model; import interp.pipeline.explain as p; "
              "from pathlib import Path; p.analyze_explain(Path(sys.argv[1]), Path(sys.argv[2]), "
              "model_spec=make_tiny_model(), chunk_features=1)")
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen([sys.executable, "-c", script, str(member), str(copy / "analyses")], cwd=root,
                               env={**os.environ, "PYTHONPATH": str(root)})
    deadline = time.time() + 300
    while len(folder.explanation_parts()) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(folder.explanation_parts())
    assert len(finished) >= 3 and not folder.has(EXPLANATIONS), "the run ended before it could be killed"
    for path in folder.explanation_parts().values():
        pd.read_parquet(path)  # every part a reader sees is whole
    calls = []
    original = Explainer.rows
    monkeypatch.setattr(Explainer, "rows", lambda self, features: (calls.append(next(iter(features))),
                                                                   original(self, features))[1])
    analyze_explain(member, copy / "analyses", model_spec=tiny_model, chunk_features=1)
    table = folder.read_table(EXPLANATIONS)
    assert not set(calls) & set(finished) and sorted(calls + finished) == table.feature.tolist()
