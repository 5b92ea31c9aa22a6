"""The demo's analysis stages over a workspace (``workbench demo`` prints their summaries).

``demo_analyses``: dashboards and geometry of the demo's SAE runs over the demo cache;
``demo_circuits``: the demo model's induction and IOI circuits, with feature circuits through the
site SAEs (one per attention and MLP output, where the circuits run) when they exist, else the MFR
pair's first SAE. Each reads and writes the workspace's folders and returns what
it wrote.
"""

from __future__ import annotations

from pathlib import Path

from interp.circuits.prompts import induction_prompts
from interp.models.loading import load_model
from interp.pipeline.circuits import analyze_circuits, ioi_circuit_analysis
from interp.pipeline.evals import EvalReport, evaluate_saes
from interp.pipeline.explain import analyze_explain
from interp.pipeline.sae import analyze_features, analyze_geometry
from interp.store.analysis_folder import AnalysisFolder
from interp.store.names import DEMO_CIRCUIT_SITES, DEMO_RUNS, DEMO_SAE_HOOK, site_run_id  # noqa: F401 - re-exported
from interp.store.run_folder import RunFolder


def site_saes(workspace: Path) -> dict[str, Path]:
    """``{hook: runs/<site run>/sae_0}`` of the site SAEs the workspace holds."""
    found = {hook: RunFolder(workspace / "runs" / site_run_id(hook)).member_path(0) for hook in DEMO_CIRCUIT_SITES}
    return {hook: sae for hook, sae in found.items() if RunFolder.is_sae(sae)}


def demo_analyses(
    workspace: Path, run_ids: tuple[str, ...] = DEMO_RUNS, cache_id: str = "demo"
) -> list[AnalysisFolder]:
    """Dashboards (over ``cached_activations/<cache_id>``) and geometry of every member of ``run_ids``; dashboards
    (labels and links of the feature circuits' nodes) of the site SAEs."""
    out, folders = workspace / "analyses", []
    for run_id in run_ids:
        run = workspace / "runs" / run_id
        folders += analyze_features(run, out, cache_dir=workspace / "cached_activations" / cache_id)
        analyze_geometry(run, out, n_clusters=5, max_features=1000, with_umap=True)
    for sae in site_saes(workspace).values():
        folders += analyze_features(sae.parent, out, cache_dir=workspace / "cached_activations" / cache_id)
    return folders


def demo_explanations(workspace: Path, run_ids: tuple[str, ...] = DEMO_RUNS) -> list[AnalysisFolder]:
    """Offline explanations and their scores for every member of ``run_ids`` (after their dashboards)."""

    model = load_model("demo", device="cpu")
    return [folder for run_id in run_ids
            for folder in analyze_explain(workspace / "runs" / run_id, workspace / "analyses", model_spec=model)]


def demo_circuits(workspace: Path) -> tuple[Path, dict, dict]:
    """Induction (16 prompts, repeated span 20) and IOI (32 prompts) circuits of the demo model, written to
    ``analyses/circuits/{demo,ioi}``; returns that folder and both summaries."""
    model = load_model("demo", device="cpu")
    prompts = induction_prompts(model, 16, 20)
    sites = site_saes(workspace)
    if not sites:  # a workspace from before the site SAEs: the MFR pair's first SAE
        sae = RunFolder(workspace / "runs" / DEMO_RUNS[0]).member_path(0)
        sites = {DEMO_SAE_HOOK: sae} if RunFolder.is_sae(sae) else {}
    out = workspace / "analyses" / "circuits"
    # random-token induction: a position means nothing across prompts, so node effects are summed over positions
    induction = analyze_circuits(
        model,
        prompts.clean,
        prompts.corrupt,
        prompts.metric(),
        prompts.second_copy,
        out / "demo",
        sae_sites=sites,
        over_positions=True,
    )
    ioi = ioi_circuit_analysis(model, 32, out / "ioi", sae_sites=sites)
    return out, induction, ioi


def demo_evaluations(workspace: Path, run_ids: tuple[str, ...] = DEMO_RUNS) -> EvalReport:
    """Every metric of the evaluation suite for every member of ``run_ids`` (resumes what is on disk)."""
    return evaluate_saes([workspace / "runs" / r for r in run_ids], workspace / "analyses", progress=lambda _: None)
