"""``workbench export neuronpedia`` on the test workspace: one source per member, read back whole; bad input is one
``error:`` line."""

from __future__ import annotations

import jsonschema
from typer.testing import CliRunner

from app.cli import app
from interp.pipeline.export import read_neuronpedia
from interp.store.analysis_folder import AnalysisFolder
from tests.interp.test_neuronpedia_export import KINDS, db_models, json_schema


def test_export_writes_one_source_per_member_that_reads_back(workspace, tmp_path):
    result = CliRunner().invoke(app, ["export", "neuronpedia", str(workspace / "runs" / "demo-mfr"), "--analyses",
                                      str(workspace / "analyses"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["1-demo-mfr-sae-0", "1-demo-mfr-sae-1"]
    for member in ("sae_0", "sae_1"):
        folder = AnalysisFolder(workspace / "analyses" / "demo-mfr" / member)
        back = read_neuronpedia(tmp_path / "demo" / f"1-demo-mfr-{member.replace('_', '-')}")
        (source,) = back["records"]["source"]
        assert (source["num_tokens_in_prompt"], source["num_prompts"]) == (32, 4096 // 32)  # the cache's
        assert len(back["records"]["features"]) == folder.meta()["d_sae"]
        assert len(back["records"]["activations"]) == len(folder.read_table("examples"))
        features = folder.read_table("features").sort_values("feature")
        assert back["tables"]["features"].frequency.tolist() == features.frequency.tolist()
        assert back["records"]["explanations"] == []  # none made in this workspace
        for kind, rows in back["records"].items():  # rows made from real dashboards fit Neuronpedia's row types
            validator = jsonschema.Draft202012Validator(json_schema(getattr(db_models(), KINDS[kind])))
            assert all(validator.is_valid(row) for row in rows), kind


def test_export_without_dashboards_is_one_error_line(workspace, tmp_path):
    result = CliRunner().invoke(app, ["export", "neuronpedia", str(workspace / "runs" / "demo-mfr" / "sae_0"),
                                      "--analyses", str(tmp_path / "analyses"), "--out", str(tmp_path / "np")])
    assert result.exit_code == 2
    assert "error:" in result.output and "workbench analyze features" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "np").exists()
