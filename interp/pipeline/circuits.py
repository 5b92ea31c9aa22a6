"""Circuit pipeline steps: every circuit analysis on one prompt set, written to an ``AnalysisFolder``
(``analyses/circuits/<set>/``; files and columns in ``interp/CIRCUITS.md``).

``analyze_circuits`` runs head scores, composition, DLA, logit lens, SVD tracing, patching and
attribution patching (and a feature circuit with an SAE) on given prompts; ``ioi_circuit_analysis``
builds IOI prompts, finds the IOI head roles and traces at END. Both return the summary they store.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from interp.circuits import attention, decomposition, patching
from interp.circuits.attention import CircuitInputError
from interp.circuits.circuit_helpers import head_pairs, pair_label, rank_agreement
from interp.circuits.feature_circuits import (
    MeanAblation,
    attribute,
    circuit_nodes,
    effect_error_shares,
    faithfulness_curve,
    feature_circuit,
)
from interp.circuits.ioi_circuit import ioi_head_table, ioi_roles
from interp.circuits.prompts import (
    IOI_OBJECTS,
    IOI_PLACES,
    IOI_TEMPLATES,
    demo_ioi_prompts,
    ioi_prompts,
    ioi_scores,
    prompt_table,
    single_token_names,
)
from interp.features.dictionary import load_dictionary
from interp.store.analysis_folder import AnalysisFolder, analysis_id
from interp.store.locks import writing
from interp.store.names import DEMO_MODEL_NAME


def analyze_circuits(model, clean, corrupt, metric, dest_mask, out: Path, start_head: tuple[int, int] | None = None,
                     sae_folder: Path | None = None, sae_hook: str | None = None, prompt_set: str = "induction",
                     src_mask=None, cutoff: float = 0.7, extra: dict | None = None,
                     sae_sites: dict[str, Path] | None = None, over_positions: bool = False,
                     node_threshold: float = 0.1, texts: tuple[list[str], list[str]] | None = None,
                     extra_tables: dict[str, pd.DataFrame] | None = None) -> dict:
    """Run every analysis on one prompt set, write the tables to ``out`` and return the summary.

    The feature circuit runs through ``sae_sites`` (``{hook: SAE folder}``, the sites where the circuit
    runs) or the one ``sae_folder`` at ``sae_hook``; ``over_positions`` sums its node effects over positions.
    ``texts`` (clean, corrupt) name the prompts in ``prompts.parquet`` (default: the decoded tokens);
    ``extra_tables`` (a task's own tables, such as IOI's head roles) are written with the others.

    The prompt set is whole or absent: its earlier files are removed before the first is written and the
    summary, which lists the set, is written last (``AnalysisFolder.begin_circuits`` / ``finish_circuits``).

    The SVD trace starts at ``start_head``'s firings at ``dest_mask`` (and ``src_mask`` when given);
    by default the top induction head on the repeated tokens. ``extra`` entries go into the summary last
    (a task's own findings, such as IOI's head roles, replace the generic ones). ``out``'s writer lock is
    held throughout: a second analysis of the same prompt set is refused."""
    with writing(out, "circuit analysis"):
        return _analyze_circuits(model, clean, corrupt, metric, dest_mask, Path(out), start_head, sae_folder,
                                 sae_hook, prompt_set, src_mask, cutoff, extra, sae_sites, over_positions,
                                 node_threshold, texts, extra_tables or {})


def _analyze_circuits(model, clean, corrupt, metric, dest_mask, out: Path, start_head, sae_folder, sae_hook,
                      prompt_set, src_mask, cutoff, extra, sae_sites, over_positions, node_threshold,
                      texts, extra_tables) -> dict:
    before = AnalysisFolder(out).begin_circuits()
    L, H = model.cfg.n_layers, model.cfg.n_heads
    timings, summary = (
        {},
        {"prompt_set": prompt_set, "model": model.cfg.model_name, "n_prompts": int(clean.shape[0]),
         "n_positions": int(clean.shape[1])},
    )

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - start, 3)
        return result

    scores = timed(
        "head_scores", lambda: attention.head_scores_on_repeated_tokens(model, 16, min(20, (model.cfg.n_ctx - 1) // 2))
    )
    composition = timed("composition", lambda: attention.composition_scores(model))
    dla = timed("dla", lambda: attention.direct_logit_attribution(model, clean))
    lens = timed("logit_lens", lambda: attention.logit_lens(model, clean))
    folder = AnalysisFolder(out)
    if model.tokenizer is not None:  # the prompts as text and tokens (the pages' position axes)
        folder.write_tables({"prompts": prompt_table(model.tokenizer, clean, corrupt, *(texts or (None, None)))},
                            by_feature=False)
    folder.write_tables(
        dict(
            head_scores=attention.head_scores_frame(scores),
            composition=attention.composition_frame(composition),
            dla=attention.dla_frame(dla),
            logit_lens=patching.grid_frame(lens.mean(1), ("layer", "pos"), "log_prob"),
        ),
        by_feature=False,
    )
    summary["heads"] = attention.detected_heads(scores)
    ind_layer, ind_head = summary["heads"]["induction"]
    summary["composition_baseline"] = attention.composition_baseline(model.cfg.d_model, model.cfg.d_head)

    skipped = decomposition.unsupported_reason(model)  # rotary families (Llama, Gemma, Qwen...) have no SVD trace
    if skipped is None:
        edges = timed("svd_edges", lambda: decomposition.trace_head_edges(model, clean, dest_mask))
        dims = timed("signal_dimensionality", lambda: decomposition.signal_dimensionality(model, clean, dest_mask))
        start = start_head or (ind_layer, ind_head)
        graph = timed(
            "svd_trace", lambda: decomposition.trace_circuit(model, clean, start, dest_mask, src_mask, cutoff=cutoff)
        )
        folder.write_tables({"svd_edges": edges, "signal_dimensionality": dims}, by_feature=False)
        folder.write_json("svd_trace", graph, sort_keys=False)
        summary["signal_dimensionality"] = {
            f"L{l}H{h}": float(g["size"].median()) for (l, h), g in dims.groupby(["layer", "head"])
        }
        summary["svd_trace"] = {
            "start": f"L{start[0]}H{start[1]}",
            "cutoff": cutoff,
            "start_firings": graph["n_start_firings"],
            "nodes": graph["nodes"],
        }
    else:
        summary["svd_trace"] = {"skipped": skipped}

    resid = timed("patch_residual", lambda: patching.patch_residual(model, clean, corrupt, metric))
    heads = timed("patch_heads", lambda: patching.patch_heads(model, clean, corrupt, metric))
    paths = timed("path_patch", lambda: patching.path_patch(model, clean, corrupt, metric))
    atp = timed("attribution_patching", lambda: patching.attribution_patching(model, clean, corrupt, metric))
    atp_table = timed("atp_agreement", lambda: patching.atp_agreement(model, clean, corrupt, metric))
    folder.write_tables(
        dict(
            patch_residual=patching.grid_frame(resid, ("layer", "pos"), "effect"),
            patch_heads=patching.grid_frame(heads, ("layer", "head"), "effect"),
            path_patch=patching.grid_frame(paths, ("side", "layer_a", "head_a", "layer_b", "head_b"), "effect").assign(
                side=lambda f: f.side.map(dict(enumerate(patching.SIDES)))
            ),
            attribution_residual=patching.grid_frame(atp["residual"], ("layer", "pos"), "effect"),
            attribution_heads=patching.grid_frame(atp["heads"], ("layer", "head"), "effect"),
            atp_agreement=atp_table,
        ),
        by_feature=False,
    )
    summary["atp_vs_exact_heads"] = atp_table[["scale", "method", "pearson", "spearman"]].to_dict("records")
    summary["attribution_vs_exact"] = {
        "residual": patching.agreement(resid, atp["residual"]),
        "heads": patching.agreement(heads, atp["heads"]),
    }
    methods = {
        "composition_k": head_pairs(composition["K"]),
        "path_patch_k": head_pairs(-paths[patching.SIDES.index("k")]),
    }
    if skipped is None:
        methods["svd_key"] = head_pairs(decomposition.head_edge_matrix(edges, "key", L, H))
    agreement = rank_agreement(methods)
    agreement["top_edge"] = {name: pair_label(i, L, H) for name, i in agreement["top_edge"].items()}
    summary["rank_agreement"] = agreement

    sites = dict(sae_sites or {})
    if sae_folder is not None:
        sites.setdefault(sae_hook or _named_hook(sae_folder), Path(sae_folder))
    if sites:
        summary["feature_circuit"] = feature_circuit_step(
            model, clean, corrupt, metric, sites, out, over_positions, timed, node_threshold
        )
    summary["timings_s"] = timings
    summary.update(extra or {})  # a task's own findings replace the generic ones (e.g. IOI's head roles)
    if extra_tables:
        AnalysisFolder(out).write_tables(extra_tables)
    AnalysisFolder(out).finish_circuits(summary, before)
    return summary


def _named_hook(sae_folder: Path) -> str:

    hook = getattr(load_dictionary(sae_folder), "hook_name", None)
    if not hook:
        raise CircuitInputError(f"the SAE at {sae_folder} names no hook; pass --sae-hook")
    return hook


def feature_circuit_step(
    model,
    clean,
    corrupt,
    metric,
    sae_sites: dict[str, Path],
    out: Path,
    over_positions: bool,
    timed,
    node_threshold: float = 0.1,
) -> dict:
    """The feature circuit through one SAE per site (one IG attribution reused for nodes, edges and the
    faithfulness curve), written to ``out``; returns its summary: each site's SAE, node counts, the share
    of the circuit's |effect| carried by error nodes (and over every node), faithfulness and completeness."""

    sites = {hook: load_dictionary(folder) for hook, folder in sae_sites.items()}
    attribution = timed("feature_effects", lambda: attribute(model, clean, metric, sites, corrupt, "ig", 10))
    circuit = timed(
        "feature_circuit",
        lambda: feature_circuit(
            model,
            clean,
            metric,
            sites,
            corrupt,
            "ig",
            10,
            node_threshold,
            over_positions=over_positions,
            attribution=attribution,
        ),
    )
    effects = {hook: attribution.effects(hook) for hook in circuit["sites"]}
    curve = timed(
        "feature_faithfulness",
        lambda: faithfulness_curve(
            model, clean, metric, sites, effects, ablate_from=corrupt, over_positions=over_positions
        ),
    )
    analyses = {hook: analysis_id(folder) for hook, folder in sae_sites.items()}
    write_feature_circuit(out, circuit, curve, analyses)
    shares = effect_error_shares(effects, over_positions)
    nodes = circuit_nodes(circuit)
    ablation = MeanAblation(model, clean, metric, sites, corrupt)
    return {
        "sites": [{"hook": hook, "sae": str(sae_sites[hook]), "analysis": analyses[hook]} for hook in circuit["sites"]],
        "hook": circuit["sites"][-1],
        "sae": str(sae_sites[circuit["sites"][-1]]),  # the last site (older readers)
        "nodes": len(circuit["nodes"]),
        "error_nodes": sum(n["feature"] < 0 for n in circuit["nodes"]),
        "node_threshold": circuit["node_threshold"],
        "over_positions": over_positions,
        "error_share": circuit["error_share"],
        "error_share_all_nodes": shares["all_nodes"],
        "error_share_by_site": shares["by_site"],
        "faithfulness": ablation.faithfulness(nodes),
        "completeness": ablation.faithfulness(nodes, True),
    }


def write_feature_circuit(
    folder: Path | str, graph: dict, curve: pd.DataFrame | None = None, analyses: dict[str, str] | None = None
) -> list[Path]:
    """``feature_circuit.json`` (the graph), ``feature_nodes.parquet`` (``id, hook, pos, feature, effect`` and,
    given ``analyses`` (``{hook: <run_id>/sae_<i>}``), each node's ``analysis``: where its dashboard is; pos -1:
    summed over positions) and, when given, ``feature_faithfulness.parquet`` (the faithfulness curve)."""
    columns = ["id", "hook", "pos", "feature", "effect"]
    nodes = pd.DataFrame(graph["nodes"], columns=columns)
    if analyses is not None:
        nodes["analysis"] = nodes.hook.map(analyses)
        graph = {**graph, "analyses": analyses}
    tables = {"feature_nodes": nodes}
    if curve is not None:
        tables["feature_faithfulness"] = curve
    folder = AnalysisFolder(folder).write_tables(tables, by_feature=False)
    return [folder.table_path("feature_nodes"), folder.write_json("feature_circuit", graph, sort_keys=False)] + [
        folder.table_path(name) for name in tables if name != "feature_nodes"
    ]


def ioi_circuit_analysis(
    model,
    n_prompts: int,
    out: Path,
    start: tuple[int, int] | None = None,
    sae_folder: Path | None = None,
    sae_hook: str | None = None,
    sae_sites: dict[str, Path] | None = None,
) -> dict:
    """IOI prompts (for the demo model: its held-out names on one training template), every circuit
    analysis traced at END, and the IOI head roles (``ioi_heads.parquet``)."""
    if model.cfg.model_name == DEMO_MODEL_NAME:
        prompts = demo_ioi_prompts(model, n_prompts, template=0)
    else:  # one template and single-token fillers: every prompt has one length
        places, objects = (tuple(single_token_names(model.tokenizer, words)) for words in (IOI_PLACES, IOI_OBJECTS))
        prompts = ioi_prompts(model, n_prompts, templates=IOI_TEMPLATES[:1], places=places, objects=objects)
    if not torch.equal(prompts.end, prompts.end[:1].expand_as(prompts.end)):
        raise CircuitInputError(
            "the IOI prompts tokenise to different lengths; use one template and single-token names"
        )
    rows = torch.arange(n_prompts)
    mask = torch.zeros_like(prompts.clean, dtype=torch.bool)
    mask[rows, prompts.end] = True
    io = torch.zeros_like(mask)
    io[rows, (prompts.clean == prompts.io[:, None]).long().argmax(1)] = True  # the reference traces END -> IO
    table = ioi_head_table(model, prompts)
    roles = ioi_roles(table)
    extra = {
        "heads": {"name_mover": roles["name_mover"], "s_signal": roles["s_signal"]},
        "ioi": ioi_scores(model, prompts),
    }
    return analyze_circuits(
        model,
        prompts.clean,
        prompts.corrupt,
        prompts.metric(),
        mask,
        out,
        start or tuple(roles["name_mover"]),
        sae_folder,
        sae_hook,
        prompt_set="ioi",
        src_mask=io,
        extra=extra,
        sae_sites=sae_sites,
        texts=(prompts.texts, prompts.corrupt_texts),
        extra_tables={"ioi_heads": table},
    )
