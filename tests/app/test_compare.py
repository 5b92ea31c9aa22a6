"""Compare any two analysed SAEs: the page's compute button and ``workbench analyze compare`` against a copy
of the session workspace holding a second run (``other``: a copy of ``demo-mfr/sae_1``, no matches yet)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from interp.store.analysis_folder import AnalysisFolder

APP = Path(__file__).resolve().parents[2] / "app"
A, B = "demo-mfr/sae_0", "other/sae_0"


def run_page(name: str) -> AppTest:
    at = AppTest.from_file(str(APP / name), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def frame(at: AppTest, key: str) -> pd.DataFrame:
    """The table shown with widget key ``key`` (linked tables are selection widgets: their id ends in the key)."""
    return next(f.value for f in at.dataframe if f.proto.id.endswith(f"-{key}"))


def live(stored: pd.DataFrame) -> pd.DataFrame:
    return stored[stored.alive.astype(bool)]


def set_sae(root: Path, analysis: str, sae: str) -> None:
    meta_file = root / "analyses" / analysis / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "sae": sae}))


@pytest.fixture()
def two_runs(workspace, tmp_path, monkeypatch):
    """A copy of the session workspace with run ``other`` analysed but never matched; the app points at it."""
    root = shutil.copytree(workspace, tmp_path / "ws", symlinks=True)
    shutil.copytree(root / "runs/demo-mfr/sae_1", root / "runs/other/sae_0")
    shutil.copytree(root / "analyses/demo-mfr/sae_1", root / "analyses" / B)
    (root / "analyses" / B / "matches.parquet").unlink()
    for analysis in (A, "demo-mfr/sae_1", B):  # the copies still name the session workspace's SAE folders
        set_sae(root, analysis, f"runs/{analysis}")
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return root


def open_pair(b: str = B) -> AppTest:
    at = run_page("pages/5_Compare.py")
    at.selectbox(key="sae_a").set_value(A)
    at.selectbox(key="sae_b").set_value(b).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def click_compute(at: AppTest, root: Path, a: str = A, b: str = B) -> AppTest:
    """Click Compute: the matching runs as a job in the background; wait for it, then render again."""
    at.button(key="compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    status = AnalysisFolder(root / "analyses" / a).match_job(b).wait(120)
    assert status.state in ("none", "finished"), status  # none: refused before starting
    return at.run()


def matches(root: Path, analysis: str, other: str) -> pd.DataFrame:
    stored = pd.read_parquet(root / "analyses" / analysis / "matches.parquet")
    return stored[stored.other_analysis == other].reset_index(drop=True)


def test_page_offers_the_command_and_computes_the_matching_on_click(two_runs):
    at = open_pair()
    assert [c.value for c in at.code] == [f"workbench analyze compare runs/{A} runs/{B}"]
    assert not (two_runs / "analyses" / B / "matches.parquet").exists()  # a plain render computes nothing
    ensemble_before = matches(two_runs, A, "demo-mfr/sae_1")

    click_compute(at, two_runs)
    assert not at.exception and not at.error, [e.value for e in at.error]
    a_to_b, b_to_a = matches(two_runs, A, B), matches(two_runs, B, A)
    assert len(a_to_b) == len(b_to_a) == 64 and set(a_to_b.other_member) == {-1}
    pd.testing.assert_frame_equal(matches(two_runs, A, "demo-mfr/sae_1"), ensemble_before, check_dtype=False)  # kept
    same = ensemble_before.set_index("feature")  # B's weights are sae_1's: the ensemble matching again
    assert a_to_b.set_index("feature").other_feature.equals(same.other_feature)
    assert metric(at, "A→B: MMCS, live features") == f"{live(a_to_b).live_cosine.mean():.3f}"
    assert metric(at, "B→A: MMCS, live features") == f"{live(b_to_a).live_cosine.mean():.3f}"
    dead = (pd.read_parquet(two_runs / "analyses" / A / "features.parquet").n_fires == 0).sum()
    assert metric(at, "A→B: dead latents") == f"{dead:,} of {len(a_to_b):,}"

    at.slider(key="threshold").set_value(0.3).run()
    for key, stored in (("missing_table", a_to_b), ("missing_in_a_table", b_to_a)):
        shown = frame(at, key)
        expected = live(stored)[~(live(stored).live_cosine >= 0.3)]  # dead latents are neither shared nor missing
        assert sorted(shown.feature) == sorted(expected.feature), key
    pairs = frame(at, "pairs_table")
    matched = live(a_to_b)[live(a_to_b).live_other_feature >= 0]
    assert dict(zip(pairs.feature, pairs.live_other_feature)) == dict(zip(matched.feature, matched.live_other_feature))


def test_page_refuses_an_sae_outside_the_workspace_and_says_when_one_is_missing(two_runs, tmp_path):
    set_sae(two_runs, B, str(tmp_path / "elsewhere"))
    at = open_pair()
    at.button(key="compute").click().run()
    assert any("outside the workspace" in e.value for e in at.error)
    assert at.code and not (two_runs / "analyses" / B / "matches.parquet").exists()

    set_sae(two_runs, B, f"runs/{B}")
    shutil.rmtree(two_runs / "runs/other")
    at = open_pair()
    at.button(key="compute").click().run()
    assert any("SAE folder of `other/sae_0` is missing" in e.value for e in at.error)
    assert [c.value for c in at.code] == [f"workbench analyze compare runs/{A} runs/{B}"]


def test_ensemble_members_still_compare_from_the_stored_matching(two_runs):
    at = open_pair("demo-mfr/sae_1")
    stored = matches(two_runs, A, "demo-mfr/sae_1")
    assert metric(at, "A→B: MMCS, live features") == f"{live(stored).live_cosine.mean():.3f}"
    assert metric(at, "demo-mfr: MMCS, live features") == f"{live(stored).live_cosine.mean():.3f}"  # the within-run one
    assert not at.code


def test_features_page_shows_only_members_of_the_same_run(two_runs):
    from interp.pipeline.compare import compare_saes

    root = two_runs
    compare_saes(root / "runs" / A, root / "runs" / B, root / "analyses" / A, root / "analyses" / B)
    at = run_page("pages/2_Features.py")
    at.selectbox(key="analysis").set_value(A).run()
    assert not at.exception
    shown = [md.value for md in at.markdown if md.value.startswith("`")]
    assert any(v.startswith("`demo-mfr/sae_1`") for v in shown) and not any(B in v for v in shown)


def test_cli_compares_two_runs_and_explains_missing_dashboards(two_runs):
    from app.cli import app

    root = two_runs
    sae_a, sae_b = root / "runs" / A, root / "runs" / B
    result = CliRunner().invoke(app, ["analyze", "compare", str(sae_a), str(sae_b), "--out", str(root / "analyses")])
    assert result.exit_code == 0, result.output
    a_to_b, b_to_a = matches(root, A, B), matches(root, B, A)
    assert f"MMCS A->B over live features: {live(a_to_b).live_cosine.mean():.4f}" in result.output
    assert f"MMCS B->A over live features: {live(b_to_a).live_cosine.mean():.4f}" in result.output
    assert f"over all latents {a_to_b.cosine.mean():.4f}" in result.output
    assert str(root / "analyses" / B / "matches.parquet") in result.output

    shutil.copytree(sae_b, root / "runs/third/sae_0")
    result = CliRunner().invoke(app, ["analyze", "compare", str(sae_a), str(root / "runs/third/sae_0"),
                                      "--out", str(root / "analyses")])
    assert result.exit_code == 2 and "workbench analyze features runs/third" in result.output
    result = CliRunner().invoke(app, ["analyze", "compare", str(sae_a), str(sae_a), "--out", str(root / "analyses")])
    assert result.exit_code == 2 and "same SAE" in result.output


def test_a_failed_matching_job_shows_its_log_and_can_be_retried(two_runs):
    (two_runs / "runs" / B / "sae_weights.safetensors").write_bytes(b"not safetensors")
    at = open_pair()
    at.button(key="compute").click().run()
    assert AnalysisFolder(two_runs / "analyses" / A).match_job(B).wait(120).state == "failed"
    at.run()
    assert any("The last matching job failed" in e.value for e in at.error)
    assert any("Error" in c.value for c in at.code) and at.button(key="compute")  # the log's end; retry offered
    assert not (two_runs / "analyses" / B / "matches.parquet").exists()


def test_a_click_on_the_other_saes_id_opens_that_feature_and_elsewhere_the_rows(two_runs):
    """In the matched pairs table, B's id is a link too: a click on its cell opens B's feature; a click on any
    other cell (or the row) opens A's."""
    other = "demo-mfr/sae_1"
    at = open_pair(other)
    pairs = frame(at, "pairs_table")
    for column, analysis, feature in (("live_other_feature", other, pairs.live_other_feature.iloc[1]),
                                      ("label", A, pairs.feature.iloc[1])):
        at = open_pair(other)
        at.session_state["pairs_table"] = {"selection": {"rows": [], "columns": [], "cells": [[1, column]]}}
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert (at.query_params["analysis"], at.query_params["feature"]) == (analysis, str(int(feature))), column
