"""No page brought down by one file: a damaged run config, evaluation or metrics log, or a truncated cache
manifest, is a row or note naming the file on every page (AppTest), never a traceback; the rest renders."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.commands.app import app_command_line

APP = Path(__file__).resolve().parents[2] / "app"
PAGES = ("Home.py", "pages/1_Training.py", "pages/4_Circuits.py")  # the pages these files brought down
RUN_CONFIG = "runs/demo-mfr/config.json"
DAMAGE = {  # case -> (file, its new bytes, what the page must name)
    "random bytes config": (RUN_CONFIG, random.Random(5).randbytes(300), "config.json"),
    "config is a list": (RUN_CONFIG, b"[1, 2]", "config.json"),
    "batch_size 0": (RUN_CONFIG, None, "'batch_size' is 0"),
    "eval.json a list": ("runs/demo-mfr/eval.json", b"[1, 2]", "eval.json"),
    "truncated manifest": ("cached_activations/demo/manifest.json", None, "manifest.json"),
}


def damaged_copy(workspace: Path, root: Path, case: str) -> Path:
    shutil.copytree(workspace, root, symlinks=True)
    name, content, _ = DAMAGE[case]
    path = root / name
    if case == "batch_size 0":
        content = json.dumps({**json.loads(path.read_text()), "batch_size": 0}).encode()
    elif case == "truncated manifest":
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    return root


def texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.error, *at.warning, *at.info, *at.markdown)]
    parts += [str(frame.value.to_dict()) for frame in at.dataframe]
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_every_page_survives_one_damaged_file_and_names_it(workspace, tmp_path, monkeypatch, case):
    root = damaged_copy(workspace, tmp_path / "ws", case)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    named = []
    for page in PAGES:  # Home lists every run and cache, Training reads the run's config, Circuits the manifest
        at = AppTest.from_file(str(APP / page), default_timeout=120).run()
        assert not at.exception, (case, page, [e.value for e in at.exception])
        assert "Traceback" not in texts(at)
        named.append(DAMAGE[case][2] in texts(at))
    assert named[0], (case, "Home must name the damaged file")  # the listing says which file and why
    if DAMAGE[case][0] == RUN_CONFIG:
        assert named[1], (case, "Training must name the run's damaged config")


def test_workbench_app_never_sends_tracebacks_to_the_browser():
    line = app_command_line(Path("/ws"), 8501)
    assert line[line.index("--client.showErrorDetails") + 1] == "none"  # "false" would still show stack traces
