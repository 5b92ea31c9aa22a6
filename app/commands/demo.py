"""``workbench demo``: every stage end to end on the embedded default (bundled model and corpus).

Each stage is a function ``step(workspace) -> str`` (a one-line summary of what it wrote); the
stages run in order, with their wall time, and the demo ends by saying where the results are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import typer

from app.commands.analyze import demo_analysis_step
from app.commands.circuits import demo_circuits_step
from app.commands.errors import user_errors

DEMO_HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
DEMO_CACHE_ID = "demo"


def cache_step(workspace: Path, tokens: int) -> str:
    from interp.cache.writer import CacheConfig, build_cache

    config = CacheConfig(model="demo", data="demo", hooks=DEMO_HOOKS, n_tokens=tokens, context_size=128)
    directory = build_cache(config, root=workspace / "cached_activations", cache_id=DEMO_CACHE_ID, device="cpu")
    return f"activation cache: {directory}"


def train_mfr_step(workspace: Path) -> str:
    """An MFR pair of TopK SAEs on the demo cache (about a minute on 2 CPU cores)."""
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    config = TrainConfig(cache=str(workspace / "cached_activations" / DEMO_CACHE_ID), hook=DEMO_HOOKS[1],
                         architecture="topk", d_sae=512, k=16, n_members=2, mfr_coefficient=1.0,
                         mfr_warmup_steps=20, n_tokens=2048 * 120, batch_size=2048, lr=1e-3, log_every=10,
                         checkpoint_every=60, eval_ce_batches=2)
    run = train_saes(config, workspace / "runs" / "demo-mfr", resume=(workspace / "runs" / "demo-mfr" /
                                                                     "config.json").exists())
    members = run.evaluation["members"] if run.evaluation else []
    fvu = ", ".join(f"{m['fvu']:.3f}" for m in members)
    return f"MFR SAE pair: {run.directory} (FVU {fvu}, MMCS {run.evaluation.get('mmcs', float('nan')):.3f})"


def demo_steps(tokens: int) -> list[tuple[str, Callable[[Path], str]]]:
    """The demo's stages, in order (later stages read what earlier ones wrote)."""
    return [
        ("cache activations", lambda workspace: cache_step(workspace, tokens)),
        ("train an MFR pair of SAEs", train_mfr_step),
        ("feature dashboards and geometry", demo_analysis_step),  # needs runs/demo-mfr from the training step
        ("induction circuit analyses", demo_circuits_step),  # uses runs/demo-mfr/sae_0 when present
    ]


def demo(
    workspace: Path = typer.Option(Path("."), help="Workspace root: caches, runs and analyses go below it."),
    tokens: int = typer.Option(262_144, help="Tokens to cache from the bundled corpus."),
) -> None:
    """Run every stage on the bundled demo model and corpus (a few minutes on 2 CPU cores)."""
    workspace.mkdir(parents=True, exist_ok=True)
    summaries = []
    with user_errors():
        for name, step in demo_steps(tokens):
            typer.secho(f"== {name}", bold=True)
            start = time.perf_counter()
            summaries.append(step(workspace))
            typer.echo(f"   {summaries[-1]} ({time.perf_counter() - start:.0f}s)")
    typer.secho("\nDemo complete. Results:", fg=typer.colors.GREEN, bold=True)
    for summary in summaries:
        typer.echo(f"  - {summary}")
    from app.commands.app import open_command

    typer.secho(f"\nOpen the app on these results:\n  {open_command(workspace)}", bold=True)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
