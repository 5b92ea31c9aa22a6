"""The Training page drives real ``workbench train`` subprocesses: launch, follow, stop (SIGTERM), resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sae_training.run_status import checkpoint_step, running_pid, total_steps
from sae_training.trainer import read_metrics

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "pages" / "1_Training.py")


def wait_for(condition, what: str, timeout: float = 180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def launch(at: AppTest, run_id: str, tokens: str) -> AppTest:
    at.text_input(key="run_id").input(run_id)
    at.text_input(key="tokens").input(tokens)
    at.number_input(key="d_sae").set_value(64)
    at.number_input(key="k").set_value(4)
    at.number_input(key="batch_size").set_value(256)
    at.button[0].click().run()  # the form's Launch button
    assert not at.exception and not at.error, ([e.value for e in at.error], [c.value for c in at.code])
    return at


def status_line(at: AppTest, run_id: str) -> str:
    return next(md.value for md in at.markdown if md.value.startswith(f"**{run_id}**"))


@pytest.fixture()
def fresh_workspace(workspace, tmp_path, monkeypatch):
    """A workspace holding only the session's activation cache (runs are written by the test)."""
    root = tmp_path / "ws"
    shutil.copytree(workspace / "cached_activations", root / "cached_activations")
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    yield root
    for launch in root.glob("runs/*/app_launch.json"):  # never leave a training process behind a failed test
        try:  # the page starts each in its own session: its pid is its process group
            os.killpg(int(json.loads(launch.read_text())["pid"]), signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


@pytest.mark.slow
def test_a_launched_run_finishes_and_its_metrics_equal_the_file(fresh_workspace):
    at = launch(AppTest.from_file(PAGE, default_timeout=60).run(), "short", "2048")  # 8 steps
    run = fresh_workspace / "runs" / "short"
    wait_for(lambda: "finished" in status_line(at.run(), "short"), "the run to finish (page says so)")
    assert (run / "eval.json").exists() and running_pid(run) is None
    last = read_metrics(run)[-1]
    assert last["step"] == total_steps(run) == 8
    assert next(m.value for m in at.metric if m.label == "FVU") == f"{last['fvu']:.4g}"
    config = json.loads((run / "config.json").read_text())
    assert (config["d_sae"], config["options"]["k"], config["batch_size"], config["n_members"]) == (64, 4, 256, 2)


@pytest.mark.slow
def test_stop_checkpoints_and_resume_continues_from_there(fresh_workspace):
    at = launch(AppTest.from_file(PAGE, default_timeout=60).run(), "long", "100M")  # far more steps than we wait
    run = fresh_workspace / "runs" / "long"
    wait_for(lambda: running_pid(run) and read_metrics(run), "the first logged steps")
    at.run()
    assert "running" in status_line(at, "long")
    at.button(key="stop").click().run()
    wait_for(lambda: "stopped" in status_line(at.run(), "long"), "the page to show the run stopped")
    stopped_at = checkpoint_step(run)
    assert stopped_at > 0 and running_pid(run) is None and f"step {stopped_at:,}" in status_line(at, "long")
    at.button(key="resume").click().run()
    wait_for(lambda: running_pid(run) and read_metrics(run)[-1]["step"] > stopped_at + 10, "the resumed run")
    steps = [m["step"] for m in read_metrics(run)]
    assert steps == sorted(set(steps))  # resumed after the checkpoint: no step logged twice
    at.run()
    at.button(key="stop").click().run()
    wait_for(lambda: running_pid(run) is None and checkpoint_step(run) > stopped_at, "the second stop")
    assert "stopped at step" in (run / "train.log").read_text()
    home = AppTest.from_file(str(Path(PAGE).parents[1] / "Home.py"), default_timeout=60).run()
    runs = next(frame.value for frame in home.dataframe if "state" in frame.value.columns)
    assert (
        runs.set_index("run").loc["long", "state"]
        == f"stopped at step {checkpoint_step(run):,} of {total_steps(run):,}"
    )


def test_the_form_shows_every_option_of_the_chosen_architecture(fresh_workspace):
    """Fields come from the registry: each architecture's options (e.g. relu's L1 coefficient) are settable."""
    from sae_training.architectures import ARCHITECTURES, architecture_options

    at = AppTest.from_file(PAGE, default_timeout=60).run()
    for name in ARCHITECTURES:
        at.selectbox(key="arch").set_value(name).run()
        assert not at.exception
        keys = {w.key for kind in (at.number_input, at.selectbox, at.text_input) for w in kind}
        assert {spec.name for spec in architecture_options(name)} <= keys, name
    at.selectbox(key="arch").set_value("relu").run()
    assert at.number_input(key="l1_coefficient").value == 1.0
    assert "k" not in {w.key for w in at.number_input}
