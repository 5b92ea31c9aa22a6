"""``workbench export neuronpedia``: an SAE's dashboards, explanations and scores in the layout Neuronpedia's bulk
import reads; the step is ``interp.pipeline.export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.commands.errors import user_errors
from interp.store.neuronpedia_export import FALLBACK_CREATOR_ID


def neuronpedia_command(
    sae: Annotated[Path, typer.Argument(help="An SAE folder runs/<id>/sae_<i>, a run folder (every member) or "
                                             "saelens:<release>/<sae_id>, with dashboards made.")],
    analyses: Annotated[Path, typer.Option(help="Analyses root with the SAE's dashboards and explanations.")] = Path(
        "analyses"),
    out: Annotated[Path, typer.Option(help="Export root: <out>/<modelId>/<layer>-<source set>/.")] = Path(
        "exports/neuronpedia"),
    model_id: Annotated[str | None, typer.Option(help="Neuronpedia model id; default: the cache's model.")] = None,
    source_set: Annotated[str | None, typer.Option(help="Source set name; default: the SAE's id, e.g. "
                                                        "demo-mfr-sae-0.")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer of the source; default: the hook's (blocks.<n>.…).")] = None,
    creator_id: Annotated[str, typer.Option(help="Neuronpedia user id recorded as creator.")] = FALLBACK_CREATOR_ID,
    creator_name: Annotated[str, typer.Option(help="Creator name shown on the release.")] = "workbench",
    release: Annotated[str, typer.Option(help="Release name (letters, digits, dashes).")] = "workbench",
    batch_features: Annotated[int, typer.Option(help="Features per batch file.")] = 1024,
) -> None:
    """Write features (activation histogram, logits, neighbours), top and quantile examples with per-token
    activations, explanations and their scores; print each source's folder and row counts."""
    from interp.pipeline.export import ExportOptions, export_neuronpedia

    with user_errors():
        options = ExportOptions(model_id=model_id, source_set=source_set, layer=layer, creator_id=creator_id,
                                creator_name=creator_name, release=release, batch_features=batch_features)
        for export in export_neuronpedia(sae, analyses, out, options):
            counts = {kind: len(rows) for kind, rows in export.read().items()
                      if kind in ("features", "activations", "explanations", "explanation_scores")}
            typer.echo(f"neuronpedia: {export.path} (" + ", ".join(f"{n} {k}" for k, n in counts.items()) + ")")


def register(app: typer.Typer) -> None:
    export_app = typer.Typer(help="Export results for other tools: neuronpedia.", no_args_is_help=True)
    export_app.command("neuronpedia")(neuronpedia_command)
    app.add_typer(export_app, name="export")
