"""``workbench analyze features|geometry|eval|compare``: dashboards, concept geometry, principled evaluation
and feature matching between any two SAEs.

Each SAE folder ``runs/<run_id>/sae_<i>`` gets its analyses in ``analyses/<run_id>/sae_<i>/``
(tables: ``interp/ANALYSES.md``). Passing a run folder analyses every member and, for an
ensemble, matches each member's features to the others'; ``compare`` matches any two analysed SAEs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer

from app.commands.errors import user_errors
from interp.errors import InputError


def sae_members(path: Path) -> list[Path]:
    """An SAE folder itself, or every ``sae_*`` member of a run folder."""
    if (path / "cfg.json").exists():
        return [path]
    members = sorted(p for p in path.glob("sae_*") if (p / "cfg.json").exists())
    if not members:
        raise FileNotFoundError(f"{path} is neither a SAELens SAE folder (cfg.json) nor a run with sae_* members")
    return members


def analysis_id(sae_folder: Path) -> str:
    return f"{sae_folder.resolve().parent.name}/{sae_folder.name}"


def run_cache(sae_folder: Path) -> Path:
    """The cache an SAE was trained on, from its run's ``config.json``."""
    config = sae_folder.parent / "config.json"
    if config.exists():
        cache = json.loads(config.read_text()).get("cache")
        if cache:
            return Path(cache)
    raise FileNotFoundError(f"no cache recorded for {sae_folder} (no 'cache' in {config}); pass --cache")


def with_progress(chunks, total_tokens: int, desc: str):
    """Pass ``TokenChunk``s through, advancing a tqdm bar by their tokens."""
    from tqdm.auto import tqdm

    with tqdm(total=total_tokens, desc=desc, unit="tok", unit_scale=True) as bar:
        for chunk in chunks:
            yield chunk
            bar.update(len(chunk.sequence))


def _decoder(model):
    tokenizer = getattr(model, "tokenizer", None) if model is not None else None
    if tokenizer is None:
        return lambda t: f"<{t}>"
    return lambda t: tokenizer.decode([t])


def workspace_relative(path: Path, out_root: Path) -> str:
    """``path`` relative to the workspace (the folder holding ``out_root``, e.g. ``analyses/``) when it lies
    inside it, so a copied workspace still finds it; else absolute."""
    resolved, workspace = path.resolve(), Path(out_root).resolve().parent
    return str(resolved.relative_to(workspace)) if workspace in resolved.parents else str(resolved)


def analyze_features(sae_path: Path, out_root: Path, cache_dir: Path | None = None, hook: str | None = None,
                     model_spec=None, config=None, max_rows: int = 4096, device: str = "cpu",
                     with_logits: bool = True) -> list[Path]:
    """Dashboards (and ensemble matches) for every SAE under ``sae_path``; returns the analysis folders."""
    import torch

    from interp.io import write_json, write_tables
    from interp.cache.store import ActivationCache
    from interp.compare import merge_matches
    from interp.dictionary import check_fits, load_dictionary
    from interp.features import (
        DashboardConfig,
        cache_chunks,
        dashboard_tables,
        feature_dashboards,
        matched_features_table,
    )
    from interp.models import load_model

    config = config or DashboardConfig()
    members = sae_members(sae_path)
    cache_dir = cache_dir or run_cache(members[0])
    cache = ActivationCache(cache_dir)
    model = model_spec if not isinstance(model_spec, (str, type(None))) else (  # a loaded model is used as is
        load_model(model_spec or cache.config["model"], device=device) if with_logits else None)
    decode = _decoder(model)
    folders, decoders = [], []
    for member in members:
        dictionary = load_dictionary(member, device=device)
        site = hook or dictionary.hook_name
        if site is None:
            raise InputError(f"{member}/cfg.json names no hook (metadata.hook_name); pass --hook")
        where = f"hook '{site}' of cache {cache_dir}"
        check_fits(dictionary, cache.d(site), where)
        chunks = with_progress(cache_chunks(cache, site, max_rows), cache.n_tokens, f"dashboards {analysis_id(member)}")
        data = feature_dashboards(dictionary, chunks, config, where)
        W_U = None
        if model is not None and dictionary.d_in == model.cfg.d_model:
            W_U = model.W_U.detach()
        tables = dashboard_tables(data, dictionary.W_dec.detach(), decode, W_U=W_U)
        if data.cooccurrence is not None:
            coo = data.cooccurrence.tocoo()
            tables["cooccurrence_counts"] = pd.DataFrame({"feature": coo.row, "other": coo.col,
                                                          "count": coo.data.astype("int64")})
        folder = write_tables(tables, out_root / analysis_id(member))
        write_json(folder / "meta.json", durable=True, payload={
            "sae": workspace_relative(member, out_root), "cache": workspace_relative(Path(cache_dir), out_root),
            "hook": site,
            "n_tokens": data.n_tokens,
            "n_blocks": data.n_blocks, "d_sae": dictionary.d_sae, "d_in": dictionary.d_in,
            "logits": W_U is not None, "config": {k: v for k, v in vars(config).items()},
        })
        folders.append(folder)
        decoders.append(dictionary.W_dec.detach().to(torch.float32).cpu())
    if len(members) > 1:
        matches = matched_features_table(decoders)
        for member, folder in enumerate(folders):
            mine = matches[matches.member == member].drop(columns="member")
            merge_matches(folder, mine.assign(other_analysis=[analysis_id(members[m]) for m in mine.other_member]))
    return folders


def analyze_geometry(sae_path: Path, out_root: Path, n_clusters: int = 5, max_features: int = 2000,
                     with_umap: bool = True, seed: int = 0) -> list[Path]:
    """Geometry tables for every SAE under ``sae_path``, using co-occurrence counts from its dashboards."""
    import scipy.sparse as sp

    from interp.dictionary import load_dictionary
    from interp.io import write_tables
    from interp.geometry import geometry_tables

    folders = []
    for member in sae_members(sae_path):
        dictionary = load_dictionary(member)
        folder = out_root / analysis_id(member)
        counts, n_blocks = None, 0
        if (folder / "cooccurrence_counts.parquet").exists():
            frame = pd.read_parquet(folder / "cooccurrence_counts.parquet")
            n_blocks = json.loads((folder / "meta.json").read_text())["n_blocks"]
            counts = sp.csr_matrix((frame["count"], (frame.feature, frame.other)),
                                   shape=(dictionary.d_sae, dictionary.d_sae))
        tables = geometry_tables(dictionary.W_dec.detach().float().cpu().numpy(), counts, n_blocks,
                                 n_clusters=n_clusters, max_features=max_features, seed=seed, with_umap=with_umap)
        folders.append(write_tables({f"geometry_{k}": v for k, v in tables.items()}, folder))
    return folders


def analyze_eval(sae_paths: Path | list[Path], out_root: Path, model_spec=None, hook: str | None = None, n_prompts: int = 256,
                 n_values: int = 8, budget: int = 4, device: str = "cpu") -> Path:
    """Principled evaluation (induction task) of every SAE under ``sae_paths`` (e.g. an MFR run and a
    plain one) against the supervised dictionary; writes ``eval_summary.parquet`` and
    ``eval_flags.parquet`` under ``<out>/<run_id of the first>/``."""
    import torch

    from interp.dictionary import load_dictionary
    from interp.io import write_tables
    from interp.models import load_model
    from interp.principled_eval import evaluate_dictionaries, induction_task

    paths = [sae_paths] if isinstance(sae_paths, Path) else list(sae_paths)
    members = [m for path in paths for m in sae_members(path)]
    dictionaries = {analysis_id(m): load_dictionary(m, device=device) for m in members}
    site = hook or next(iter(dictionaries.values())).hook_name
    if site is None:
        raise InputError(f"{members[0]}/cfg.json names no hook (metadata.hook_name); pass --hook")
    if model_spec is None or isinstance(model_spec, str):
        if model_spec is None:
            model_spec = json.loads((run_cache(members[0]) / "manifest.json").read_text())["config"]["model"]
        model = load_model(model_spec, device=device)
    else:
        model = model_spec
    vocab = model.cfg.d_vocab
    candidates = torch.arange(min(100, vocab // 4), min(vocab, 100 + 40 * n_values))
    task = induction_task(candidates, n_prompts, n_values, vocab=vocab)
    summary, flags = evaluate_dictionaries(model, site, task, dictionaries, budget)
    folder = out_root / members[0].resolve().parent.name
    return write_tables({"eval_summary": summary, "eval_flags": flags}, folder)


def analyzed_folder(sae: Path, out_root: Path) -> Path:
    """``<out>/<run_id>/sae_<i>`` of an SAE folder; it must hold dashboards (``features.parquet``)."""
    folder = out_root / analysis_id(sae)
    if not (folder / "features.parquet").exists():
        raise FileNotFoundError(f"{sae} has no dashboards in {folder} (features.parquet); make them with: "
                                f"workbench analyze features runs/{sae.resolve().parent.name}")
    return folder


def analyze_compare(sae_a: Path, sae_b: Path, out_root: Path):
    """Match two analysed SAEs' features both ways and merge the rows into both ``matches.parquet``."""
    from interp.compare import compare_saes

    for sae in (sae_a, sae_b):
        if not (sae / "cfg.json").exists():
            raise FileNotFoundError(f"{sae} is not a SAELens SAE folder (no cfg.json); pass runs/<run_id>/sae_<i>")
    if sae_a.resolve() == sae_b.resolve():
        raise InputError(f"{sae_a} and {sae_b} are the same SAE; pass two different ones")
    return compare_saes(sae_a, sae_b, analyzed_folder(sae_a, out_root), analyzed_folder(sae_b, out_root))


def features_command(
    sae: Path = typer.Argument(..., help="An SAE folder (cfg.json) or a run folder with sae_* members."),
    cache: Path = typer.Option(None, help="Activation cache; default: the one in the run's config.json."),
    hook: str = typer.Option(None, help="Hook name; default: the SAE's metadata.hook_name."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root; results go to <out>/<run_id>/sae_<i>/."),
    model: str = typer.Option(None, help="Model spec for logit effects; default: the cache's model."),
    n_top: int = typer.Option(20, help="Top activating examples kept per feature."),
    cooccurrence: str = typer.Option("sequence", help="Co-occurrence unit: token, sequence or none."),
    no_logits: bool = typer.Option(False, help="Skip logit effects (no model load)."),
    device: str = typer.Option("cpu", help="Device for encoding (cuda batches on the GPU)."),
) -> None:
    """Feature dashboards: statistics, top and quantile examples, histograms, logit effects, labels."""
    from interp.features import DashboardConfig

    with user_errors():
        config = DashboardConfig(n_top=n_top, cooccurrence=None if cooccurrence == "none" else cooccurrence)
        for folder in analyze_features(sae, out, cache, hook, model, config, device=device, with_logits=not no_logits):
            typer.echo(f"dashboards: {folder}")


def geometry_command(
    sae: Path = typer.Argument(..., help="An SAE folder or a run folder with sae_* members."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root (run `analyze features` first for lobes)."),
    clusters: int = typer.Option(5, help="Largest number of clusters for lobes and the map."),
    max_features: int = typer.Option(2000, help="Features used for lobes and crystals (most frequent first)."),
    umap: bool = typer.Option(True, help="Also compute UMAP coordinates (slower)."),
) -> None:
    """Concept geometry: crystals, lobes (AMI vs geometry), galaxy power law and entropy, 2-D maps."""
    with user_errors():
        for folder in analyze_geometry(sae, out, clusters, max_features, umap):
            typer.echo(f"geometry: {folder}")


def eval_command(
    sae: list[Path] = typer.Argument(..., help="SAE or run folders, compared side by side (e.g. MFR vs not)."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root; results go to <out>/<run_id>/eval_*.parquet."),
    model: str = typer.Option(None, help="Model spec; default: the model of the run's cache."),
    hook: str = typer.Option(None, help="Hook name; default: the SAE's metadata.hook_name."),
    prompts: int = typer.Option(256, help="Induction prompts ([BOS] A B filler... A -> B)."),
    budget: int = typer.Option(4, help="Latents an SAE edit may change."),
) -> None:
    """Principled evaluation: supervised dictionary vs each SAE on sufficiency, necessity, control, F1."""
    with user_errors():
        folder = analyze_eval(sae, out, model, hook, prompts, budget=budget)
        typer.echo(pd.read_parquet(folder / "eval_summary.parquet").to_string(index=False))
        typer.echo(f"evaluation: {folder}")


def compare_command(
    sae_a: Path = typer.Argument(..., help="SAE A: an SAE folder runs/<run_id>/sae_<i> (cfg.json)."),
    sae_b: Path = typer.Argument(..., help="SAE B: another SAE folder, of any run, same d_in."),
    out: Path = typer.Option(Path("analyses"), help="Analyses root holding both SAEs' dashboards."),
) -> None:
    """Match any two analysed SAEs' features (Hungarian on decoder cosine, O(d_sae^3)); MMCS both ways."""
    with user_errors():
        result = analyze_compare(sae_a, sae_b, out)
        for note in result.notes:
            typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
        typer.echo(f"MMCS A->B: {result.mmcs_ab:.4f}")
        typer.echo(f"MMCS B->A: {result.mmcs_ba:.4f}")
        for path in result.written:
            typer.echo(f"matches: {path}")


def register(analyze_app: typer.Typer) -> None:
    analyze_app.command("compare")(compare_command)
    analyze_app.command("eval")(eval_command)
    analyze_app.command("features")(features_command)
    analyze_app.command("geometry")(geometry_command)


def demo_analysis_step(workspace: Path, run_ids: tuple[str, ...] = ("demo-mfr", "demo-plain")) -> str:
    """Demo stage: dashboards and geometry of the demo pairs over the demo cache."""
    out, folders = workspace / "analyses", []
    for run_id in run_ids:
        run = workspace / "runs" / run_id
        folders += analyze_features(run, out, cache_dir=workspace / "cached_activations" / "demo")
        analyze_geometry(run, out, n_clusters=5, max_features=1000, with_umap=True)
    return f"dashboards and geometry: {', '.join(str(f) for f in folders)}"
