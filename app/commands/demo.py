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


DEMO_SAE_STEPS = 400  # measured: FVU improves < 1 % relative over the last fifth of these steps at lr 4e-3


DEMO_SEEDS = {"demo-mfr": 0, "demo-plain": 1}  # different seeds: a cross-run match then measures learning, not a shared init


def demo_train_config(workspace: Path, mfr_coefficient: float, seed: int = 0):
    """The demo's SAE pair: 2 TopK SAEs of 512 latents (k 16) on layer 1's residual stream, from ``seed``."""
    from sae_training.config import TrainConfig

    return TrainConfig(cache=str(workspace / "cached_activations" / DEMO_CACHE_ID), hook=DEMO_HOOKS[1],
                       architecture="topk", d_sae=512, k=16, n_members=2, mfr_coefficient=mfr_coefficient,
                       mfr_warmup_steps=20, n_tokens=2048 * DEMO_SAE_STEPS, batch_size=2048, lr=4e-3,
                       log_every=10, mmcs_log_every=50, checkpoint_every=100, eval_ce_batches=2, seed=seed)


def last_fifth_improvement(metrics: list[dict]) -> float:
    """Relative FVU improvement over the last fifth of the logged steps (flat below ~5 %)."""
    fvus = [(row["step"], float(row["fvu"])) for row in metrics if isinstance(row.get("fvu"), (int, float))]
    if len(fvus) < 5:
        return float("nan")
    last_step = fvus[-1][0]
    before = [fvu for step, fvu in fvus if step <= 0.8 * last_step][-1]
    return (before - fvus[-1][1]) / before


def train_pair_step(workspace: Path, run_id: str, mfr_coefficient: float) -> str:
    """Train (or resume) one demo pair and summarise its evaluation."""
    from interp.store.run_folder import RunFolder
    from sae_training.trainer import train_saes

    folder = workspace / "runs" / run_id
    run = train_saes(demo_train_config(workspace, mfr_coefficient, DEMO_SEEDS.get(run_id, 0)), folder, resume=RunFolder(folder).exists())
    evaluation = run.evaluation or {}
    members = evaluation.get("members", [])
    metrics = RunFolder(folder).metrics_rows()
    stats = "; ".join(
        f"sae_{i}: FVU {m['fvu']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%}, CE recovered "
        f"{m.get('ce_loss_recovered', float('nan')):.3f}" for i, m in enumerate(members))
    return (f"{run_id}: {run.directory} ({stats}; MMCS {evaluation.get('mmcs', float('nan')):.3f}; "
            f"FVU improved {last_fifth_improvement(metrics):.1%} over the last fifth of steps)")


def compare_step(workspace: Path) -> str:
    """Match the MFR pair's first member against the plain pair's first member (the Compare page)."""
    from interp.pipeline import analyze_compare

    result = analyze_compare(workspace / "runs" / "demo-mfr" / "sae_0", workspace / "runs" / "demo-plain" / "sae_0",
                             workspace / "analyses")
    return f"compare: demo-mfr/sae_0 vs demo-plain/sae_0 (MMCS {result.mmcs_ab:.3f} / {result.mmcs_ba:.3f})"


def demo_steps(tokens: int) -> list[tuple[str, Callable[[Path], str]]]:
    """The demo's stages, in order (later stages read what earlier ones wrote)."""
    return [
        ("cache activations", lambda workspace: cache_step(workspace, tokens)),
        ("train an MFR pair of SAEs", lambda workspace: train_pair_step(workspace, "demo-mfr", 1.0)),
        ("train a pair without MFR (same size, for Compare)", lambda workspace: train_pair_step(workspace, "demo-plain", 0.0)),
        ("feature dashboards and geometry", demo_analysis_step),  # needs both runs from the training steps
        ("compare MFR vs no MFR", compare_step),
        ("induction and IOI circuit analyses", demo_circuits_step),  # uses runs/demo-mfr/sae_0 when present
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
