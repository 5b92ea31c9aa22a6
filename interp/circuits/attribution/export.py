"""The graph as circuit-tracer's graph JSON (``utils/create_graph_files``: ``Model`` of ``frontend/graph_models``),
which its local viewer (``circuit_tracer.frontend``) serves. Node ids, feature numbering (Cantor pairing of
layer and feature) and the kept-node rule (connected by a kept edge, or a token or logit) are circuit-tracer's.
"""

from __future__ import annotations

from interp.circuits.attribution.graph import AttributionGraph
from interp.circuits.attribution.prune import PruneResult


def cantor_pairing(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def _node(graph: AttributionGraph, node: int, influence: float) -> dict:
    info = graph.describe(node)
    base = {"token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "",
            "influence": influence, "activation": None, "ctx_idx": info["pos"]}
    layer, pos = info["layer"], info["pos"]
    if info["kind"] == "feature":
        feature = info["feature"]
        return {**base, "node_id": f"{layer}_{feature}_{pos}", "feature": cantor_pairing(layer, feature),
                "layer": str(layer), "feature_type": "cross layer transcoder", "jsNodeId": f"{layer}_{feature}-0",
                "activation": float(graph.activations[node])}
    if info["kind"] == "error":
        return {**base, "node_id": f"0_{layer}_{pos}", "feature": -1, "layer": str(layer),
                "feature_type": "mlp reconstruction error", "jsNodeId": f"{layer}_{pos}-0"}
    if info["kind"] == "token":
        vocab = int(graph.tokens[pos])
        return {**base, "node_id": f"E_{vocab}_{pos}", "feature": pos, "layer": "E", "feature_type": "embedding",
                "jsNodeId": f"E_{vocab}-{pos}"}
    i = node - graph.logit_start
    vocab, prob = int(graph.logit_tokens[i]), float(graph.logit_probabilities[i])
    token = graph.logit_strings[i] if i < len(graph.logit_strings) else str(vocab)
    layer = str(graph.n_layers + 1)
    return {**base, "node_id": f"{layer}_{vocab}_{pos}", "feature": vocab, "layer": layer, "feature_type": "logit",
            "token_prob": prob, "is_target_logit": i == 0, "jsNodeId": f"L_{vocab}-{pos}",
            "clerp": f'Output "{token}" (p={prob:.3f})'}


def circuit_tracer_json(graph: AttributionGraph, pruned: PruneResult, slug: str, scan: str,
                        node_threshold: float = 0.8) -> dict:
    """The pruned graph in circuit-tracer's schema (metadata, qParams, nodes, links)."""
    nodes = {int(n): _node(graph, int(n), float(pruned.cumulative_scores[n]))
             for n in pruned.node_mask.nonzero().flatten()}
    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    links = [{"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": float(graph.adjacency[t, s])}
             for t, s in zip(targets.tolist(), sources.tolist()) if s in nodes and t in nodes]
    connected = {link["source"] for link in links} | {link["target"] for link in links}
    used = [node for node in nodes.values()
            if node["node_id"] in connected or node["feature_type"] in ("embedding", "logit")]
    metadata = {"slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": graph.token_strings,
                "prompt": graph.prompt, "node_threshold": node_threshold, "schema_version": 1}
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": used, "links": links}
