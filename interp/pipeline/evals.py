"""The evaluation suite over SAE folders: every metric of ``interp.evals`` per SAE, written as
``analyses/<run_id>/sae_<i>/eval/<metric>.json`` in SAEBench's layout, and the workspace table
``analyses/eval_results.parquet`` rebuilt from all of them.

SAEs are grouped by (model, hook, d_in): one model load and one pass over each task's texts serve a whole
group, and SAEs of different groups are never compared (``EvalReport.notes`` says how they were split).
A metric's file is written the moment it is computed, so a killed evaluation, run again, resumes at the
metric it was computing (a file whose ``eval_config`` differs from the current one is recomputed).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from interp.cache.store import CacheFolder, cache_chunks, model_chunks
from interp.evals.absorption import (
    AbsorptionConfig,
    absorption_from_activations,
    absorption_parts,
    alpha_tokens,
    first_letter,
    letter_probes,
    split_words,
    word_activations,
)
from interp.evals.core import (
    core_output_parts,
    downstream_stats_many,
    encoder_matrix,
    reconstruction_stats,
    weight_stats,
)
from interp.evals.explanations import MARGIN, check_table, explanation_parts
from interp.evals.principled import principled_parts, principled_tables
from interp.evals.schema import eval_output, metric_rows
from interp.evals.sparse_probing import pooled_features, sparse_probing_parts, task_indices, task_llm_probes
from interp.evals.stability import stability_pair, stability_parts
from interp.evals.tasks import corpus_tasks, file_tasks
from interp.features.dictionary import load_dictionary
from interp.figures.evals import HEADLINE
from interp.models.data import batched_windows, token_windows
from interp.models.loading import load_model
from interp.store.analysis_folder import (
    EXPLANATIONS,
    AnalysisFolder,
    analysis_id,
    evaluated_analyses,
    read_eval_table,
    wide_eval_table,
    write_eval_table,
)
from interp.store.errors import InputError
from interp.store.io import sha256_file
from interp.store.names import EVAL_METRICS
from interp.store.run_folder import RunFolder, sae_members

METRICS = EVAL_METRICS
NO_MODEL = {"explanations"}  # metrics read from stored tables only
# run-config keys that do not change what a run learns: runs equal on every other key are seeds of one config
CORE_CHUNK = 1024  # cached rows per core batch: its dense [rows, d_sae] codes bound the memory, not the token count
NOT_CONFIG = {"seed", "log_every", "mmcs_log_every", "checkpoint_every", "eval_batches", "eval_ce_batches",
              "device", "autocast", "wandb_project"}


@dataclass(frozen=True)
class EvalConfig:
    """How much each metric reads (the defaults keep the suite near a minute per demo SAE on 2 cores)."""

    core_tokens: int = 65_536
    ce_batches: int = 4
    ce_batch_size: int = 8
    probe_train: int = 200  # per class and task (SAEBench: 4000 train, 1000 test per task)
    probe_test: int = 100
    probe_context: int = 64  # tokens per text (SAEBench: 128; most speeches are shorter)
    task_file: str | None = None
    principled_prompts: int = 128
    seed: int = 0
    absorption: AbsorptionConfig = field(default_factory=AbsorptionConfig)

    def for_metric(self, metric: str) -> dict:
        """The part of the config a metric's result depends on (stored as its ``eval_config``)."""
        keys = {"core": ("core_tokens", "ce_batches", "ce_batch_size"), "principled": ("principled_prompts", "seed"),
                "sparse_probing": ("probe_train", "probe_test", "probe_context", "task_file", "seed"),
                "absorption": (), "stability": (), "explanations": ()}[metric]
        out = {k: getattr(self, k) for k in keys}
        return out | (self.absorption.as_dict() if metric == "absorption" else {})


@dataclass
class SaeEntry:
    """One SAE to evaluate: its folder, dictionary, where it reads, its run's config and its analysis folder."""

    path: Path
    id: str
    dictionary: object
    hook: str
    model: str
    run_config: dict
    folder: AnalysisFolder
    sae_cfg: dict

    @property
    def group(self) -> tuple[str, str, int]:
        return self.model, self.hook, self.dictionary.d_in


@dataclass
class EvalReport:
    groups: dict[tuple, list[str]]
    notes: list[str]
    computed: list[tuple[str, str]]  # (sae id, metric) computed now; the others were already on disk
    table: Path | None


def _json_safe(value) -> dict:
    return json.loads(json.dumps(value, default=str))


def describe(sae: Path, out_root: Path, device: str = "cpu") -> SaeEntry:
    """Load an SAE folder and find its hook, model and run config (the cache's model when the SAE names none)."""
    dictionary = load_dictionary(sae, device=device)
    cfg = _json_safe(dictionary.sae.cfg.to_dict()) if hasattr(dictionary, "sae") else {}
    run = RunFolder(Path(sae).parent)
    run_config = run.config() if run.config_path.exists() else {}
    hook = dictionary.hook_name or run_config.get("hook")
    model = cfg.get("metadata", {}).get("model_name") or run_config.get("model")
    if model is None and run_config.get("cache"):
        model = CacheFolder(run.cache(for_what=str(sae)), verify=False).config["model"]
    if hook is None or model is None:
        raise InputError(f"{sae} names no {'hook' if hook is None else 'model'} (cfg metadata or run config); "
                         "evaluate SAEs trained by `workbench train` or with SAELens metadata")
    member = int(Path(sae).name.split("_")[-1]) if Path(sae).name.startswith("sae_") else 0
    cfg |= {"architecture": cfg.get("architecture", run_config.get("architecture")),
            "training_tokens": run_config.get("n_tokens"),
            "workbench": {"run_id": run.path.name, "member": member, "architecture": run_config.get("architecture"),
                          "mfr_coefficient": run_config.get("mfr_coefficient", 0.0), "seed": run_config.get("seed"),
                          "options": run_config.get("options")}}
    return SaeEntry(Path(sae), analysis_id(sae), dictionary, hook, str(model), run_config,
                    AnalysisFolder.of_sae(out_root, sae), cfg)


def group_saes(entries: list[SaeEntry]) -> tuple[dict[tuple, list[SaeEntry]], list[str]]:
    """SAEs by (model, hook, d_in), with a note when there is more than one group."""
    groups: dict[tuple, list[SaeEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    notes = []
    if len(groups) > 1:
        parts = [f"{model} {hook} (d_in {d}): {', '.join(e.id for e in members)}"
                 for (model, hook, d), members in groups.items()]
        notes.append(f"{len(groups)} groups of SAEs read different models or hooks and are evaluated and compared "
                     f"only within their group: {'; '.join(parts)}")
    return groups, notes


def stability_partners(entry: SaeEntry, group: list[SaeEntry]) -> list[SaeEntry]:
    """The other members of its run, and SAEs of runs whose config differs from its run's only by seed."""
    mine = {k: v for k, v in entry.run_config.items() if k not in NOT_CONFIG}
    run = entry.path.parent.resolve()
    return [other for other in group if other.id != entry.id and (
        other.path.parent.resolve() == run or (mine and mine == {k: v for k, v in other.run_config.items()
                                                                 if k not in NOT_CONFIG}))]


def _eval_config(entry: SaeEntry, metric: str, config: EvalConfig) -> dict:
    """What ``metric``'s result for ``entry`` depends on: its config part; for explanations, which table (its
    sha256, so remade explanations are summarised again) and the margin."""
    if metric == "explanations":
        return {"explanations_sha256": sha256_file(entry.folder.table_path(EXPLANATIONS)), "margin": MARGIN}
    return _json_safe(config.for_metric(metric))


def _pending(entries: list[SaeEntry], metric: str, config: EvalConfig) -> list[SaeEntry]:
    """The SAEs whose ``metric`` file is missing or was made with another config (for explanations: only the
    SAEs that have an explanations table)."""
    if metric == "explanations":
        entries = [e for e in entries if e.folder.has(EXPLANATIONS)]
    return [e for e in entries if not e.folder.has_eval(metric)
            or e.folder.read_eval(metric).get("eval_config") != _eval_config(e, metric, config)]


def _write(entry: SaeEntry, metric: str, config: EvalConfig, parts: tuple[dict, list, dict]) -> None:
    metrics, details, unstructured = parts
    entry.folder.write_eval(metric, eval_output(metric, _eval_config(entry, metric, config), metrics, details,
                                                entry.id, entry.path.parent.name,
                                                entry.sae_cfg, unstructured))


def _activation_batches(entry: SaeEntry, model, n_tokens: int):
    """``(activations, sequence)`` batches without BOS, from the run's cache when it has one, else live."""
    if entry.run_config.get("cache") and Path(entry.run_config["cache"]).exists():
        chunks = cache_chunks(CacheFolder(entry.run_config["cache"]), entry.hook, CORE_CHUNK)
    else:
        chunks = model_chunks(model, entry.hook, entry.run_config.get("data", "demo"),
                              entry.run_config.get("context_size", 128), n_tokens)
    seen = 0
    for chunk in chunks:
        keep = chunk.position != 0
        x, sequence = chunk.activations[keep][:n_tokens - seen], chunk.sequence[keep][:n_tokens - seen]
        yield x, sequence
        seen += len(x)
        if seen >= n_tokens:
            return


def _ce_tokens(entry: SaeEntry, model, config: EvalConfig) -> list:
    data = entry.run_config.get("data", "demo")
    if entry.run_config.get("cache"):
        data = CacheFolder(entry.run_config["cache"], verify=False).config.get("data", data)
    context = entry.run_config.get("context_size", 128)
    windows = token_windows(data, model.tokenizer, min(context, model.cfg.n_ctx), seed=12345,
                            max_windows=config.ce_batches * config.ce_batch_size)
    return [b.to(model.cfg.device) for b in batched_windows(windows, config.ce_batch_size)]


def run_core(entries: list[SaeEntry], model, config: EvalConfig) -> None:
    tokens = _ce_tokens(entries[0], model, config) if config.ce_batches > 0 else []
    # the clean and zero-ablated runs are the same for every SAE of the group: made once per batch
    down = downstream_stats_many(model, entries[0].hook, {e.id: e.dictionary for e in entries}, tokens) \
        if tokens else {}
    for entry in entries:
        batches = _activation_batches(entry, model, config.core_tokens)
        recon, per_latent = reconstruction_stats(entry.dictionary, batches)
        _write(entry, "core", config, core_output_parts(recon, per_latent, weight_stats(entry.dictionary),
                                                        down.get(entry.id)))


def run_sparse_probing(entries: list[SaeEntry], model, config: EvalConfig) -> None:
    tasks = corpus_tasks(config.probe_train, config.probe_test, config.seed)
    if config.task_file:
        tasks += file_tasks(config.task_file, config.probe_train, config.probe_test, config.seed)
    texts, rows = task_indices(tasks)
    pooled = pooled_features(model, entries[0].hook, texts, {e.id: e.dictionary for e in entries},
                             config.probe_context)
    shared = task_llm_probes(tasks, rows, pooled["llm"])  # the activation-side probes: once per hook
    for entry in entries:
        _write(entry, "sparse_probing", config,
               sparse_probing_parts(tasks, rows, pooled["llm"], pooled[entry.id], llm_results=shared))


def run_absorption(entries: list[SaeEntry], model, config: EvalConfig) -> None:
    cfg = config.absorption
    words = alpha_tokens(model.tokenizer)
    words = random.Random(cfg.random_seed).sample(words, min(cfg.max_words, len(words)))
    train, test = split_words(words, cfg.random_seed)
    hook = entries[0].hook
    train_x, test_x = word_activations(model, hook, train, train, cfg), word_activations(model, hook, test, test, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    probes = letter_probes(train_x, [first_letter(w) for w in train])
    for entry in entries:
        result = absorption_from_activations(entry.dictionary, train_x, train, test_x, test, cfg, probes)
        _write(entry, "absorption", config, absorption_parts(result, cfg, n_params, entry.dictionary.d_sae))


def run_principled(entries: list[SaeEntry], model, config: EvalConfig) -> None:
    summary, flags = principled_tables(model, entries[0].hook, {e.id: e.dictionary for e in entries},
                                       config.principled_prompts, seed=config.seed)
    for entry in entries:
        _write(entry, "principled", config, principled_parts(summary, flags, entry.id))


def _live(entry: SaeEntry, model, config: EvalConfig):
    """Latents that fired on the core evaluation's tokens (its file when present)."""
    if entry.folder.has_eval("core"):
        return torch.tensor([d["feature_density"] > 0 for d in entry.folder.read_eval("core")["eval_result_details"]])
    _, per_latent = reconstruction_stats(entry.dictionary, _activation_batches(entry, model, config.core_tokens))
    return per_latent["feature_density"] > 0


def run_stability(entries: list[SaeEntry], group: list[SaeEntry], model, config: EvalConfig) -> list[str]:
    notes, live = [], {}
    for entry in entries:
        partners = stability_partners(entry, group)
        if not partners:
            notes.append(f"stability: {entry.id} has no partner (another member of its run, or a run of the same "
                         "config with another seed) among the SAEs given; pass them together")
            continue
        pairs = {}
        for other in partners:
            for e in (entry, other):
                live.setdefault(e.id, _live(e, model, config))
            pairs[other.id] = stability_pair(entry.dictionary.W_dec.detach().cpu(),
                                             other.dictionary.W_dec.detach().cpu(), live[entry.id], live[other.id],
                                             encoder_matrix(entry.dictionary), encoder_matrix(other.dictionary))
        _write(entry, "stability", config, stability_parts(pairs))
    return notes


def run_explanations(entries: list[SaeEntry], config: EvalConfig) -> None:
    """Each SAE's stored explanation scores (``workbench explain``) summarised in SAEBench's layout."""
    for entry in entries:
        table = entry.folder.read_table(EXPLANATIONS)
        check_table(table, str(entry.folder.table_path(EXPLANATIONS)))
        _write(entry, "explanations", config, explanation_parts(table))


def _unexplained_note(group: list[SaeEntry]) -> list[str]:
    missing = [e.id for e in group if not e.folder.has(EXPLANATIONS)]
    if not missing:
        return []
    return [f"explanations: {', '.join(missing)} have no explanations table, so no explanation scores; make them "
            f"with `workbench explain runs/<run_id>` and evaluate again"]


def collect_eval_table(out_root: Path) -> pd.DataFrame:
    """Every evaluation file under ``out_root`` as rows: SAE, site, architecture, MFR, metric, category, name,
    value."""
    rows = []
    for sae in evaluated_analyses(out_root):
        folder = AnalysisFolder(Path(out_root) / sae)
        for metric in folder.evals():
            output = folder.read_eval(metric)
            cfg = output.get("sae_cfg_dict") or {}
            wb, meta = cfg.get("workbench", {}), cfg.get("metadata", {})
            base = {"sae": sae, "run_id": wb.get("run_id"), "model": meta.get("model_name"),
                    "hook": meta.get("hook_name"),
                    "architecture": wb.get("architecture") or cfg.get("architecture"), "d_sae": cfg.get("d_sae"),
                    "mfr_coefficient": float(wb.get("mfr_coefficient") or 0.0), "metric": metric}
            rows += [base | row for row in metric_rows(output)]
    return pd.DataFrame(rows, columns=["sae", "run_id", "model", "hook", "architecture", "d_sae", "mfr_coefficient",
                                       "metric", "category", "name", "value"])


def evaluate_saes(saes: list[Path], out_root: Path, metrics: tuple[str, ...] = METRICS,
                  config: EvalConfig = EvalConfig(), device: str = "cpu", progress=print, model=None) -> EvalReport:
    """Evaluate every SAE under ``saes`` (SAE or run folders) on ``metrics``; skip what is already on disk.
    ``model``: an already loaded model to use for every group (else each group's model spec is loaded)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    members = [m for sae in saes for m in sae_members(Path(sae))]
    if len({m.resolve() for m in members}) != len(members):
        raise InputError("an SAE was given twice; pass each SAE or run folder once")
    groups, notes = group_saes([describe(m, out_root, device) for m in members])
    computed = []
    given = model
    for (model_spec, hook, _), group in groups.items():
        model = given
        for metric in (m for m in METRICS if m in metrics):
            if metric == "explanations":
                notes += _unexplained_note(group)
            pending = _pending(group, metric, config)
            if not pending:
                continue
            if metric not in NO_MODEL:
                model = model or load_model(model_spec, device=device)
            progress(f"{metric}: {', '.join(e.id for e in pending)} ({model_spec}, {hook})")
            try:
                if metric == "explanations":
                    run_explanations(pending, config)
                elif metric == "stability":
                    notes += run_stability(pending, group, model, config)
                else:
                    {"core": run_core, "sparse_probing": run_sparse_probing, "absorption": run_absorption,
                     "principled": run_principled}[metric](pending, model, config)
            except InputError as error:
                if metric != "principled":
                    raise
                notes.append(f"principled: skipped for {model_spec} {hook}: {error}")
                continue
            computed += [(e.id, metric) for e in pending if e.folder.has_eval(metric)]
    table = collect_eval_table(Path(out_root))
    return EvalReport({k: [e.id for e in v] for k, v in groups.items()}, notes, computed,
                      write_eval_table(out_root, table) if len(table) else None)


def summary_table(out_root: Path, saes: list[str] | None = None) -> pd.DataFrame:
    """One row per SAE, one column per ``<metric>.<name>`` (what the CLI prints and the page shows)."""
    table = read_eval_table(out_root)
    if table is not None and saes is not None:
        table = table[table.sae.isin(saes)]
    return wide_eval_table(table)


def headline(out_root: Path, saes: list[str] | None = None) -> pd.DataFrame:
    """The summary's headline columns, renamed for reading."""
    wide = summary_table(out_root, saes)
    if wide.empty:
        return wide
    keep = [c for c in HEADLINE if c in wide.columns]
    return wide[["sae", "architecture", "mfr_coefficient", *keep]].rename(columns=HEADLINE)


def config_from_options(**options) -> EvalConfig:
    """An ``EvalConfig`` from CLI options (None keeps the default)."""
    return EvalConfig(**{k: v for k, v in options.items() if v is not None})


__all__ = [
    "METRICS",
    "EvalConfig",
    "EvalReport",
    "collect_eval_table",
    "config_from_options",
    "evaluate_saes",
    "headline",
    "summary_table",
]
