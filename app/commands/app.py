"""``workbench app``: serve the Streamlit front end over a workspace (headless, on a chosen port).

The command replaces itself with Streamlit (``os.execve``), so there is one process: stopping it (SIGTERM,
Ctrl-C) stops the server, and nothing is left listening on the port.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

HOME = Path(__file__).resolve().parents[1] / "Home.py"


def app_command_line(workspace: Path, port: int) -> list[str]:
    """The streamlit command line; the workspace also goes after ``--`` so the pages can read it."""
    return [sys.executable, "-m", "streamlit", "run", str(HOME), "--server.headless", "true",
            "--server.port", str(port), "--server.address", "localhost", "--browser.gatherUsageStats", "false",
            "--client.showErrorDetails", "none",  # a traceback goes to the terminal, never to the browser
            "--", "--workspace", str(workspace)]


def open_command(workspace: Path) -> str:
    """What a user types to open the app on ``workspace``."""
    return f"workbench app --workspace {workspace}"


def app(
    workspace: Path = typer.Option(Path("."), help="Workspace root holding cached_activations/, runs/, analyses/."),
    port: int = typer.Option(8501, help="Local port to serve on."),
) -> None:
    """Open the Streamlit app (Home, Training, Features, Geometry, Circuits, Compare) on a workspace."""
    if not 1 <= port <= 65535:
        typer.secho(f"error: --port {port} is not a TCP port; pick one from 1 to 65535 (e.g. 8501)",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    if not workspace.is_dir():
        typer.secho(f"error: workspace {workspace} is not a folder; create one with `workbench demo --workspace "
                    f"{workspace}`", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    workspace = workspace.resolve()
    typer.echo(f"Serving {workspace} at http://localhost:{port}")
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(workspace)}
    sys.stdout.flush()
    command = app_command_line(workspace, port)
    os.execve(command[0], command, env)  # Streamlit takes this process over: a signal to it stops the server


def register(cli: typer.Typer) -> None:
    cli.command("app")(app)
