"""Pipeline step: an SAE's dashboards and explanations as a Neuronpedia export (``workbench export neuronpedia``).

``export_neuronpedia`` reads, per member of an SAE or run folder, its analysis folder (dashboards required,
explanations when made) and the cache the dashboards came from (model, context size, data), builds the rows
with ``interp.features.neuronpedia`` and writes them through ``NeuronpediaExport``; ``read_neuronpedia`` reads an
export back into our tables' vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from interp.features.neuronpedia import SourceInfo, batch_rows, hook_layer, metadata_rows, slug, tables_from_rows
from interp.store.analysis_folder import EXPLAIN_RUN, EXPLANATIONS, AnalysisFolder, analysis_id
from interp.store.cache_manifest import read_manifest
from interp.store.errors import InputError
from interp.store.neuronpedia_export import BATCHED, FALLBACK_CREATOR_ID, NeuronpediaExport
from interp.store.run_folder import sae_members

REQUIRED = ("features", "examples", "histograms")
OPTIONAL = ("logits", "neighbours", "cooccurrence")


@dataclass(frozen=True)
class ExportOptions:
    """What the caller names; None: derived (model id from the cache's model, source set from the SAE's id,
    layer from the hook)."""

    model_id: str | None = None
    source_set: str | None = None
    layer: int | None = None
    creator_id: str = FALLBACK_CREATOR_ID
    creator_name: str = "workbench"
    release: str = "workbench"
    batch_features: int = 1024
    created_at: str | None = None  # ISO 8601; None: now (UTC)


def _cache_facts(folder: AnalysisFolder, analyses_root: Path, meta: dict) -> dict:
    """Model spec, context size and data spec of the cache the dashboards came from ({} when it is gone)."""
    cache = Path(meta.get("cache", ""))
    cache = cache if cache.is_absolute() else Path(analyses_root).resolve().parent / cache
    try:
        manifest = read_manifest(cache)
    except (InputError, OSError):
        return {}
    context = manifest.config.get("context_size")
    return {"model": manifest.model, "context_size": context, "data": manifest.config.get("data"),
            "n_sequences": manifest.n_tokens // context if context else None}


def source_info(folder: AnalysisFolder, analyses_root: Path, options: ExportOptions) -> SourceInfo:
    """Neuronpedia's names for one analysed SAE, from its dashboards' record and options."""
    meta = folder.meta()
    facts = _cache_facts(folder, analyses_root, meta)
    model = options.model_id or (slug(Path(facts["model"]).name) if facts.get("model") else None)
    if model is None:
        raise InputError(f"the cache of {folder.path}'s dashboards ({meta.get('cache')}) is gone, so its model is "
                         "unknown; pass --model-id")
    hook = meta["hook"]
    return SourceInfo(
        model_id=model, source_set=options.source_set or slug(folder.id.replace("/", "-")),
        layer=options.layer if options.layer is not None else hook_layer(hook), hook=hook,
        created_at=options.created_at or datetime.now(timezone.utc).replace(tzinfo=None).isoformat(),
        creator_id=options.creator_id, creator_name=options.creator_name, release=options.release,
        description=f"{folder.id} at {hook}", n_prompts=facts.get("n_sequences"),
        n_tokens_in_prompt=facts.get("context_size"), dataset=facts.get("data"),
    )


def export_member(member: Path | str, analyses_root: Path, out_root: Path,
                  options: ExportOptions | None = None) -> NeuronpediaExport:
    """One SAE's export at ``<out_root>/<modelId>/<layer>-<source set>``."""
    options = options or ExportOptions()
    if options.batch_features < 1:
        raise InputError(f"--batch-features must be at least 1, got {options.batch_features}")
    folder = AnalysisFolder.of_sae(analyses_root, member)
    if not folder.has_dashboards:
        raise InputError(f"{folder.path} holds no complete dashboards for {analysis_id(member)}; make them with: "
                         f"workbench analyze features {member} --out {analyses_root}")
    info = source_info(folder, analyses_root, options)
    tables = {name: folder.read_table(name) for name in REQUIRED}
    tables |= {name: folder.read_table(name) for name in OPTIONAL if folder.has(name)}
    llm_model = None
    if folder.has(EXPLANATIONS):
        tables["explanations"] = folder.read_table(EXPLANATIONS)
        if folder.has_json(EXPLAIN_RUN):
            llm_model = (folder.read_json(EXPLAIN_RUN).get("llm") or {}).get("model")
    export = NeuronpediaExport.of_source(out_root, info.model_id, info.source_id)
    export.write_metadata(metadata_rows(info))
    written: dict[str, set[int]] = {kind: set() for kind in BATCHED}
    step = options.batch_features
    for index in range(-(-len(tables["features"]) // step)):  # batch by batch: memory bounded by one batch's rows
        part = {name: t[(t.feature >= index * step) & (t.feature < (index + 1) * step)] for name, t in tables.items()}
        for kind, rows in batch_rows(info, part, llm_model).items():
            if rows:
                export.write_batch(kind, index, rows)
                written[kind].add(index)
    for kind, indices in written.items():
        export.keep_batches(kind, indices)
    return export


def export_neuronpedia(sae_path: Path | str, analyses_root: Path, out_root: Path,
                       options: ExportOptions | None = None) -> list[NeuronpediaExport]:
    """``export_member`` for every SAE under ``sae_path`` (an SAE folder, a run folder or a ``saelens:`` spec);
    with no ``source_set`` given, each member gets its own (its analysis id)."""
    members = sae_members(Path(sae_path))
    if options is not None and options.source_set and len(members) > 1:
        raise InputError(f"{sae_path} has {len(members)} SAEs and one --source-set would name them all alike; "
                         "export one member folder (…/sae_0) at a time, or leave --source-set out")
    return [export_member(member, analyses_root, out_root, options) for member in members]


def read_neuronpedia(export: NeuronpediaExport | Path | str) -> dict:
    """An export read back: its metadata rows and our tables (``interp.features.neuronpedia.tables_from_rows``)."""
    export = export if isinstance(export, NeuronpediaExport) else NeuronpediaExport(export)
    records = export.read()
    return {"records": records, "tables": tables_from_rows(records)}
