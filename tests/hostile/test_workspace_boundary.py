"""The workspace is the app's boundary: no file read through a link out of it, no model loaded from outside it
or without a click, no signal to a process that is not this run's trainer, no resume from a cache outside it;
and a workspace copied elsewhere works in every page."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.ui.workspace import list_analyses, list_caches, list_runs
from interp.store import tables
from interp.store.analysis_folder import AnalysisFolder
from sae_training.run_status import RUNNING_FILE, NotTrainerError, stop_training

APP = Path(__file__).resolve().parents[2] / "app"
PAGES = ("Home.py", "pages/1_Training.py", "pages/2_Features.py", "pages/3_Geometry.py", "pages/4_Circuits.py",
         "pages/5_Compare.py")


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(APP / name), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture()
def copied(workspace, tmp_path, monkeypatch):
    """A copy of the session workspace (free to damage), served to the pages; ``outside`` lies next to it."""
    root = tmp_path / "ws"
    shutil.copytree(workspace, root, symlinks=True)
    (tmp_path / "outside").mkdir()
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return root


@contextlib.contextmanager
def bystander():
    """An unrelated python process in its own group, killed (group and all) on exit."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_tables_linked_out_of_the_workspace_are_neither_listed_nor_read(copied):
    outside = copied.parent / "outside"
    shutil.copytree(copied / "analyses" / "demo-mfr" / "sae_0", outside / "sae_0")
    (copied / "analyses" / "linked").mkdir()
    (copied / "analyses" / "linked" / "sae_0").symlink_to(outside / "sae_0")  # a folder linked out
    assert "linked/sae_0" not in list_analyses(copied) and "demo-mfr/sae_0" in list_analyses(copied)
    member = copied / "analyses" / "demo-mfr" / "sae_1"
    (member / "examples.parquet").unlink()
    (member / "examples.parquet").symlink_to(outside / "sae_0" / "examples.parquet")  # one file linked out
    with pytest.raises(tables.TableError, match="link out of its analysis folder"):
        tables.feature_dashboard(member, 0)
    at = page("pages/2_Features.py")
    at.text_input(key="analysis_typed").input("analyses/linked/sae_0").run()
    assert any("outside the workspace" in e.value for e in at.error)
    at = page("pages/2_Features.py")
    at.selectbox(key="analysis").set_value("demo-mfr/sae_1").run()
    assert not at.exception and any("link out of its analysis folder" in e.value for e in at.error)


def test_runs_and_caches_linked_out_of_the_workspace_are_not_listed(copied):
    outside = copied.parent / "outside"
    shutil.copytree(copied / "runs" / "demo-mfr", outside / "run")
    (copied / "runs" / "linked").symlink_to(outside / "run")
    shutil.copytree(copied / "cached_activations" / "demo", outside / "cache")
    (copied / "cached_activations" / "linked").symlink_to(outside / "cache")
    (copied / "runs" / "demo-mfr" / "metrics.jsonl").unlink()
    (copied / "runs" / "demo-mfr" / "metrics.jsonl").symlink_to(outside / "run" / "metrics.jsonl")
    assert [run.run_id for run in list_runs(copied)] == []  # demo-mfr has a linked file, linked is a link
    assert [cache.cache_id for cache in list_caches(copied)] == ["demo"]


def test_the_circuits_page_loads_no_model_on_open_and_none_from_outside(copied, monkeypatch):
    import streamlit as st

    import interp.models.loading

    st.cache_data.clear()  # another test may have cached the demo model's attention already
    st.cache_resource.clear()
    loaded = []
    monkeypatch.setattr(interp.models.loading, "load_model", lambda spec, **_: loaded.append(spec) or 1 / 0)
    outside_model = copied.parent / "outside" / "model"
    outside_model.mkdir()
    (outside_model / "config.json").write_text("{}")
    manifest_path = copied / "cached_activations" / "demo" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["model"] = str(outside_model)
    manifest_path.write_text(json.dumps(manifest))
    at = page("pages/4_Circuits.py")
    assert loaded == [] and not at.error  # opening the page loads nothing
    at.selectbox(key="model_spec").set_value(str(outside_model))
    at.button[0].click().run()
    assert loaded == [] and any("outside the workspace" in e.value for e in at.error)
    at.selectbox(key="model_spec").set_value("demo")
    at.button[0].click().run()
    assert loaded == ["demo"]  # the click loads the allowed spec (the stub then fails: shown as an error)
    assert any("Could not run model 'demo'" in e.value for e in at.error)


def test_stop_never_signals_a_pid_that_is_not_this_runs_trainer(copied):
    run = copied / "runs" / "demo-mfr"
    with bystander() as process:
        (run / RUNNING_FILE).write_text(json.dumps({"pid": process.pid}))
        at = page("pages/1_Training.py")  # a live python pid in running.json does not make the run running
        assert "running" not in next(md.value for md in at.markdown if md.value.startswith("**demo-mfr**"))
        assert not [b for b in at.button if b.key == "stop"]
        with pytest.raises(NotTrainerError, match="is not a `workbench train` process"):
            stop_training(run, process.pid)
        time.sleep(0.2)
        assert process.poll() is None  # still alive: no signal was sent
        (run / RUNNING_FILE).unlink()
        (run / "app_launch.json").write_text(json.dumps({"pid": process.pid, "started": time.time()}))
        at = page("pages/1_Training.py")  # a launch record naming a pid that is not the run's job: no Stop
        assert not [b for b in at.button if b.key == "stop"]
        with pytest.raises(NotTrainerError, match="is not a `workbench train` process"):
            stop_training(run, process.pid)
        time.sleep(0.2)
        assert process.poll() is None


def test_resume_refuses_a_config_whose_cache_is_outside_the_workspace(copied):
    outside_cache = copied.parent / "outside" / "cache"
    shutil.copytree(copied / "cached_activations" / "demo", outside_cache)
    run = copied / "runs" / "demo-mfr"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "cache": str(outside_cache)}))
    (run / "eval.json").unlink()  # not evaluated: the page offers Resume
    at = page("pages/1_Training.py")
    at.button(key="resume").click().run()
    assert any("outside the workspace" in e.value for e in at.error)
    assert not (run / "app_launch.json").exists()  # nothing was launched


def test_a_copied_workspace_works_in_every_page(workspace, tmp_path, monkeypatch):
    meta = json.loads((workspace / "analyses" / "demo-mfr" / "sae_0" / "meta.json").read_text())
    assert meta["sae"] == "runs/demo-mfr/sae_0" and meta["cache"] == "cached_activations/demo"
    first, moved = tmp_path / "first", tmp_path / "moved"
    shutil.copytree(workspace, first, symlinks=True)
    first.rename(moved)  # nothing may point at the place it was built or copied to
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(moved))
    for name in PAGES:
        at = page(name)
        assert not at.error, (name, [e.value for e in at.error])
    for member in ("sae_0", "sae_1"):  # no stored matching: Compare computes it from the SAEs meta.json names
        (moved / "analyses" / "demo-mfr" / member / "matches.parquet").unlink()
    at = page("pages/5_Compare.py")
    at.button(key="compute").click().run()  # starts the matching job; the page shows the result once it is done
    job = AnalysisFolder(moved / "analyses" / "demo-mfr" / "sae_0").match_job("demo-mfr/sae_1")
    assert job.wait(120).state == "finished"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(m.label == "A→B: MMCS, live features" for m in at.metric)
