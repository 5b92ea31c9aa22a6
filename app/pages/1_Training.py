"""Training: launch a run from a form (a subprocess), follow its metrics live, stop and resume it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from app.ui import data
from app.ui.theme import missing, page, plot
from app.ui.workspace import COMMANDS, UnsafePathError, list_caches, list_runs, safe_path, workspace_root

page("Training")
root = workspace_root()
JOB_FILE = "app_job.json"  # pid and command of a run launched from this page


def running_pid(run: Path) -> int | None:
    """The pid of this run's training process, if one launched from the app is still alive."""
    job = run / JOB_FILE
    if not job.exists():
        return None
    pid = int(json.loads(job.read_text())["pid"])
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return pid if "app.cli" in cmdline and run.name in cmdline else None


def launch(args: list[str], run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / "app_job.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "train", *args], cwd=root, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    (run / JOB_FILE).write_text(json.dumps({"pid": process.pid, "args": args}))


caches = list_caches(root)
with st.expander("Launch a run", expanded=not list_runs(root)):
    if not caches:
        missing("Training needs an activation cache.", COMMANDS["cache"])
    with st.form("launch"):
        c1, c2, c3 = st.columns(3)
        cache_path = c1.text_input("Cache (inside the workspace)",
                                   f"cached_activations/{caches[0].cache_id}" if caches else "", key="cache_path")
        hook = c2.text_input("Hook", caches[0].hooks[-1] if caches else "blocks.1.hook_resid_post", key="hook")
        run_id = c3.text_input("Run id", "run-1", key="run_id")
        arch = c1.selectbox("Architecture", ["topk", "batchtopk", "relu", "jumprelu"], key="arch")
        d_sae = c2.number_input("d_sae", 16, 1 << 20, 512, key="d_sae")
        k = c3.number_input("k (TopK)", 1, 1024, 16, key="k")
        ensemble = c1.number_input("Ensemble size", 1, 16, 2, key="ensemble")
        mfr = c2.number_input("MFR λ", 0.0, 100.0, 1.0, key="mfr")
        tokens = c3.text_input("Tokens", "1M", key="tokens")
        submitted = st.form_submit_button("Launch")
    if submitted:
        try:
            cache = safe_path(root, cache_path)
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id) or run_id in (".", ".."):
                raise UnsafePathError("a run id is one folder name: letters, digits, '-', '_', '.'")
            if not (cache / "manifest.json").exists():
                raise FileNotFoundError(f"'{cache_path}' is not an activation cache (no manifest.json)")
        except (UnsafePathError, FileNotFoundError) as error:
            st.error(f"Refused: {error}")
        else:
            args = ["--cache", str(cache), "--hook", hook, "--arch", arch, "--d-sae", str(int(d_sae)), "--k",
                    str(int(k)), "--ensemble", str(int(ensemble)), "--mfr", str(mfr if ensemble > 1 else 0.0),
                    "--tokens", tokens, "--run-id", run_id, "--runs", str(root / "runs")]
            launch(args, root / "runs" / run_id)
            st.success(f"Launched `workbench train {' '.join(args)}`")

runs = list_runs(root)
if not runs:
    missing("No SAE run in this workspace yet.", COMMANDS["demo"])
    st.stop()
run_id = st.selectbox("Run", [r.run_id for r in runs], key="run")
run = root / "runs" / run_id


@st.fragment(run_every=2.0)
def follow() -> None:
    """Re-read metrics.jsonl every two seconds (cached on the file's mtime)."""
    pid = running_pid(run)
    frame = data.metrics(run)
    c1, c2, c3 = st.columns([2, 1, 1])
    c1.markdown(f"**{run_id}**: {'running (pid %d)' % pid if pid else 'not running'}, {len(frame)} logged steps")
    if pid and c2.button("Stop", key="stop"):
        os.killpg(pid, signal.SIGTERM)
        st.rerun()
    job = run / JOB_FILE
    if not pid and job.exists() and c3.button("Resume", key="resume"):
        launch(json.loads(job.read_text())["args"] + ["--resume"], run)
        st.rerun()
    if frame.empty:
        st.info("No metrics logged yet.")
        return
    names = [("loss", "loss"), ("fvu", "FVU"), ("l0", "L0"), ("dead_fraction", "dead fraction"),
             ("mfr_penalty", "MFR penalty"), ("mmcs", "MMCS")]
    names = [(col, title) for col, title in names if col in frame]
    last = frame.iloc[-1]
    for column, (col, title) in zip(st.columns(len(names)), names):
        column.metric(title, f"{last[col]:.4g}")
    grid = st.columns(3)
    for i, (col, title) in enumerate(names):
        members = [c for c in frame.columns if re.fullmatch(rf"member\d+_{col}", c)]
        fig = go.Figure([go.Scatter(x=frame.step, y=frame[c], mode="lines", name=c.split("_")[0])
                         for c in members] or [go.Scatter(x=frame.step, y=frame[col], mode="lines", name=col)])
        fig.update_layout(title=title, xaxis_title="step", height=260, legend=dict(orientation="h", y=-0.35))
        with grid[i % 3]:
            plot(fig, key=f"curve_{col}")


follow()
