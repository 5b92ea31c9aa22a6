"""``workbench demo``: every stage end to end on the embedded default (bundled model and corpus).

Each stage is a function ``step(workspace) -> str`` (a one-line summary of what it wrote); the
stages run in order, with their wall time, and the demo ends by saying where the results are. SIGTERM
and SIGINT stop it at once at any stage (training checkpoints first) with one line saying how to resume:
rerunning the same command continues from what was written.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from app.commands.analyze import demo_analysis_step
from app.commands.circuits import demo_circuits_step
from app.commands.errors import user_errors
from app.commands.evals import demo_eval_step
from app.commands.explain import demo_explain_step
from app.commands.graph import demo_transcoders_step
from interp.store.jobs import STOPPED_EXIT
from interp.store.names import DEMO_CIRCUIT_SITES, site_run_id


class DemoStopped(Exception):
    """A signal stopped the demo; the message says where."""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """SIGTERM raises in the main thread as Ctrl-C does (the trainer's own handler checkpoints first, then
    ``train_pair_step`` raises ``DemoStopped``); yields the list of signals received."""
    received: list[int] = []

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


# the pairs read layer 1's residual stream; the site SAEs of the feature circuits read the rest (one cache pass)
DEMO_HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post", *DEMO_CIRCUIT_SITES)
DEMO_CACHE_ID = "demo"


def cache_step(workspace: Path, tokens: int) -> str:
    from interp.cache.writer import CacheConfig, build_cache

    config = CacheConfig(model="demo", data="demo", hooks=DEMO_HOOKS, n_tokens=tokens, context_size=128)
    directory = build_cache(config, root=workspace / "cached_activations", cache_id=DEMO_CACHE_ID, device="cpu")
    return f"activation cache: {directory}"


DEMO_SAE_STEPS = 400  # measured: FVU improves < 1 % relative over the last fifth of these steps at lr 4e-3


DEMO_SEEDS = {
    "demo-mfr": 0,
    "demo-plain": 1,
}  # different seeds: a cross-run match then measures learning, not a shared init


def demo_topk_config(workspace: Path, hook: str, d_sae: int, k: int, steps: int, seed: int, **extra):
    """A TopK training config on the demo cache with the demo's shared settings (batch 2,048, lr 4e-3, logging,
    checkpoints); ``extra`` sets the rest (members, MFR, MMCS logging)."""
    from sae_training.config import TrainConfig

    return TrainConfig(cache=str(workspace / "cached_activations" / DEMO_CACHE_ID), hook=hook, architecture="topk",
                       d_sae=d_sae, k=k, n_tokens=2048 * steps, batch_size=2048, lr=4e-3, log_every=10,
                       checkpoint_every=100, eval_ce_batches=2, seed=seed, **extra)


def demo_train_config(workspace: Path, mfr_coefficient: float, seed: int = 0):
    """The demo's SAE pair: 2 TopK SAEs of 512 latents (k 16) on layer 1's residual stream, from ``seed``."""
    return demo_topk_config(workspace, DEMO_HOOKS[1], 512, 16, DEMO_SAE_STEPS, seed, n_members=2,
                            mfr_coefficient=mfr_coefficient, mfr_warmup_steps=20, mmcs_log_every=50)


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
    config = demo_train_config(workspace, mfr_coefficient, DEMO_SEEDS.get(run_id, 0))
    run = train_saes(config, folder, resume=RunFolder(folder).exists())
    if run.step < config.n_steps:  # the trainer got SIGTERM: it checkpointed and returned early
        raise DemoStopped(f"training {run_id} stopped at step {run.step} of {config.n_steps} (checkpointed)")
    evaluation = run.evaluation or {}
    members = evaluation.get("members", [])
    metrics = RunFolder(folder).metrics_rows()
    stats = "; ".join(
        f"sae_{i}: FVU {m['fvu']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%}, CE recovered "
        f"{m.get('ce_loss_recovered', float('nan')):.3f}"
        for i, m in enumerate(members)
    )
    return (
        f"{run_id}: {run.directory} ({stats}; MMCS over all latents {evaluation.get('mmcs', float('nan')):.3f}; "
        f"FVU improved {last_fifth_improvement(metrics):.1%} over the last fifth of steps)"
    )


# one SAE per site, 300 steps. Layer 0's two sites carry the IOI circuit's name signal: at 512 latents (k 16)
# their error nodes carried 0.69 of the IOI feature circuit's |effect|, at 2,048 latents (k 32) 0.46 (measured on
# the demo workspace, README), for about two minutes more of the demo on 2 cores; layer 1's sites keep 512 (k 16)
DEMO_SITE_STEPS = 300
DEMO_SITE_SHAPES = {  # hook -> (d_sae, k)
    "blocks.0.hook_attn_out": (2048, 32),
    "blocks.0.hook_mlp_out": (2048, 32),
    "blocks.1.hook_attn_out": (512, 16),
    "blocks.1.hook_mlp_out": (512, 16),
}


def site_config(workspace: Path, hook: str):
    """The demo's training config of the SAE at ``hook`` (``DEMO_SITE_SHAPES``)."""
    d_sae, k = DEMO_SITE_SHAPES[hook]
    return demo_topk_config(workspace, hook, d_sae, k, DEMO_SITE_STEPS, seed=2, mmcs_log_every=1000)


def train_sites_step(workspace: Path) -> str:
    """Train (or resume) one SAE at each feature-circuit site (each layer's attention and MLP outputs). A site run
    an earlier demo made with another shape is finished as it was made (its saved config), and said so."""
    from interp.store.run_folder import RunFolder
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    parts = []
    for hook in DEMO_CIRCUIT_SITES:
        folder = RunFolder(workspace / "runs" / site_run_id(hook))
        config = site_config(workspace, hook)
        note = ""
        if folder.exists():
            saved = TrainConfig.load(folder.config_path)
            if (saved.d_sae, getattr(saved.options, "k", None)) != (config.d_sae, getattr(config.options, "k", None)):
                config, note = saved, f" (kept as an earlier demo made it: {saved.d_sae} latents)"
        member = (train_saes(config, folder.path, resume=folder.exists()).evaluation or {}).get("members", [{}])[0]
        parts.append(
            f"{hook}: FVU {member.get('fvu', float('nan')):.3f}, dead {member.get('dead_fraction', float('nan')):.1%}"
            + note
        )
    return "site SAEs (runs/demo-site-*): " + "; ".join(parts)


def compare_step(workspace: Path) -> str:
    """Match the MFR pair's first member against the plain pair's first member (the Compare page), and say how
    much each pair's two members share: MMCS over live features, dead latents apart (trained from different
    seeds, so the cross-run figure measures learned agreement, not a shared initialisation)."""
    from interp.features.compare import match_summary
    from interp.pipeline import analyze_compare
    from interp.store.analysis_folder import AnalysisFolder

    result = analyze_compare(
        workspace / "runs" / "demo-mfr" / "sae_0", workspace / "runs" / "demo-plain" / "sae_0", workspace / "analyses"
    )
    within = []
    for run_id in ("demo-mfr", "demo-plain"):
        matches = AnalysisFolder(workspace / "analyses" / run_id / "sae_0").read_table("matches")
        s = match_summary(matches[matches.other_analysis == f"{run_id}/sae_1"])
        within.append(
            f"{run_id} sae_0 vs sae_1: MMCS over live {s['mmcs_live']:.3f} ({s['share_live_above_0.7']:.0%} "
            f"above 0.7, {s['share_live_above_0.9']:.0%} above 0.9; {s['n_dead']} dead, {s['live_to_dead']} "
            f"live matched to a dead latent; all latents {s['mmcs_all']:.3f})"
        )
    cross = result.summary_ab
    return (
        f"compare: {'; '.join(within)}; across runs demo-mfr/sae_0 vs demo-plain/sae_0: MMCS over live "
        f"{cross['mmcs_live']:.3f} / {result.summary_ba['mmcs_live']:.3f}"
    )


def demo_steps(tokens: int) -> list[tuple[str, Callable[[Path], str]]]:
    """The demo's stages, in order (later stages read what earlier ones wrote)."""
    return [
        ("cache activations", lambda workspace: cache_step(workspace, tokens)),
        ("train an MFR pair of SAEs", lambda workspace: train_pair_step(workspace, "demo-mfr", 1.0)),
        (
            "train a pair without MFR (same size, for Compare)",
            lambda workspace: train_pair_step(workspace, "demo-plain", 0.0),
        ),
        ("train one SAE per feature-circuit site", train_sites_step),
        ("feature dashboards and geometry", demo_analysis_step),  # needs both runs from the training steps
        ("compare MFR vs no MFR", compare_step),
        ("explain and score every feature (offline)", demo_explain_step),  # needs the dashboards
        ("induction and IOI circuit analyses", demo_circuits_step),  # uses runs/demo-mfr/sae_0 when present
        ("evaluation suite (SAEBench metrics, principled, seed stability)", demo_eval_step),  # needs both runs
    ]


def demo(
    workspace: Path = typer.Option(Path("."), help="Workspace root: caches, runs and analyses go below it."),
    tokens: int = typer.Option(262_144, help="Tokens to cache from the bundled corpus."),
    transcoders: bool = typer.Option(True, "--transcoders/--no-transcoders",
                                     help="Train a transcoder per layer and draw the induction and IOI attribution "
                                          "graphs (about 70 s on one loaded core); --no-transcoders skips them."),
) -> None:
    """Run every stage on the bundled demo model and corpus (about 10 minutes on 2 CPU cores)."""
    summaries = []
    with user_errors(), stop_on_signals() as received:
        if workspace.exists() and not workspace.is_dir():
            raise FileExistsError(f"workspace {workspace} is a file, not a folder; pass another --workspace")
        workspace.mkdir(parents=True, exist_ok=True)
        name = "start"
        try:
            extra = [("transcoders and attribution graphs", demo_transcoders_step)] if transcoders else []
            for name, step in demo_steps(tokens) + extra:
                typer.secho(f"== {name}", bold=True)
                start = time.perf_counter()
                summaries.append(step(workspace))
                typer.echo(f"   {summaries[-1]} ({time.perf_counter() - start:.0f}s)")
        except (KeyboardInterrupt, DemoStopped) as stop:
            how = "SIGTERM" if received or isinstance(stop, DemoStopped) else "SIGINT"
            where = f"{stop}" if isinstance(stop, DemoStopped) else f"during '{name}'"
            typer.secho(f"stopped by {how}: {where}; run `workbench demo --workspace {workspace}` again to resume",
                        fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(code=STOPPED_EXIT if how == "SIGTERM" else 130) from None
    typer.secho("\nDemo complete. Results:", fg=typer.colors.GREEN, bold=True)
    for summary in summaries:
        typer.echo(f"  - {summary}")
    from app.commands.app import open_command

    typer.secho(f"\nOpen the app on these results:\n  {open_command(workspace)}", bold=True)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
