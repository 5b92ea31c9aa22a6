"""Pipeline step: explain and score every feature of an SAE, written to its ``AnalysisFolder``.

``analyze_explain`` runs, per member of an SAE or run folder that has dashboards: one pass over the cache
for the example sets (``interp.explain.examples``; the hard negatives sit on the dashboards' top tokens),
stored as ``explain_examples``; then the offline explainer and its scores (``interp.explain``), optionally
an LLM explainer and scorer, in chunks of features, each chunk a part table; the parts become the
``explanations`` table at the end. A run killed at any point resumes: the stored examples are reused and the
finished chunks are not explained or scored again (the run record must match, else it starts over).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from interp.cache.store import CacheFolder, cache_chunks
from interp.explain.examples import ExampleArrays, ExampleConfig, collect_examples, example_frame
from interp.explain.explanations import ExplainConfig, Explainer
from interp.explain.rules import Vocabulary
from interp.features.dictionary import check_fits, load_dictionary
from interp.models import load_model
from interp.pipeline.sae import _decoder, analyzed_folder, run_cache, with_progress
from interp.store.analysis_folder import EXPLAIN_EXAMPLES, EXPLAIN_RUN, EXPLANATIONS, AnalysisFolder
from interp.store.errors import InputError
from interp.store.run_folder import SAE_CONFIG, sae_members


def _top_ids(folder: AnalysisFolder, d_sae: int):
    """Each feature's top activating token ids from the dashboards, ``[d_sae, n_top]`` with ``-1`` pads."""
    import torch

    rows = folder.read_table("features", columns=["feature", "top_token_ids"]).sort_values("feature")
    if len(rows) != d_sae:
        raise InputError(f"the dashboards in {folder.path} have {len(rows)} features, the SAE {d_sae}; remake them "
                         "with: workbench analyze features")
    width = max((len(r) for r in rows.top_token_ids), default=1)
    out = torch.full((d_sae, max(width, 1)), -1, dtype=torch.long)
    for feature, ids in zip(rows.feature, rows.top_token_ids):
        out[feature, :len(ids)] = torch.tensor(np.asarray(ids, dtype=np.int64))
    return out


def _promoted(folder: AnalysisFolder) -> dict[int, list[int]]:
    """What each feature's decoder promotes most through the unembedding (the dashboards' logits), in order."""
    if not folder.has("logits"):
        return {}
    logits = folder.read_table("logits", columns=["feature", "sign", "rank", "token_id"])
    logits = logits[logits.sign == "positive"].sort_values(["feature", "rank"])
    return {int(f): group.token_id.astype(int).tolist() for f, group in logits.groupby("feature")}


def collect_and_store_examples(member: Path, folder: AnalysisFolder, config: ExampleConfig, cache_dir: Path | None,
                               hook: str | None, max_rows: int, device: str, progress: bool) -> dict:
    """The example pass over the SAE's cache; writes ``explain_examples`` and returns the counts."""

    dictionary = load_dictionary(member, device=device)
    site = hook or folder.meta().get("hook") or dictionary.hook_name
    if site is None:
        raise InputError(f"{member}/{SAE_CONFIG} names no hook (metadata.hook_name); pass --hook")
    cache_dir = cache_dir or run_cache(member)
    cache = CacheFolder(cache_dir)
    where = f"hook '{site}' of cache {cache_dir}"
    check_fits(dictionary, cache.d(site), where)
    chunks = cache_chunks(cache, site, max_rows)
    if progress:
        chunks = with_progress(chunks, cache.n_tokens, f"explain examples {folder.id}")
    sets = collect_examples(dictionary, chunks, _top_ids(folder, dictionary.d_sae), config, where)
    folder.write_tables({EXPLAIN_EXAMPLES: example_frame(sets)})
    return {"n_tokens": sets.n_tokens["train"] + sets.n_tokens["test"],
            "n_fires": (sets.fires["train"] + sets.fires["test"]).tolist(), "model": cache.config["model"]}


def explain_member(member: Path, out_root: Path, cache_dir: Path | None = None, hook: str | None = None,
                   model_spec=None, config: ExampleConfig | None = None,
                   explain_config: ExplainConfig | None = None, llm=None, max_rows: int = 4096,
                   device: str = "cpu", chunk_features: int = 256, force: bool = False,
                   progress: bool = False) -> AnalysisFolder:
    """Explain and score every feature of one SAE folder (resumable); returns its analysis folder."""
    config, explain_config = config or ExampleConfig(), explain_config or ExplainConfig()
    folder = analyzed_folder(member, out_root)
    record = {"examples": asdict(config), "explain": asdict(explain_config),
              "llm": llm.record() if llm is not None else None}
    stored = folder.read_json(EXPLAIN_RUN) if folder.has_json(EXPLAIN_RUN) else {}
    same_examples = stored.get("examples") == record["examples"] and folder.has(EXPLAIN_EXAMPLES)
    same = same_examples and {k: stored.get(k) for k in record} == record
    if not force and same and folder.has(EXPLANATIONS) and not folder.explanation_parts():
        return folder  # done before, with these settings
    if force or not same:
        folder.clear_explanation_parts()  # chunks made with other settings are not reused
    if force or not same_examples:
        counts = collect_and_store_examples(member, folder, config, cache_dir, hook, max_rows, device, progress)
    else:
        counts = {k: stored[k] for k in ("n_tokens", "n_fires", "model")}
    stored = {**record, **counts}
    folder.write_json(EXPLAIN_RUN, stored)
    vocab = _vocabulary(model_spec or stored["model"], device)
    arrays = ExampleArrays(folder.read_table(EXPLAIN_EXAMPLES), config.left)
    explainer = Explainer(arrays, vocab, np.asarray(stored["n_fires"]), stored["n_tokens"], _promoted(folder),
                          explain_config)
    d_sae, done = len(stored["n_fires"]), folder.explanation_parts()
    starts = range(0, d_sae, chunk_features)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"explain {folder.id}", unit="chunk")
    for index, start in enumerate(starts):
        if index in done:
            continue
        rows = explainer.rows(range(start, min(start + chunk_features, d_sae)))
        if llm is not None:
            rows = llm.add_columns(rows, explainer)
        folder.write_explanation_part(index, rows)
    parts = folder.explanation_parts()
    folder.write_tables({EXPLANATIONS: pd.concat([pd.read_parquet(p) for p in parts.values()], ignore_index=True)})
    folder.clear_explanation_parts()
    return folder


def _vocabulary(model_spec, device: str) -> Vocabulary:
    """Every token's text, from the model's tokenizer (the model is loaded once, on ``device``)."""

    model = model_spec if not isinstance(model_spec, str) else load_model(model_spec, device=device)
    return Vocabulary.from_decode(_decoder(model), int(model.cfg.d_vocab))


def analyze_explain(sae_path: Path, out_root: Path, **options) -> list[AnalysisFolder]:
    """``explain_member`` for every SAE under ``sae_path`` (an SAE folder or a run folder with members); the
    model (for token texts) is loaded once: ``model_spec``, or the cache's model."""

    members = sae_members(Path(sae_path))
    model = options.pop("model_spec", None)
    if model is None or isinstance(model, str):
        spec = model or CacheFolder(options.get("cache_dir") or run_cache(members[0]), verify=False,
                                        allow_incomplete=True).config["model"]
        model = load_model(spec, device=options.get("device", "cpu"))
    return [explain_member(member, out_root, model_spec=model, **options) for member in members]


def summary(folder: AnalysisFolder) -> str:
    """One line: how many features were explained, dead or too rare, and the detection scores against their
    baseline (medians, and the share beating it by 0.2)."""
    table = folder.read_table(EXPLANATIONS)
    counts = table.status.value_counts()
    scored = table.dropna(subset=["detection", "baseline_detection"])
    line = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("explained", "dead", "too rare"))
    if len(scored):
        beat = (scored.detection >= scored.baseline_detection + 0.2).mean()
        line += (
            f"; detection median {scored.detection.median():.2f} vs baseline {scored.baseline_detection.median():.2f}"
            f", {beat:.0%} beat it by 0.2"
        )
    return line
