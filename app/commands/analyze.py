"""``workbench analyze features|geometry|eval|compare``: dashboards, concept geometry, principled evaluation
and feature matching between any two SAEs.

Each SAE folder ``runs/<run_id>/sae_<i>`` gets its analyses in ``analyses/<run_id>/sae_<i>/``
(tables: ``interp/ANALYSES.md``). The steps are ``interp.pipeline.sae``; this module parses options
and prints.
"""

from __future__ import annotations

from pathlib import Path

import typer

from app.commands.errors import user_errors
from interp.store.names import DEMO_RUNS
from interp.store.run_folder import SAE_CONFIG


def features_command(
    sae: Path = typer.Argument(..., help=f"An SAE folder ({SAE_CONFIG}), a run folder with sae_* members, or "
                                           "saelens:<release>/<sae_id> from the local Hugging Face cache."),
    cache: Path = typer.Option(None, help="Activation cache; default: the one recorded in the run's config."),
    hook: str = typer.Option(None, help="Hook name; default: the SAE's metadata.hook_name."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root; results go to <out>/<run_id>/sae_<i>/."),
    model: str = typer.Option(None, help="Model spec for logit effects; default: the cache's model."),
    n_top: int = typer.Option(20, help="Top activating examples kept per feature."),
    cooccurrence: str = typer.Option("sequence", help="Co-occurrence unit: token, sequence or none."),
    no_logits: bool = typer.Option(False, help="Skip logit effects (no model load)."),
    device: str = typer.Option("cpu", help="Device for encoding (cuda batches on the GPU)."),
) -> None:
    """Feature dashboards: statistics, top and quantile examples, histograms, logit effects, labels."""
    from interp.features.dashboards import DashboardConfig
    from interp.pipeline.sae import analyze_features

    with user_errors():
        config = DashboardConfig(n_top=n_top, cooccurrence=None if cooccurrence == "none" else cooccurrence)
        for folder in analyze_features(sae, out, cache, hook, model, config, device=device, with_logits=not no_logits):
            typer.echo(f"dashboards: {folder.path}")


def geometry_command(
    sae: Path = typer.Argument(..., help="An SAE folder or a run folder with sae_* members."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root (run `analyze features` first for lobes)."),
    clusters: int = typer.Option(5, help="Largest number of clusters for lobes and the map."),
    max_features: int = typer.Option(2000, help="Features used for lobes and crystals (most frequent first)."),
    umap: bool = typer.Option(True, help="Also compute UMAP coordinates (slower)."),
) -> None:
    """Concept geometry: crystals, lobes (AMI vs geometry), galaxy power law and entropy, 2-D maps."""
    from interp.pipeline.sae import analyze_geometry

    with user_errors():
        for folder in analyze_geometry(sae, out, clusters, max_features, umap):
            typer.echo(f"geometry: {folder.path}")


def eval_command(
    sae: list[Path] = typer.Argument(
        ..., help="SAE or run folders (or saelens:<release>/<sae_id>), compared side by side (e.g. MFR vs not)."
    ),
    out: Path = typer.Option(Path("analyses"), help="Analyses root; results go to <out>/<run_id>/eval_*.parquet."),
    model: str = typer.Option(None, help="Model spec; default: the model of the run's cache."),
    hook: str = typer.Option(None, help="Hook name; default: the SAE's metadata.hook_name."),
    prompts: int = typer.Option(256, help="Prompts of the task."),
    budget: int = typer.Option(4, help="Latents an SAE edit may change."),
    task: str = typer.Option(
        "induction", help="induction ([BOS] A B filler... A -> B) or ioi (IO, S, position at END)."
    ),
) -> None:
    """Principled evaluation: supervised dictionary vs each SAE on sufficiency, necessity, control, F1."""
    from interp.pipeline.sae import analyze_eval

    with user_errors():
        folder = analyze_eval(sae, out, model, hook, prompts, budget=budget, task=task)
        typer.echo(folder.read_table("eval_summary").to_string(index=False))
        typer.echo(f"evaluation: {folder.path}")


def compare_command(
    sae_a: Path = typer.Argument(..., help=f"SAE A: an SAE folder runs/<run_id>/sae_<i> ({SAE_CONFIG})."),
    sae_b: Path = typer.Argument(..., help="SAE B: another SAE folder, of any run, same d_in."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root holding both SAEs' dashboards."),
) -> None:
    """Match any two analysed SAEs' features (Hungarian on decoder cosine, O(d_sae^3)); MMCS both ways."""
    from interp.pipeline.sae import analyze_compare

    with user_errors():
        result = analyze_compare(sae_a, sae_b, out)
        for note in result.notes:
            typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
        for side, live, every in (
            ("A->B", result.summary_ab, result.mmcs_ab),
            ("B->A", result.summary_ba, result.mmcs_ba),
        ):
            typer.echo(
                f"MMCS {side} over live features: {live['mmcs_live']:.4f} ({live['n_dead']} dead latents, "
                f"{live['live_to_dead']} live features matched to a dead one; over all latents {every:.4f})"
            )
        for path in result.written:
            typer.echo(f"matches: {path}")


def register(analyze_app: typer.Typer) -> None:
    analyze_app.command("compare")(compare_command)
    analyze_app.command("eval")(eval_command)
    analyze_app.command("features")(features_command)
    analyze_app.command("geometry")(geometry_command)


def demo_analysis_step(workspace: Path, run_ids: tuple[str, ...] = DEMO_RUNS) -> str:
    """Demo stage: dashboards and geometry of the demo pairs over the demo cache (``interp.pipeline.demo``)."""
    from interp.pipeline.demo import demo_analyses

    folders = demo_analyses(workspace, run_ids)
    return f"dashboards and geometry: {', '.join(str(f.path) for f in folders)}"
