"""``workbench analyze explain``: every feature of an SAE explained and scored, offline (an LLM optional).

The step is ``interp.pipeline.explain``; this module parses options and prints a summary per SAE.
"""

from __future__ import annotations

from pathlib import Path

import typer

from app.commands.errors import user_errors
from interp.store.errors import InputError
from interp.store.run_folder import SAE_CONFIG


def explain_command(
    sae: Path = typer.Argument(..., help=f"An SAE folder ({SAE_CONFIG}) or a run folder with sae_* members."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root holding the SAE's dashboards (run "
                             "`workbench analyze features` first); explanations go beside them."),
    cache: Path = typer.Option(None, help="Activation cache; default: the one recorded in the run's config."),
    hook: str = typer.Option(None, help="Hook name; default: the one the dashboards used."),
    model: str = typer.Option(None, help="Model spec for token texts; default: the cache's model."),
    chunk: int = typer.Option(256, help="Features per resumable chunk."),
    force: bool = typer.Option(False, help="Start over instead of resuming or reusing a finished run."),
    device: str = typer.Option("cpu", help="Device for the example pass."),
) -> None:
    """Explanations (the best token rule per feature) with detection, fuzzing and simulation scores on
    held-out windows, each beside a random-explanation baseline."""
    from interp.pipeline.explain import analyze_explain, summary

    with user_errors():
        if chunk < 1:
            raise InputError(f"--chunk must be at least 1, got {chunk}")
        for folder in analyze_explain(sae, out, cache_dir=cache, hook=hook, model_spec=model, chunk_features=chunk,
                                      force=force, device=device, progress=True):
            typer.echo(f"explanations: {folder.path} ({summary(folder)})")


def demo_explain_step(workspace: Path) -> str:
    """Demo stage: offline explanations and scores of the demo pairs (``interp.pipeline.demo``)."""
    from interp.pipeline.demo import demo_explanations
    from interp.pipeline.explain import summary

    return "explanations: " + "; ".join(f"{folder.id} ({summary(folder)})" for folder in demo_explanations(workspace))
