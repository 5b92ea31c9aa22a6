"""``workbench analyze graph --prompt "..."``: an attribution graph over transcoders (``interp.pipeline.attribution``),
and the demo's step that trains a transcoder for each demo layer and draws the induction and IOI graphs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from app.commands.errors import user_errors

DEMO_TRANSCODER_CACHE = "demo-transcoders"
DEMO_TRANSCODER_TOKENS = 65_536
DEMO_TRANSCODER_STEPS = 300
DEMO_GRAPH_PROMPTS = {  # the circuits page's example prompts: an induction repeat and an IOI sentence
    "induction": "Now is the winter of our discontent made glorious summer by this sun of York. "
                 "Now is the winter of our discontent made glorious summer by this sun of",
    "ioi": "When Romeo and Juliet went to the court, Romeo gave a ring to",
}


def graph_command(
    prompt: str = typer.Option(..., help="The text whose next token is attributed."),
    transcoders: list[Path] = typer.Option(..., "--transcoders", "-t",
                                           help="Transcoder folders or runs of them (one per layer; a layer "
                                                "without one is kept as error nodes)."),
    model: str = typer.Option("demo", help="Model spec the transcoders were trained on."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root; the graph goes to <out>/graphs/<slug>/."),
    slug: str = typer.Option(None, help="Graph name (default: from the prompt)."),
    node_threshold: float = typer.Option(0.8, help="Keep nodes carrying this share of the influence."),
    edge_threshold: float = typer.Option(0.98, help="Keep edges carrying this share of the influence."),
    checks: int = typer.Option(20, help="Top edges verified by intervention."),
    batch_size: int = typer.Option(64, help="Target nodes per backward pass."),
    max_feature_nodes: int = typer.Option(None, help="Keep at most this many active features as nodes, the most "
                                          "influential on the logits (default: every one). Memory then grows with "
                                          "the active features times this cap, not with their square."),
    max_gib: float = typer.Option(None, help="Refuse graphs needing more memory than this (default: what is free)."),
    supernodes: str = typer.Option("decoder,lobes,crystals", help="Supernode groupings, comma-separated: decoder "
                                   "(decoder cosine), lobes / crystals (the transcoders' stored geometry analyses)."),
    device: str = typer.Option("cpu"),
) -> None:
    """Attribution graph of one prompt: exact direct effects over transcoders, pruned, scored, checked."""
    from interp.models.loading import load_model
    from interp.pipeline.attribution import analyze_graph, check_groupings

    def show(estimate: dict) -> None:
        rows = f", target rows {estimate['edge_rows'] / 2**20:,.1f} MiB" if "edge_rows" in estimate else ""
        typer.echo(f"memory estimate: {estimate['total'] / 2**20:,.1f} MiB "
                   f"(adjacency {estimate['adjacency'] / 2**20:,.1f} MiB{rows})")

    from tqdm import tqdm

    bar: list[tqdm] = []

    def progress(done: int, total: int) -> None:  # target rows, one backward pass per batch
        if not bar:
            bar.append(tqdm(total=total, desc="attribution rows", unit="row", file=sys.stderr))
        bar[0].update(done - bar[0].n)

    with user_errors():
        groupings = check_groupings(g.strip() for g in supernodes.split(",") if g.strip())
        loaded = load_model(model, device=device)
        folder, summary = analyze_graph(loaded, transcoders, prompt, out, slug=slug, node_threshold=node_threshold,
                                        edge_threshold=edge_threshold, n_checks=checks, batch_size=batch_size,
                                        max_bytes=None if max_gib is None else int(max_gib * 2**30),
                                        max_feature_nodes=max_feature_nodes, groupings=groupings,
                                        on_estimate=show, on_progress=progress)
    for b in bar:
        b.close()
    typer.echo(describe(summary))
    typer.echo(f"graph: {folder.path}")


def describe(summary: dict) -> str:
    """A few lines: size, scores, checks, the top logit and the top paths into it."""
    check = summary["intervention"]
    top = summary["top_logits"][0] if summary["top_logits"] else {"token": "?", "probability": float("nan")}
    active = summary.get("n_active_features", summary["n_features"])
    features = (f"{summary['n_features']} active features" if active == summary["n_features"] else
                f"{summary['n_features']} of {active} active features (max feature nodes)")
    lines = [(f"{features}, {summary['n_nodes']} nodes; kept {summary['kept_nodes']} "
              f"nodes and {summary['kept_edges']} edges ({summary['attribution_seconds']:.1f}s)"),
             (f"replacement score {summary['replacement_score']:.3f}, completeness score "
              f"{summary['completeness_score']:.3f}; sum of incoming edges = input to "
              f"{summary['max_completeness_residual']:.1e}"),
             (f"interventions on the top edges: replacement model within {check['max_replacement_error']:.1e}, "
              f"real model correlation {check['real_correlation']:.3f}"),
             f"top logit {top['token']!r} (p={top['probability']:.3f}); top paths:"]
    lines += ["  " + path_text(path) for path in summary["top_paths"]]
    groupings = summary.get("supernode_groupings") or {"decoder": {"groups": summary.get("supernodes", []),
                                                                   "notes": []}}
    for by, result in groupings.items():
        groups = result["groups"]
        lines.append(f"supernodes by {by}: {len(groups)}" + "".join(
            f"\n  {len(g['members'])} nodes of layer {g['layer']} (score {g['ratio']:.2f}): "
            f"{', '.join(g['members'][:4])}" + (" ..." if len(g["members"]) > 4 else "")
            for g in groups[:5] if g["ratio"] is not None) + "".join(f"\n  note: {n}" for n in result["notes"]))
    lines += [f"note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def path_text(path: dict) -> str:
    """``a -(w)-> b -(w)-> c``."""
    parts = [path["nodes"][0]]
    for weight, node in zip(path["weights"], path["nodes"][1:]):
        parts.append(f"-({weight:+.2f})-> {node}")
    return " ".join(parts)


def demo_transcoders_step(workspace: Path) -> str:
    """Demo stage: cache both demo layers' MLP inputs and outputs, train a TopK skip transcoder per layer, and
    draw the induction and IOI graphs over them (``analyses/graphs/demo-{induction,ioi}``)."""
    from transformer_lens.utilities import get_act_name

    from interp.cache.writer import CacheConfig, build_cache
    from interp.features.transcoder import transcoder_ce_loss_recovered
    from interp.models.data import batched_windows, token_windows
    from interp.models.loading import load_model
    from interp.pipeline.attribution import analyze_graph
    from interp.store.run_folder import RunFolder
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    hooks = tuple(hook for layer in range(2)
                  for hook in (get_act_name("normalized", layer, "ln2"), get_act_name("mlp_out", layer)))
    cache = build_cache(CacheConfig(model="demo", data="demo", hooks=hooks, n_tokens=DEMO_TRANSCODER_TOKENS,
                                    context_size=128), root=workspace / "cached_activations",
                        cache_id=DEMO_TRANSCODER_CACHE, device="cpu")
    runs, parts = [], []
    for layer in range(2):
        config = TrainConfig(cache=str(cache), hook=get_act_name("normalized", layer, "ln2"),
                             target_hook=get_act_name("mlp_out", layer), skip_connection=True, architecture="topk",
                             d_sae=512, k=16, n_tokens=2048 * DEMO_TRANSCODER_STEPS, batch_size=2048, lr=4e-3,
                             dead_window=50, log_every=20, checkpoint_every=DEMO_TRANSCODER_STEPS, eval_ce_batches=2)
        folder = workspace / "runs" / f"demo-transcoder-L{layer}"
        run = train_saes(config, folder, resume=RunFolder(folder).exists(), progress=False)
        member = (run.evaluation or {}).get("members", [{}])[0]
        parts.append(f"L{layer} FVU {member.get('fvu', float('nan')):.3f}, L0 {member.get('l0', float('nan')):.1f}")
        runs.append(run)
    model = load_model("demo", device="cpu")
    windows = token_windows("demo", model.tokenizer, 128, seed=12345, max_windows=16)
    tokens = next(iter(batched_windows(windows, 16)))
    both = transcoder_ce_loss_recovered(model, [run.member(0) for run in runs], tokens)
    summaries = []
    for name, prompt in DEMO_GRAPH_PROMPTS.items():
        _, summary = analyze_graph(model, [run.directory for run in runs], prompt, workspace / "analyses",
                                   slug=f"demo-{name}")
        path = path_text(summary["top_paths"][0]) if summary["top_paths"] else "none"
        summaries.append(f"{name}: replacement {summary['replacement_score']:.2f}, completeness "
                         f"{summary['completeness_score']:.2f}, top path {path}")
    return (f"transcoders ({'; '.join(parts)}; CE recovered with both MLPs replaced "
            f"{both['ce_loss_recovered']:.3f}); graphs: {' | '.join(summaries)}")


def register(analyze_app: typer.Typer) -> None:
    analyze_app.command("graph")(graph_command)
