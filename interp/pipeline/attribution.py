"""Attribution-graph pipeline step: one prompt's graph over a set of transcoders, pruned, scored, checked by
intervention and exported, written to ``analyses/graphs/<slug>/`` through ``AnalysisFolder``.

The folder holds the dense graph (``attribution_graph`` tensors + JSON with the scores, checks and top paths),
the node and kept-edge tables the app draws, the intervention rows, and circuit-tracer's graph JSON.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shlex
import time
from pathlib import Path

import pandas as pd
import torch

from interp.circuits.attribution import AttributionGraph, attribute
from interp.circuits.attribution.export import circuit_tracer_json
from interp.circuits.attribution.graph import format_problem
from interp.circuits.attribution.prune import PruneResult, graph_scores, prune_graph
from interp.circuits.attribution.supernodes import (
    COACTIVATION_THRESHOLD,
    DECODER_THRESHOLD,
    GROUPINGS,
    FeatureGeometry,
    supernodes,
)
from interp.circuits.attribution.verify import intervention_check, top_edges
from interp.features.transcoder import Transcoder, load_transcoder
from interp.store.analysis_folder import GRAPH_CHECKS, GRAPH_EDGES, GRAPH_NODES, AnalysisFolder
from interp.store.errors import InputError
from interp.store.names import DEMO_MODEL_NAME
from interp.store.run_folder import sae_members


def load_transcoder_set(paths: list[Path | str], device: str = "cpu") -> tuple[dict[int, Transcoder], dict[int, str]]:
    """Transcoders by layer from folders (a transcoder folder or a run folder of them); one per layer."""
    by_layer, sources = {}, {}
    for path in paths:
        for folder in sae_members(Path(path)):
            tc = load_transcoder(folder, device)
            if tc.layer is None:
                raise InputError(f"{folder} reads '{tc.hook_in}', not a block's hook; train it on blocks.<L>.…")
            if tc.layer in by_layer:
                raise InputError(f"two transcoders for layer {tc.layer} ({sources[tc.layer]} and {folder}); give one")
            by_layer[tc.layer], sources[tc.layer] = tc, str(folder)
    return by_layer, sources


def default_slug(prompt: str) -> str:
    words = "-".join(re.findall(r"[a-z0-9]+", prompt.lower())[:5]) or "prompt"
    return f"{words[:40]}-{hashlib.sha256(prompt.encode()).hexdigest()[:6]}"


def node_table(graph: AttributionGraph, pruned: PruneResult, sources: dict[int, str]) -> pd.DataFrame:
    rows = []
    for node in range(graph.n_nodes):
        info = graph.describe(node)
        rows.append({"node": node, **info, "influence": float(pruned.influence[node]),
                     "cumulative": float(pruned.cumulative_scores[node]), "kept": bool(pruned.node_mask[node]),
                     "activation": float(graph.activations[node]) if info["kind"] == "feature" else float("nan"),
                     "transcoder": sources.get(info["layer"], "") if info["kind"] == "feature" else ""})
    return pd.DataFrame(rows)


def edge_table(graph: AttributionGraph, pruned: PruneResult) -> pd.DataFrame:
    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    return pd.DataFrame({"target": targets.numpy(), "source": sources.numpy(),
                         "weight": graph.adjacency[targets, sources].numpy()})


def top_paths(graph: AttributionGraph, pruned: PruneResult, n: int = 3) -> list[dict]:
    """From the top logit back to a node without inputs (a token or an error): start at each of its ``n``
    strongest kept inputs, then follow the strongest kept incoming edge. Each path's labels (source first) and
    the weights of its edges."""
    kept = graph.adjacency.abs() * pruned.edge_mask
    logit = graph.logit_index(0)
    paths = []
    for start in torch.argsort(kept[logit], descending=True)[:n].tolist():
        if kept[logit, start] == 0:
            break
        path, node = [logit, start], start
        while graph.kind(node) != "token" and kept[node].max() > 0 and len(path) < 4 * graph.n_layers + 4:
            node = int(kept[node].argmax())
            path.append(node)
        path.reverse()
        paths.append({"nodes": [graph.describe(i)["label"] for i in path],
                      "weights": [float(graph.adjacency[t, s]) for s, t in itertools.pairwise(path)]})
    return paths


GEOMETRY_TABLES = {"lobes": "geometry_lobe_labels", "crystals": "geometry_crystals"}


def stored_geometry(out_root: Path | str, sources: dict[int, str], by: str) -> tuple[dict[int, FeatureGeometry],
                                                                                     list[str]]:
    """Each layer's transcoder geometry for the grouping ``by`` (``lobes`` / ``crystals``), read from its analysis
    folder under ``out_root``, and a note for each layer without it (no groups there, said so, never a failure)."""
    geometry, notes = {}, []
    for layer, source in sorted(sources.items()):
        folder = AnalysisFolder.of_sae(out_root, source)
        quoted = shlex.quote(source)
        remake = (f"`workbench analyze features {quoted}` then " if by == "lobes" else "") + \
            f"`workbench analyze geometry {quoted}`"
        if folder.record("geometry") is None:
            notes.append(f"layer {layer}'s transcoder ({source}) had no geometry analysis when this graph was made, so "
                         f"no {by[:-1]} groups there; make one with {remake}, then rebuild the graph")
        elif not folder.has(GEOMETRY_TABLES[by]):
            notes.append(f"layer {layer}'s geometry analysis has no per-feature lobes (made without the dashboards' "
                         f"co-occurrence counts, or before lobes were stored), so no lobe groups there; run {remake}, "
                         "then rebuild the graph")
        elif by == "lobes":
            frame = folder.read_table(GEOMETRY_TABLES[by], ["feature", "lobe"])
            geometry[layer] = FeatureGeometry(lobes=dict(zip(frame.feature.tolist(), frame.lobe.tolist())))
        else:
            frame = folder.read_table(GEOMETRY_TABLES[by], ["a", "b", "c", "d", "cluster"])
            geometry[layer] = FeatureGeometry(crystals=[set(quads[list("abcd")].to_numpy().ravel().tolist())
                                                        for _, quads in frame.groupby("cluster")])
    return geometry, notes


def check_groupings(groupings) -> tuple[str, ...]:
    """The supernode groupings asked for, each one of ``GROUPINGS`` (else a one-line error)."""
    groupings = tuple(groupings)
    unknown = [by for by in groupings if by not in GROUPINGS]
    if unknown:
        raise InputError(f"unknown supernode grouping {', '.join(unknown)}; use any of {', '.join(GROUPINGS)}")
    return groupings


def grouped(model, graph: AttributionGraph, pruned: PruneResult, by_layer: dict[int, Transcoder],
            sources: dict[int, str], out_root: Path | str, groupings: tuple[str, ...], decoder_threshold: float,
            coactivation_threshold: float) -> dict[str, dict]:
    """Per grouping: its scored supernodes and the notes on layers it could not group (no stored geometry)."""
    out = {}
    for by in groupings:
        geometry, notes = stored_geometry(out_root, sources, by) if by != "decoder" else (None, [])
        out[by] = {"groups": supernodes(model, graph, pruned, by_layer, decoder_threshold, coactivation_threshold,
                                        by, geometry), "notes": notes}
    return out


def analyze_graph(model, transcoder_paths: list[Path | str], prompt: str | list[int], out_root: Path | str, *,
                  slug: str | None = None, node_threshold: float = 0.8, edge_threshold: float = 0.98,
                  n_checks: int = 20, batch_size: int = 64, max_bytes: int | None = None,
                  max_feature_nodes: int | None = None, decoder_threshold: float = DECODER_THRESHOLD,
                  coactivation_threshold: float = COACTIVATION_THRESHOLD,
                  groupings: tuple[str, ...] = GROUPINGS, on_estimate=None,
                  on_progress=None) -> tuple[AnalysisFolder, dict]:
    """Compute, prune, score, check, group (supernodes, by each of ``groupings``; ``lobes`` and ``crystals`` from
    the transcoders' geometry analyses under ``out_root``) and store one prompt's graph; returns its folder and
    summary (the supernodes are in it, so they are stored with the graph or not at all)."""
    groupings = check_groupings(groupings)
    by_layer, sources = load_transcoder_set(transcoder_paths, model.cfg.device)
    slug = slug or default_slug(prompt if isinstance(prompt, str) else " ".join(map(str, prompt)))
    start = time.perf_counter()
    graph = attribute(model, by_layer, prompt, batch_size=batch_size, max_bytes=max_bytes,
                      max_feature_nodes=max_feature_nodes, on_estimate=on_estimate, on_progress=on_progress)
    seconds = time.perf_counter() - start
    pruned = prune_graph(graph, node_threshold, edge_threshold)
    replacement, completeness = graph_scores(graph)
    check = intervention_check(model, graph, by_layer, top_edges(graph, n_checks, node_threshold, edge_threshold))
    by_grouping = grouped(model, graph, pruned, by_layer, sources, out_root, groupings, decoder_threshold,
                          coactivation_threshold)
    targets = torch.cat([torch.arange(graph.n_features), graph.logit_start + torch.arange(graph.n_logits)])
    summary = {
        "slug": slug, "prompt": graph.prompt, "n_tokens": graph.n_pos, "n_features": graph.n_features,
        "n_active_features": graph.n_active_features, "max_feature_nodes": max_feature_nodes,
        "n_nodes": graph.n_nodes, "kept_nodes": int(pruned.node_mask.sum()), "kept_edges": int(pruned.edge_mask.sum()),
        "node_threshold": node_threshold, "edge_threshold": edge_threshold,
        "replacement_score": replacement, "completeness_score": completeness,
        "max_completeness_residual": float(graph.completeness_residual()[targets].abs().max()),
        "top_logits": [{"token": s, "probability": float(p)} for s, p in zip(graph.logit_strings,
                                                                              graph.logit_probabilities)],
        "top_paths": top_paths(graph, pruned), "attribution_seconds": round(seconds, 3),
        "intervention": {k: v for k, v in check.items() if k != "rows"}, "notes": graph.notes,
        "supernodes": by_grouping.get("decoder", {}).get("groups", []), "supernode_groupings": by_grouping,
        "supernode_thresholds": {"decoder_cosine": decoder_threshold, "coactivation_jaccard": coactivation_threshold},
        "transcoders": {str(k): v for k, v in sources.items()},
    }
    folder = AnalysisFolder.graph(out_root, slug)
    folder.discard_graph()  # absent until write_graph's JSON lands: a kill never leaves old scores on new tables
    folder.write_tables({GRAPH_NODES: node_table(graph, pruned, sources), GRAPH_EDGES: edge_table(graph, pruned),
                         GRAPH_CHECKS: pd.DataFrame(check["rows"])}, by_feature=False)
    folder.write_circuit_tracer(slug, circuit_tracer_json(graph, pruned, slug, scan=f"workbench-{model.cfg.model_name}",
                                                          node_threshold=node_threshold))
    folder.write_graph(graph.tensors(), {**graph.meta(), "summary": summary})
    return folder, summary


class StaleGraphError(InputError):
    """A stored graph written in another format version: it is rebuilt, not drawn."""

    def __init__(self, folder: Path, reason: str, command: str):
        super().__init__(f"the graph in {folder} cannot be drawn: {reason}; rebuild it with: {command}")
        self.reason, self.command = reason, command


def rebuild_command(folder: AnalysisFolder, meta: dict) -> str:
    """The ``workbench analyze graph`` line that rewrites this graph in place (its prompt, transcoders, slug)."""
    summary = meta.get("summary") or {}
    transcoders = summary.get("transcoders") or meta.get("transcoders") or {}
    parts = ["workbench analyze graph --prompt", shlex.quote(str(meta.get("prompt", "...")))]
    parts += [f"-t {shlex.quote(str(path))}" for _, path in sorted(transcoders.items(), key=lambda kv: int(kv[0]))]
    parts += [f"--slug {shlex.quote(folder.path.name)}", f"--out {shlex.quote(str(folder.path.parent.parent))}"]
    model = meta.get("model") or DEMO_MODEL_NAME
    return " ".join(parts + ([] if model == DEMO_MODEL_NAME else [f"--model {shlex.quote(model)}"]))


def stale_graph(folder: Path | str | AnalysisFolder) -> StaleGraphError | None:
    """The error a stored graph of another format version gets (None when this version draws it); JSON only."""
    folder = folder if isinstance(folder, AnalysisFolder) else AnalysisFolder(folder)
    meta = folder.read_graph_meta()
    reason = format_problem(meta)
    return None if reason is None else StaleGraphError(folder.path, reason, rebuild_command(folder, meta))


def read_graph(folder: Path | str | AnalysisFolder) -> tuple[AttributionGraph, dict]:
    """A stored graph and its summary; a graph in another format version is refused (``StaleGraphError``, with
    the command that rebuilds it)."""
    folder = folder if isinstance(folder, AnalysisFolder) else AnalysisFolder(folder)
    if not folder.has_graph:
        raise InputError(f"{folder.path} holds no attribution graph; make one with `workbench analyze graph`")
    stale = stale_graph(folder)
    if stale is not None:
        raise stale
    tensors, meta = folder.read_graph()
    return AttributionGraph.from_parts(tensors, meta), meta.get("summary", {})


__all__ = ["StaleGraphError", "analyze_graph", "load_transcoder_set", "read_graph", "stale_graph", "top_paths"]
