"""Fixtures of the app tests: the pages pointed at the session workspace (``tests/workspace.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture()
def app_env(workspace, monkeypatch):
    """Point the pages at the session workspace."""
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(workspace))
    return workspace
