"""``workbench eval``: the evaluation suite (SAEBench's core, sparse probing and absorption, the principled
evaluation on IOI, seed stability) for any SAEs side by side; the steps are ``interp.pipeline.evals``."""

from __future__ import annotations

from pathlib import Path

import typer

from app.commands.errors import user_errors
from interp.store.names import EVAL_METRICS as METRICS


def eval_command(
    sae: list[Path] = typer.Argument(..., help="SAE folders runs/<id>/sae_<i> or run folders (every member)."),
    metrics: str = typer.Option(",".join(METRICS), help=f"Comma-separated, from: {', '.join(METRICS)} (explanations: "
                                                         "the scores of `workbench explain`, where an SAE has them)."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root: <out>/<run_id>/sae_<i>/eval/<metric>.json per SAE, "
                                                   "and one table of every result in <out>."),
    task_file: Path = typer.Option(None, help="Extra sparse-probing task: a .jsonl or .parquet file of text, label."),
    tokens: int = typer.Option(None, help="Tokens for the core reconstruction metrics (default 65,536)."),
    ce_batches: int = typer.Option(None, help="Batches of 8 windows for CE loss and KL (default 4; 0 skips them)."),
    device: str = typer.Option("cpu", help="Device for the model and the SAEs."),
) -> None:
    """Evaluate SAEs and print their headline metrics; a run killed mid-way resumes at the metric it was on."""
    import pandas as pd

    from interp.pipeline.evals import config_from_options, evaluate_saes, headline

    with user_errors():
        chosen = tuple(m.strip() for m in metrics.split(",") if m.strip())
        config = config_from_options(core_tokens=tokens, ce_batches=ce_batches,
                                     task_file=str(task_file) if task_file else None)
        report = evaluate_saes(sae, out, chosen, config, device=device,
                               progress=lambda line: typer.echo(f"== {line}", err=True))
        for note in report.notes:
            typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
        ids = [i for members in report.groups.values() for i in members]
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
            typer.echo(headline(out, ids).to_string(index=False))
        done = len(report.computed)
        typer.echo(f"{done} result(s) computed now, the rest read from disk; table: {report.table}")


def demo_eval_step(workspace: Path) -> str:
    """Demo stage: the whole evaluation suite on the demo's SAEs (``interp.pipeline.demo.demo_evaluations``)."""
    from interp.pipeline.demo import demo_evaluations

    report = demo_evaluations(workspace)
    return f"evaluation suite ({', '.join(METRICS)}) of {sum(map(len, report.groups.values()))} SAEs: {report.table}"


def sweep_command(
    spec: Path = typer.Argument(..., help="Sweep spec (JSON): base config, grid, metrics (see sae_training/sweep.py)."),
    workspace: Path = typer.Option(Path("."), help="Workspace: runs/<sweep run> and analyses/ go below it."),
) -> None:
    """Train a grid of runs on one cache (each resumed after a kill, finished ones skipped) and evaluate them all."""
    import pandas as pd

    from interp.pipeline.evals import headline
    from sae_training.sweep import load_sweep, run_sweep

    with user_errors():
        runs, report = run_sweep(load_sweep(spec), workspace, progress=lambda line: typer.echo(f"== {line}", err=True))
        for note in report.notes:
            typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
        ids = [i for members in report.groups.values() for i in members]
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
            typer.echo(headline(workspace / "analyses", ids).to_string(index=False))
        typer.echo(f"{len(runs)} runs; table: {report.table}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("sweep")(sweep_command)
