"""Fixtures of the app tests: the pages pointed at the session workspace (``tests/workspace.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture()
def app_env(workspace, monkeypatch):
    """Point the pages at the session workspace."""
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(workspace))
    return workspace


@pytest.fixture(scope="session")
def live_workspace(tmp_path_factory, demo_model):
    """A small workspace on the bundled demo model itself (cache, one SAE pair, dashboards), for the pages and
    commands that run the model live (``tests/workspace.py``'s tiny model is not loadable from a spec)."""
    from tests.workspace import build_live_workspace

    return build_live_workspace(tmp_path_factory.mktemp("live"), demo_model)
