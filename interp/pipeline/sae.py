"""Pipeline steps on SAEs: dashboards, geometry, principled evaluation and matching, each written to the
SAE's ``AnalysisFolder`` (``<out>/<run_id>/sae_<i>/``; tables in ``interp/ANALYSES.md``).

Passing a run folder analyses every member and, for an ensemble, matches each member's features to
the others'; ``analyze_compare`` matches any two analysed SAEs. The CLI (``workbench analyze ...``),
the demo, benchmarks and notebooks call these functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch

from interp.cache.store import CacheFolder, cache_chunks
from interp.circuits.prompts import ioi_task
from interp.features.compare import match_frames
from interp.features.dashboards import DashboardConfig, dashboard_tables, feature_dashboards
from interp.features.dictionary import check_fits, load_dictionary
from interp.features.geometry import geometry_tables
from interp.features.principled_eval import evaluate_dictionaries, induction_task
from interp.models.loading import load_model
from interp.pipeline.compare import compare_saes, merge_matches
from interp.store.analysis_folder import COUNTS, AnalysisFolder, IncompleteAnalysisError, analysis_id
from interp.store.errors import InputError
from interp.store.locks import writing
from interp.store.names import is_release_spec
from interp.store.run_folder import SAE_CONFIG, RunFolder, sae_members  # noqa: F401  (sae_members: part of this API)


@contextlib.contextmanager
def writing_analyses(folders: list[AnalysisFolder]) -> Iterator[None]:
    """Hold every folder's writer lock (before any computing: a second analysis of the same SAE is refused at
    once, and an unwritable place fails before the work, not after it)."""
    with contextlib.ExitStack() as stack:
        for folder in folders:
            stack.enter_context(writing(folder.path, "analysis"))
        yield


def run_cache(sae_folder: Path) -> Path:
    """The cache an SAE was trained on, from its run's config."""
    return RunFolder(Path(sae_folder).parent).cache(for_what=str(sae_folder))


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
    inside it, so a copied workspace still finds it; else absolute. A ``saelens:`` spec stays as it is."""
    if is_release_spec(path):
        return str(path)
    resolved, workspace = path.resolve(), Path(out_root).resolve().parent
    return str(resolved.relative_to(workspace)) if workspace in resolved.parents else str(resolved)


def analyze_features(sae_path: Path, out_root: Path, cache_dir: Path | None = None, hook: str | None = None,
                     model_spec=None, config=None, max_rows: int = 4096, device: str = "cpu",
                     with_logits: bool = True) -> list[AnalysisFolder]:
    """Dashboards (and ensemble matches) for every SAE under ``sae_path``; returns their analysis folders.

    ``model_spec``: a loaded model, a model spec, or None for the cache's model (logit effects)."""
    if cache_dir is None and is_release_spec(sae_path):
        raise InputError(f"{sae_path} was not trained here, so no cache is recorded for it; pass --cache "
                         "(a cache of the SAE's hook on its model)")
    members = sae_members(Path(sae_path))
    with writing_analyses([AnalysisFolder.of_sae(out_root, member) for member in members]):
        return _analyze_features(members, out_root, cache_dir, hook, model_spec, config, max_rows, device, with_logits)


def _analyze_features(members: list[Path], out_root: Path, cache_dir: Path | None, hook: str | None, model_spec,
                      config, max_rows: int, device: str, with_logits: bool) -> list[AnalysisFolder]:
    """Dashboards of ``members`` (the caller holds their folders' locks)."""
    config = config or DashboardConfig()
    cache_dir = cache_dir or run_cache(members[0])
    cache = CacheFolder(cache_dir)
    model = model_spec if not isinstance(model_spec, (str, type(None))) else (  # a loaded model is used as is
        load_model(model_spec or cache.config["model"], device=device) if with_logits else None)
    decode = _decoder(model)
    folders, decoders, live = [], [], []
    for member in members:
        dictionary = load_dictionary(member, device=device)
        site = hook or dictionary.hook_name
        if site is None:
            raise InputError(f"{member}/{SAE_CONFIG} names no hook (metadata.hook_name); pass --hook")
        where = f"hook '{site}' of cache {cache_dir}"
        check_fits(dictionary, cache.d(site), where)
        chunks = with_progress(cache_chunks(cache, site, max_rows), cache.n_tokens, f"dashboards {analysis_id(member)}")
        data = feature_dashboards(dictionary, chunks, config, where, progress=True)
        W_U = None
        if model is not None and dictionary.d_in == model.cfg.d_model:
            W_U = model.W_U.detach()
        tables = dashboard_tables(data, dictionary.W_dec.detach(), decode, W_U=W_U)
        if data.cooccurrence is not None:
            coo = data.cooccurrence.tocoo()
            tables["cooccurrence_counts"] = pd.DataFrame({"feature": coo.row, "other": coo.col,
                                                          "count": coo.data.astype("int64")})
        folder = AnalysisFolder.of_sae(out_root, member)
        folder.write_analysis("dashboards", tables, {
            "sae": workspace_relative(member, out_root), "cache": workspace_relative(Path(cache_dir), out_root),
            "hook": site,
            "n_tokens": data.n_tokens,
            "n_blocks": data.n_blocks, "d_sae": dictionary.d_sae, "d_in": dictionary.d_in,
            "logits": W_U is not None, "config": {k: v for k, v in vars(config).items()},
        })
        folders.append(folder)
        decoders.append(dictionary.W_dec.detach().to(torch.float32))  # matched on the device
        live.append(tables["features"].sort_values("feature").n_fires.to_numpy() > 0)
    ids = [analysis_id(member) for member in members]
    for a in range(len(members)):  # each pair once, read both ways; dead latents matched apart
        for b in range(a + 1, len(members)):
            ab, ba = match_frames(decoders[a], decoders[b], ids[a], ids[b], live[a], live[b])
            merge_matches(folders[a].path, ab)
            merge_matches(folders[b].path, ba)
    return folders


def analyze_geometry(sae_path: Path, out_root: Path, n_clusters: int = 5, max_features: int = 2000,
                     with_umap: bool = True, seed: int = 0) -> list[AnalysisFolder]:
    """Geometry tables for every SAE under ``sae_path``, lobes from the co-occurrence counts of its complete
    dashboards (none without dashboards; refused over dashboards that an interrupted run left incomplete)."""
    import scipy.sparse as sp


    members = sae_members(Path(sae_path))
    folders = [AnalysisFolder.of_sae(out_root, member) for member in members]
    with writing_analyses(folders):
        for member, folder in zip(members, folders):
            dictionary = load_dictionary(member)
            dashboards = folder.record("dashboards")
            if dashboards is None and folder.partial("dashboards"):
                raise IncompleteAnalysisError(
                    f"the dashboards in {folder.path} are incomplete ({', '.join(folder.partial('dashboards'))} "
                    f"without a complete record); run `workbench analyze features` for {member} first")
            counts, n_blocks, counts_sha = None, 0, None
            if dashboards is not None and COUNTS in dashboards.tables:
                frame = folder.read_table(COUNTS)  # verified against the record's checksum
                n_blocks, counts_sha = int(dashboards.values["n_blocks"]), dashboards.tables[COUNTS]["sha256"]
                counts = sp.csr_matrix((frame["count"], (frame.feature, frame.other)),
                                       shape=(dictionary.d_sae, dictionary.d_sae))
            tables = geometry_tables(dictionary.W_dec.detach().float().cpu().numpy(), counts, n_blocks,
                                     n_clusters=n_clusters, max_features=max_features, seed=seed, with_umap=with_umap)
            folder.write_analysis("geometry", {f"geometry_{k}": v for k, v in tables.items()}, {
                "options": {"n_clusters": n_clusters, "max_features": max_features, "with_umap": with_umap,
                            "seed": seed}, "counts_sha256": counts_sha})
    return folders


def analyze_eval(sae_paths: Path | list[Path], out_root: Path, model_spec=None, hook: str | None = None,
                 n_prompts: int = 256, n_values: int = 8, budget: int = 4, device: str = "cpu",
                 task: str = "induction") -> AnalysisFolder:
    """Principled evaluation of every SAE under ``sae_paths`` (e.g. an MFR run and a plain one) against
    the supervised dictionary, on the ``induction`` task or the ``ioi`` task (attributes IO, S and position
    at END, ``interp.circuits.prompts.ioi_task``); writes the ``eval_summary`` and ``eval_flags`` tables to
    ``<out>/<run_id of the first>/``."""
    if task not in ("induction", "ioi"):
        raise InputError(f"unknown task '{task}'; use 'induction' or 'ioi'")
    import torch


    paths = [sae_paths] if isinstance(sae_paths, Path) else list(sae_paths)
    members = [m for path in paths for m in sae_members(Path(path))]
    dictionaries = {analysis_id(m): load_dictionary(m, device=device) for m in members}
    site = hook or next(iter(dictionaries.values())).hook_name
    if site is None:
        raise InputError(f"{members[0]}/{SAE_CONFIG} names no hook (metadata.hook_name); pass --hook")
    if model_spec is None or isinstance(model_spec, str):
        if model_spec is None and is_release_spec(members[0]):
            raise InputError(f"{members[0]} records no model here; pass --model (the model the SAE was trained on)")
        if model_spec is None:
            model_spec = CacheFolder(run_cache(members[0]), verify=False, allow_incomplete=True).config["model"]
        model = load_model(model_spec, device=device)
    else:
        model = model_spec
    if task == "ioi":
        prompts = ioi_task(model, n_prompts)
    else:
        vocab = model.cfg.d_vocab
        candidates = torch.arange(min(100, vocab // 4), min(vocab, 100 + 40 * n_values))
        prompts = induction_task(candidates, n_prompts, n_values, vocab=vocab)
    folder = AnalysisFolder(Path(out_root) / analysis_id(members[0]).split("/")[0])  # the run id (or 'saelens')
    with writing_analyses([folder]):
        summary, flags = evaluate_dictionaries(model, site, prompts, dictionaries, budget)
        return folder.write_tables({"eval_summary": summary, "eval_flags": flags})


def analyzed_folder(sae: Path, out_root: Path) -> AnalysisFolder:
    """``<out>/<run_id>/sae_<i>`` of an SAE folder; it must hold dashboards."""
    folder = AnalysisFolder.of_sae(out_root, sae)
    if not folder.has_dashboards:
        again = f"{sae} --cache <cache>" if is_release_spec(sae) else f"runs/{Path(sae).resolve().parent.name}"
        raise FileNotFoundError(f"{sae} has no dashboards in {folder.path}; make them with: "
                                f"workbench analyze features {again}")
    return folder


def analyze_compare(sae_a: Path, sae_b: Path, out_root: Path, device: str = "cpu"):
    """Match two analysed SAEs' features both ways (cosines on ``device``) and merge the rows into both
    folders' matches."""
    for sae in (sae_a, sae_b):
        if not is_release_spec(sae) and not RunFolder.is_sae(sae):
            raise FileNotFoundError(f"{sae} is not a SAELens SAE folder (no {SAE_CONFIG}); pass runs/<run_id>/sae_<i>")
    if analysis_id(sae_a) == analysis_id(sae_b):
        raise InputError(f"{sae_a} and {sae_b} are the same SAE; pass two different ones")
    folders = [analyzed_folder(sae_a, out_root), analyzed_folder(sae_b, out_root)]
    with writing_analyses(folders):
        return compare_saes(sae_a, sae_b, folders[0].path, folders[1].path, device=device)
