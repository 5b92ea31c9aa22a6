"""The Evaluate page under AppTest: the table equals the evaluation files, one Pareto chart per metric with each
point naming its SAE, and the command to run when nothing was evaluated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from interp.evals.absorption import AbsorptionConfig
from interp.figures.evals import pareto_figure, pareto_front
from interp.pipeline.evals import EvalConfig, evaluate_saes
from interp.store.analysis_folder import AnalysisFolder, read_eval_table, wide_eval_table

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "pages" / "8_Evaluate.py")


@pytest.fixture(scope="module")
def evaluated(workspace, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluated") / "ws"
    shutil.copytree(workspace, root)
    config = EvalConfig(core_tokens=1024, ce_batches=1, ce_batch_size=2, absorption=AbsorptionConfig(max_words=100))
    evaluate_saes([root / "runs" / "demo-mfr"], root / "analyses", ("core", "stability"), config,
                  progress=lambda _: None, model=tiny_model)
    return root


def test_the_page_shows_the_files_values_and_a_chart_per_metric(evaluated, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(evaluated))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = next(f.value for f in at.dataframe if "L0" in f.value.columns).set_index("sae")
    for sae in ("demo-mfr/sae_0", "demo-mfr/sae_1"):
        core = AnalysisFolder(evaluated / "analyses" / sae).read_eval("core")["eval_result_metrics"]
        assert shown.loc[sae, "L0"] == core["sparsity"]["l0"]
        assert shown.loc[sae, "explained variance"] == core["reconstruction_quality"]["explained_variance"]
    stability = AnalysisFolder(evaluated / "analyses" / "demo-mfr/sae_0").read_eval("stability")
    assert shown.loc["demo-mfr/sae_0", "MMCS live"] == stability["eval_result_metrics"]["stability"]["mmcs_live"]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == len(at.multiselect(key="plotted").value) > 0
    points = [p for trace in charts[0]["data"] if trace.get("mode") != "lines" for p in trace["customdata"]]
    assert sorted(points) == ["demo-mfr/sae_0", "demo-mfr/sae_1"]
    assert charts[0]["data"][0]["name"] == "topk · MFR λ=1"


def test_without_evaluations_the_page_gives_the_command(tmp_path, monkeypatch):
    (tmp_path / "analyses").mkdir()
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception and "workbench eval" in at.code[0].value


def test_the_pareto_frontier_keeps_the_undominated_points():
    x, y = [10.0, 20.0, 15.0, 30.0], [0.5, 0.9, 0.4, 0.8]
    assert pareto_front(np.array(x), np.array(y)).tolist() == [0, 1]
    assert pareto_front(np.array(x), np.array(y), higher_is_better=False).tolist() == [0, 2]
    assert pareto_front(np.array([16.0, 16.0, 16.0]), np.array([0.2, 0.9, 0.5])).tolist() == [1]  # ties in x


def test_the_wide_table_has_one_row_per_sae(evaluated):
    wide = wide_eval_table(read_eval_table(evaluated / "analyses"))
    assert wide.sae.tolist() == ["demo-mfr/sae_0", "demo-mfr/sae_1"] and (wide.mfr_coefficient == 1.0).all()
    fig = pareto_figure(wide, "core.explained_variance")
    assert [t.name for t in fig.data] == ["topk · MFR λ=1", "Pareto frontier"][:len(fig.data)]


def test_the_page_shows_explanation_scores_and_says_which_tokens_core_read(evaluated, tmp_path, monkeypatch):
    from interp.store.analysis_folder import EXPLANATIONS
    from tests.interp.test_evals_explanations import planted_table

    root = tmp_path / "ws"
    shutil.copytree(evaluated, root)
    AnalysisFolder.of_sae(root / "analyses", root / "runs" / "demo-mfr" / "sae_0").write_tables(
        {EXPLANATIONS: planted_table()})
    evaluate_saes([root / "runs" / "demo-mfr"], root / "analyses", ("explanations",), progress=lambda _: None)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = next(f.value for f in at.dataframe if "detection baseline" in f.value.columns).set_index("sae")
    saved = AnalysisFolder(root / "analyses" / "demo-mfr/sae_0").read_eval("explanations")["eval_result_metrics"]
    assert shown.index.tolist() == ["demo-mfr/sae_0"]  # sae_1 has no explanations: no row
    assert shown.loc["demo-mfr/sae_0", "detection"] == saved["detection"]["detection_median"]
    assert shown.loc["demo-mfr/sae_0", "fuzzing baseline"] == saved["fuzzing"]["fuzzing_baseline_median"]
    assert shown.loc["demo-mfr/sae_0", "detection beats baseline +0.2"] == 0.5
    table = next(f.value for f in at.dataframe if "L0" in f.value.columns).set_index("sae")
    core = AnalysisFolder(root / "analyses" / "demo-mfr/sae_0").read_eval("core")["eval_result_metrics"]
    assert table.loc["demo-mfr/sae_0", "dead (core eval)"] == core["misc_metrics"]["dead_fraction"]
    note = next(c.value for c in at.caption if "eval/core.json" in c.value)
    assert f"first {core['token_stats']['total_tokens_eval_sparsity_variance']:,} tokens" in note
    assert "eval.json" in note and "differ" in note
