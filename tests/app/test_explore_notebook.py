"""The explore notebook (probe, steer, clamp, ablate, dose-response) executes top to bottom on a workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_explore_notebook_executes(live_workspace, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(live_workspace))
    monkeypatch.setenv("WORKBENCH_SAE", "live/sae_0")
    notebook = nbformat.read(ROOT / "notebooks" / "explore.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) >= 6
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "clamp to the current value is the identity: True" in printed
