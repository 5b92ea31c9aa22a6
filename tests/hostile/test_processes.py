"""``workbench app`` is Streamlit itself (exec): a SIGTERM to it stops the server and leaves no process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_sigterm_to_workbench_app_stops_the_server(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "app", "--workspace", str(tmp_path), "--port",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=1)
                break
            assert process.poll() is None, "workbench app exited before serving"
            time.sleep(0.5)
        else:
            pytest.fail("workbench app did not start")
        process.send_signal(signal.SIGTERM)  # what a process manager or a test fixture's terminate() does
        process.wait(30)
        deadline = time.time() + 10
        while (listening(port) or group_alive(process.pid)) and time.time() < deadline:
            time.sleep(0.2)
        assert not listening(port), "a server is still listening after SIGTERM"
        assert not group_alive(process.pid), "a process of `workbench app` outlived its SIGTERM"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
