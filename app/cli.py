"""The ``workbench`` command line: one command per stage, each a thin wrapper over a Python API.

Stages: ``cache`` (activations to disk), ``train`` (SAEs, MFR ensembles), ``analyze``
(features, geometry, evaluation, circuits), ``bench`` (benchmarks), ``app`` (Streamlit),
``export`` (Neuronpedia), ``demo`` (everything on the embedded default). Sub-commands live in ``app/commands/``.
"""

from __future__ import annotations

import typer

from app.commands import analyze as analyze_commands
from app.commands import app as app_commands
from app.commands import cache as cache_commands
from app.commands import circuits as circuits_commands
from app.commands import demo as demo_commands
from app.commands import evals as evals_commands
from app.commands import explain as explain_commands
from app.commands import export as export_commands
from app.commands import graph as graph_commands
from app.commands import live as live_commands
from app.commands import train as train_commands

app = typer.Typer(
    name="workbench",
    help="Mechanistic-interpretability workbench: cache activations, train SAEs (MFR), analyse, explore.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
analyze_app = typer.Typer(
    help="Analyses over caches and SAEs: features, geometry, eval, circuits.", no_args_is_help=True
)
bench_app = typer.Typer(help="Benchmarks against the peer libraries, JSON out.", no_args_is_help=True)

cache_commands.register(app)
demo_commands.register(app)
evals_commands.register(app)
app_commands.register(app)
export_commands.register(app)
live_commands.register(app)
analyze_commands.register(analyze_app)
circuits_commands.register(analyze_app)
graph_commands.register(analyze_app)
analyze_app.command("explain")(explain_commands.explain_command)
train_commands.register(app, bench_app)
app.add_typer(analyze_app, name="analyze")
app.add_typer(bench_app, name="bench")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
