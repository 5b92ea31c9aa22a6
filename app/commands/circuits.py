"""``workbench analyze circuits``: every circuit analysis on a prompt set, written for the app
(the steps are ``interp.pipeline.circuits``; this module parses options and prints).

``induction`` runs on repeated random tokens (the demo model's known circuit), ``ioi`` on IOI
prompts (the demo model's IOI task, or the classic IOI set for GPT-2-style models). Files and columns are documented
in ``interp/CIRCUITS.md``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from app.commands.errors import user_errors


def _prepare(model_spec: str, device: str):
    from interp.models.loading import load_model

    return load_model(model_spec, device=device)


def induction_command(
    model: str = typer.Option(
        "demo", help="Model spec: demo, a TransformerLens name, or a local HF checkpoint directory."
    ),
    out: Path = typer.Option(Path("analyses/circuits/demo"), help="Folder for the result tables."),
    n_prompts: int = typer.Option(16, help="Prompts of repeated random tokens."),
    half_length: int = typer.Option(20, help="Length of the repeated span."),
    sae: Path = typer.Option(
        None,
        help="SAELens SAE folder or saelens:<release>/<sae_id> (local HF cache) for the feature circuit (optional).",
    ),
    sae_hook: str = typer.Option(None, help="Hook the SAE reads; default: its cfg metadata."),
    device: str = typer.Option("cpu", help="Device."),
) -> None:
    """Induction circuit: head scores, composition, SVD tracing, patching (and a feature circuit with --sae)."""
    from interp.circuits.prompts import induction_prompts

    with user_errors():  # CircuitInputError is an InputError
        loaded = _prepare(model, device)
        prompts = induction_prompts(loaded, n_prompts, half_length)
        from interp.pipeline.circuits import analyze_circuits

        summary = analyze_circuits(
            loaded,
            prompts.clean,
            prompts.corrupt,
            prompts.metric(),
            prompts.second_copy,
            out,
            sae_folder=sae,
            sae_hook=sae_hook,
        )
        typer.echo(
            f"circuits: {out} (heads {summary['heads']}, rank agreement {summary['rank_agreement']['spearman']})"
        )


def ioi_command(
    model: str = typer.Option(
        "demo", help="Model spec: demo (its IOI task), a TransformerLens name or a local HF directory."
    ),
    out: Path = typer.Option(Path("analyses/circuits/ioi"), help="Folder for the result tables."),
    n_prompts: int = typer.Option(32, help="IOI prompts (half ABBA, half BABA)."),
    start_layer: int = typer.Option(None, help="Head to trace from (layer); default: the name mover."),
    start_head: int = typer.Option(None, help="Head to trace from (head index)."),
    sae: Path = typer.Option(
        None,
        help="SAELens SAE folder or saelens:<release>/<sae_id> (local HF cache) for the feature circuit (optional).",
    ),
    sae_hook: str = typer.Option(None, help="Hook the SAE reads; default: its cfg metadata."),
    device: str = typer.Option("cpu", help="Device."),
) -> None:
    """IOI: the same analyses on IOI prompts with ABC counterfactuals, traced at END, and the IOI head roles."""
    with user_errors():  # CircuitInputError is an InputError
        loaded = _prepare(model, device)
        start = (start_layer, start_head) if start_layer is not None and start_head is not None else None
        from interp.pipeline.circuits import ioi_circuit_analysis

        summary = ioi_circuit_analysis(loaded, n_prompts, out, start, sae, sae_hook)
        typer.echo(f"circuits: {out} (heads {summary['heads']}, IOI {summary['ioi']})")


def register(analyze_app: typer.Typer) -> None:
    circuits_app = typer.Typer(
        help="Circuit analyses: attention, SVD tracing, patching, feature circuits.", no_args_is_help=True
    )
    circuits_app.command("induction")(induction_command)
    circuits_app.command("ioi")(ioi_command)
    analyze_app.add_typer(circuits_app, name="circuits")


def demo_circuits_step(workspace: Path) -> str:
    """Demo stage: the demo model's induction and IOI circuits (``interp.pipeline.demo``)."""
    from interp.pipeline.demo import demo_circuits

    out, induction, ioi = demo_circuits(workspace)

    def features(summary: dict) -> str:
        circuit = summary.get("feature_circuit")
        if not circuit:
            return "no feature circuit (no SAE)"
        return (
            f"feature circuit of {circuit['nodes']} nodes at {len(circuit['sites'])} sites, {circuit['error_nodes']} "
            f"of them SAE error nodes carrying {circuit['error_share']:.0%} of its |effect|"
        )

    return (
        f"circuits: {out}/demo (previous-token {induction['heads']['previous_token']}, induction "
        f"{induction['heads']['induction']}; {features(induction)}), {out}/ioi (repeated-name head "
        f"{ioi['heads']['s_signal']}, IO-S logit diff {ioi['ioi']['logit_diff']:.2f}, accuracy "
        f"{ioi['ioi']['accuracy']:.0%}; {features(ioi)})"
    )
