"""Explanation scores in the evaluation suite: a planted ``explanations`` table gives the medians, baselines and
shares beating the baseline by 0.2 it was built with; ``workbench eval`` writes them in SAEBench's layout when an
SAE has the table (and says which SAEs have none), resumes, and redoes them when the table is remade."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from interp.evals.explanations import check_table, explanation_parts
from interp.explain.scoring import SCORES
from interp.pipeline.evals import evaluate_saes
from interp.store.analysis_folder import EXPLANATIONS, AnalysisFolder, read_eval_table
from interp.store.errors import InputError

# four explained latents, one dead, one too rare; per score: the explained latents' values and baselines
SCORED = {"detection": ([0.95, 0.85, 0.6, 0.5], [0.5, 0.5, 0.55, 0.45]),
          "detection_hard": ([0.7, 0.6, 0.5, 0.4], [0.5, 0.5, 0.5, 0.5]),
          "fuzzing": ([0.9, 0.9, 0.9, 0.55], [0.6, 0.65, 0.8, 0.5]),
          "simulation": ([0.8, 0.1, 0.3, 0.05], [0.0, 0.0, 0.0, 0.0])}


def planted_table(shift: float = 0.0) -> pd.DataFrame:
    rows = []
    for feature, status in enumerate(["explained"] * 4 + ["dead", "too rare"]):
        row = {"feature": feature, "status": status, "n_fires": 0 if status == "dead" else 10,
               "family": ["token", "token", "word", "word", "never", ""][feature]}
        for score, (values, baselines) in SCORED.items():
            row[score] = values[feature] + shift if feature < 4 else math.nan
            row[f"baseline_{score}"] = baselines[feature] if feature < 4 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def test_planted_scores_give_their_medians_baselines_and_shares():
    metrics, details, unstructured = explanation_parts(planted_table())
    assert metrics["coverage"] == {"n_latents": 6, "n_explained": 4, "n_dead": 1, "n_too_rare": 1,
                                   "explained_fraction": pytest.approx(4 / 6)}
    for score, (values, baselines) in SCORED.items():
        got = metrics[score]
        assert got[f"{score}_median"] == pytest.approx(float(np.median(values)))
        assert got[f"{score}_baseline_median"] == pytest.approx(float(np.median(baselines)))
        beats = np.mean([v >= b + 0.2 for v, b in zip(values, baselines)])
        assert got[f"{score}_beats_baseline_0_2"] == pytest.approx(beats) and got[f"{score}_n_scored"] == 4
    assert metrics["detection"]["detection_beats_baseline_0_2"] == 0.5  # 0.95 and 0.85 clear 0.5 + 0.2; not 0.6
    assert [d["family"] for d in details] == ["token", "word"]  # explained latents only, per rule family
    assert details[0]["detection_median"] == pytest.approx(0.9) and unstructured["margin"] == 0.2
    assert "llm" not in metrics


def test_llm_scores_are_summarised_when_present_and_a_table_without_scores_is_refused():
    table = planted_table().assign(llm_detection=[0.9, 0.8, 0.7, 0.6, math.nan, math.nan],
                                   llm_baseline_detection=[0.5] * 4 + [math.nan] * 2,
                                   llm_fuzzing=math.nan, llm_baseline_fuzzing=math.nan)
    metrics, _, _ = explanation_parts(table)
    assert metrics["llm"]["llm_detection_median"] == pytest.approx(0.75)
    assert metrics["llm"]["llm_detection_beats_baseline_0_2"] == pytest.approx(0.75)
    assert not any(k.startswith("llm_fuzzing") for k in metrics["llm"])  # no LLM fuzzing scores: left out
    with pytest.raises(InputError, match="baseline_detection.*workbench explain"):
        check_table(planted_table().drop(columns=["baseline_detection"]), "x.parquet")
    nothing = explanation_parts(planted_table().assign(**{s: math.nan for s in SCORES}))[0]
    assert nothing["detection"]["detection_median"] is None and nothing["detection"]["detection_n_scored"] == 0


def test_eval_writes_the_explanation_metric_where_the_table_is(workspace, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(workspace, root)
    out = root / "analyses"
    AnalysisFolder.of_sae(out, root / "runs" / "demo-mfr" / "sae_0").write_tables({EXPLANATIONS: planted_table()})
    report = evaluate_saes([root / "runs" / "demo-mfr"], out, ("explanations",), progress=lambda _: None)
    assert report.computed == [("demo-mfr/sae_0", "explanations")]
    assert any("demo-mfr/sae_1 have no explanations table" in n and "workbench explain" in n for n in report.notes)
    output = AnalysisFolder(out / "demo-mfr" / "sae_0").read_eval("explanations")
    assert output["eval_type_id"] == "explanation_scores" and output["sae_lens_id"] == "demo-mfr/sae_0"
    assert output["eval_result_metrics"]["detection"]["detection_median"] == pytest.approx(0.725)
    table = read_eval_table(out)
    row = table[(table.metric == "explanations") & (table.name == "detection_beats_baseline_0_2")]
    assert row.sae.tolist() == ["demo-mfr/sae_0"] and row.value.tolist() == [0.5]
    again = evaluate_saes([root / "runs" / "demo-mfr"], out, ("explanations",), progress=lambda _: None)
    assert again.computed == []  # the same table: read from disk
    AnalysisFolder(out / "demo-mfr" / "sae_0").write_tables({EXPLANATIONS: planted_table(shift=0.01)})
    redo = evaluate_saes([root / "runs" / "demo-mfr"], out, ("explanations",), progress=lambda _: None)
    assert redo.computed == [("demo-mfr/sae_0", "explanations")]  # remade explanations: summarised again
    redone = AnalysisFolder(out / "demo-mfr" / "sae_0").read_eval("explanations")["eval_result_metrics"]
    assert redone["detection"]["detection_median"] == pytest.approx(0.735)
