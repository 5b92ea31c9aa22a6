"""Analyses whole or absent: kill -9 at the moments the issue names leaves the previous complete analysis
or none, never a mix; a rerun with other options removes the tables it no longer makes; readers trust only
the tables a complete record lists and verifies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interp.features.dashboards import DashboardConfig
from interp.pipeline import analyze_features, analyze_geometry
from interp.store import tables
from interp.store.analysis_folder import AnalysisFolder, IncompleteAnalysisError, list_analyses
from tests.hostile.helpers import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]
KILL_AFTER = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import interp.store.analysis_folder as owner
real = owner.write_parquet
def write_then_die(frame, path, *args, **kwargs):
    written = real(frame, path, *args, **kwargs)
    if Path(path).name == {table!r}:
        os.kill(os.getpid(), signal.SIGKILL)  # the moment right after this table is replaced
    return written
owner.write_parquet = write_then_die
from interp.features.dashboards import DashboardConfig
from interp.pipeline import analyze_features, analyze_geometry
run, out = Path({run!r}), Path({out!r})
if {step!r} == "features":
    analyze_features(run, out, config=DashboardConfig(n_top=3), with_logits=False)
else:
    analyze_geometry(run, out, n_clusters=2, max_features=64, with_umap=False)
"""


@pytest.fixture()
def copied(workspace, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(workspace, root, symlinks=True)
    return root


def killed_after(copied: Path, step: str, table: str) -> None:
    script = KILL_AFTER.format(root=str(ROOT), table=table, run=str(copied / "runs" / "demo-mfr"),
                               out=str(copied / "analyses"), step=step)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == -9, result.stderr[-3000:]


@pytest.mark.slow
def test_kill_9_right_after_features_parquet_leaves_no_mixed_dashboards(copied):
    folder = AnalysisFolder(copied / "analyses" / "demo-mfr" / "sae_0")
    assert folder.has_dashboards and tables.n_features(folder) == 64
    killed_after(copied, "features", "features.parquet")
    assert folder.record("dashboards") is None and not folder.has_dashboards  # absent, not half old, half new
    for read in (lambda: tables.n_features(folder), lambda: tables.feature_dashboard(folder, 39)):
        with pytest.raises(IncompleteAnalysisError, match="not part of a complete dashboards analysis"):
            read()
    assert "demo-mfr/sae_0" not in list_analyses(copied / "analyses")
    assert "demo-mfr/sae_1" in list_analyses(copied / "analyses")  # the member not yet rewritten is still whole
    with pytest.raises(IncompleteAnalysisError, match="dashboards in .* are incomplete"):
        analyze_geometry(copied / "runs" / "demo-mfr" / "sae_0", copied / "analyses", with_umap=False)
    analyze_features(copied / "runs" / "demo-mfr", copied / "analyses", config=DashboardConfig(n_top=3),
                     with_logits=False)  # the rerun makes it whole again
    assert tables.n_features(folder) == 64 and len(tables.feature_dashboard(folder, 39)["examples"]) > 0


@pytest.mark.slow
def test_kill_9_right_after_geometry_map_leaves_no_mixed_geometry(copied):
    folder = AnalysisFolder(copied / "analyses" / "demo-mfr" / "sae_0")
    assert folder.has("geometry_map") and folder.has("geometry_lobes")
    killed_after(copied, "geometry", "geometry_map.parquet")
    assert folder.record("geometry") is None
    assert not any(folder.has(name) for name in ("geometry_map", "geometry_lobes", "geometry_crystals"))
    assert "geometry" not in folder.present() and folder.has_dashboards  # the dashboards are untouched
    with pytest.raises(IncompleteAnalysisError):
        folder.read_table("geometry_lobes")


@pytest.mark.slow
def test_a_rerun_with_other_options_removes_the_tables_it_no_longer_makes(copied):
    folder = AnalysisFolder(copied / "analyses" / "demo-mfr" / "sae_0")
    assert {"logits", "cooccurrence", "cooccurrence_counts"} <= set(folder.record("dashboards").tables)
    assert folder.has("geometry_lobes")
    analyze_features(copied / "runs" / "demo-mfr", copied / "analyses",
                     config=DashboardConfig(n_top=3, cooccurrence=None), with_logits=False)
    assert not any((folder.table_path(name)).exists() for name in ("logits", "cooccurrence", "cooccurrence_counts"))
    assert folder.meta()["logits"] is False and "logits" not in tables.feature_dashboard(folder, 0)
    assert folder.record("geometry") is None  # its lobes came from counts that are gone: stale, so absent
    analyze_geometry(copied / "runs" / "demo-mfr", copied / "analyses", n_clusters=3, max_features=64,
                     with_umap=False)
    assert folder.has("geometry_map") and not folder.table_path("geometry_lobes").exists()  # no counts, no lobes


def test_a_folder_holding_only_features_parquet_is_not_dashboards(copied):
    lone = copied / "analyses" / "demo-mfr" / "sae_1"
    for path in lone.iterdir():
        if path.name != "features.parquet":
            path.unlink() if path.is_file() else shutil.rmtree(path)
    assert list_analyses(copied / "analyses") == ["demo-mfr/sae_0"]
    assert not AnalysisFolder(lone).has_dashboards
    assert_one_line_error(["analyze", "geometry", copied / "runs" / "demo-mfr" / "sae_1", "--out",
                           copied / "analyses", "--no-umap"], "are incomplete", "analyze features")


def test_a_corrupt_cooccurrence_table_is_one_line_naming_it(copied):
    path = copied / "analyses" / "demo-mfr" / "sae_0" / "cooccurrence_counts.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_one_line_error(["analyze", "geometry", copied / "runs" / "demo-mfr" / "sae_0", "--out",
                           copied / "analyses", "--no-umap"], "cooccurrence_counts.parquet", "fails its checksum")
