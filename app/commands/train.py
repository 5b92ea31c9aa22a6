"""``workbench train``: train an SAE ensemble (optionally under MFR) from a cache or a live model;
``workbench bench synthetic``: the planted-feature benchmark, MFR against no MFR, JSON out."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from app.commands.errors import removed_on_failure, user_errors
from app.commands.units import parse_tokens


def train(
    cache: Path = typer.Option(None, help="Activation cache directory (cached_activations/<id>)."),
    model: str = typer.Option(None, help="Train on live activations of this model spec instead of a cache."),
    hook: str = typer.Option("blocks.1.hook_resid_post", help="TransformerLens hook name."),
    arch: str = typer.Option("topk", help="relu | topk | batchtopk | jumprelu"),
    d_sae: int = typer.Option(4096, "--d-sae"),
    k: int = typer.Option(32, help="Active latents per token (TopK / BatchTopK)."),
    k_schedule: str = typer.Option("constant", help="constant | multiply (member i gets k*(i+1), as the MFR code)."),
    ensemble: int = typer.Option(1, help="Number of SAEs trained together (K)."),
    mfr: float = typer.Option(0.0, help="MFR coefficient lambda (needs --ensemble >= 2)."),
    mfr_warmup: int = typer.Option(100, help="MFR cosine warm-up steps."),
    tokens: str = typer.Option("10M", help="Training tokens, e.g. 10M."),
    batch_size: int = typer.Option(4096),
    lr: float = typer.Option(3e-4),
    sparsity: float = typer.Option(0.0, help="L1 (relu) or L0 (jumprelu) coefficient."),
    run_id: str = typer.Option(None, help="Run folder name under --runs (default: derived from the config)."),
    runs: Path = typer.Option(Path("runs"), help="Where runs are written."),
    resume: bool = typer.Option(False, help="Continue the run in --run-id from its last checkpoint."),
    resume_from: Path = typer.Option(None, help="Continue the run in this folder with its saved config.json "
                                                "(other options are ignored)."),
    checkpoint_every: int = typer.Option(1000),
    device: str = typer.Option("cpu"),
    wandb_project: str = typer.Option(None, help="Log to Weights & Biases (needs wandb installed)."),
) -> None:
    """Train SAEs; writes runs/<run_id>/ (config.json, metrics.jsonl, checkpoints/, sae_<i>/, eval.json)."""
    from interp.names import check_name
    from sae_training.config import TrainConfig
    from sae_training.trainer import TrainingError, default_run_dir, train_saes

    with user_errors(TrainingError):
        if resume_from is not None:
            if not (resume_from / "config.json").exists():
                raise FileNotFoundError(f"{resume_from} holds no config.json: not a run folder to resume")
            config, run_dir, resume = TrainConfig.load(resume_from / "config.json"), resume_from.resolve(), True
        else:
            config = TrainConfig(cache=str(cache) if cache else None, model=model, hook=hook, architecture=arch,
                                 d_sae=d_sae, k=k, k_schedule=k_schedule, n_members=ensemble, mfr_coefficient=mfr,
                                 mfr_warmup_steps=mfr_warmup, n_tokens=parse_tokens(tokens), batch_size=batch_size,
                                 lr=lr, sparsity_coefficient=sparsity, checkpoint_every=checkpoint_every,
                                 device=device, wandb_project=wandb_project)
            run_dir = runs / check_name(run_id, "run id") if run_id is not None else default_run_dir(config, runs)
        with removed_on_failure(run_dir, keep=lambda folder: any((folder / "checkpoints").glob("*"))):
            run = train_saes(config, run_dir, resume=resume)
        if run.step < config.n_steps:
            typer.echo(f"stopped at step {run.step} of {config.n_steps} (checkpointed); continue with "
                       f"`workbench train --resume-from {run.directory}`")
            return
        typer.echo(f"run written to {run.directory}")
        if run.evaluation:
            for i, member in enumerate(run.evaluation["members"]):
                typer.echo(f"  sae_{i}: fvu {member['fvu']:.4f}  l0 {member['l0']:.1f}  "
                           f"dead {member['dead_fraction']:.3f}")


def bench_synthetic(
    seeds: int = typer.Option(3, help="Seeds per setting."),
    steps: int = typer.Option(300, help="Training steps per run (equal compute with and without MFR)."),
    mfr: float = typer.Option(3.0, help="MFR coefficient (the paper's synthetic config uses 3)."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Planted features (PAPERS.md §1.5): SAEs with and without MFR, MMCS to truth, recovery, FVU, L0."""
    from sae_training.synthetic import SyntheticBenchmark, run_benchmark

    with user_errors():
        result = run_benchmark(SyntheticBenchmark(n_seeds=seeds, steps=steps, mfr_coefficient=mfr))
        text = json.dumps(result, indent=2)
        typer.echo(text)
        if out:
            out.write_text(text)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("train")(train)
    bench_app.command("synthetic")(bench_synthetic)
