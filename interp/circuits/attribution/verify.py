"""Checks of a graph's edges by intervention: remove a source node and measure its target.

In the replacement model (patterns and scales frozen, every other node held at its value) removing source s
changes target t by exactly ``−A[t, s]`` (the model is linear there), so agreement to float tolerance checks
the backward passes. In the real model (attention, layer norms and MLPs recomputed) the change is the total
effect; its correlation with ``−A[t, s]`` says how far the linear picture holds. Each intervention is one
batch row, so a set of edges costs one forward pass per model.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.circuits.attribution.attribute import frozen_parameters
from interp.circuits.attribution.graph import AttributionGraph
from interp.circuits.attribution.prune import prune_graph
from interp.circuits.attribution.replacement import CleanState, check_transcoders, clean_state, frozen_forward


def top_edges(graph: AttributionGraph, n: int = 20, node_threshold: float = 0.8,
              edge_threshold: float = 0.98) -> Int[Tensor, "m 2"]:
    """The ``n`` kept edges (target, source) of the pruned graph with the largest |weight|."""
    result = prune_graph(graph, node_threshold, edge_threshold)
    weights = graph.adjacency.abs() * result.edge_mask
    flat = torch.topk(weights.flatten(), min(n, int((weights > 0).sum()))).indices
    return torch.stack([flat // graph.n_nodes, flat % graph.n_nodes], 1)


def _source_delta(graph: AttributionGraph, state: CleanState, source: int) -> tuple[str, int, int, Tensor]:
    """``(where, layer, position, delta)``: removing the source adds ``delta`` to layer's MLP output (``where`` =
    "mlp") or to the token vector ("token") at that position."""
    kind = graph.kind(source)
    if kind == "feature":
        layer, pos, feature = (int(v) for v in graph.active_features[source])
        return "mlp", layer, pos, -graph.activations[source] * state.transcoders[layer].W_dec[feature]
    if kind == "error":
        layer, pos = divmod(source - graph.error_start, graph.n_pos)
        return "mlp", layer, pos, -state.errors(layer)[pos]
    pos = source - graph.token_start
    return "token", -1, pos, -state.token_vectors[pos]


def _target_reader(graph: AttributionGraph, state: CleanState, target: int, W_U: Tensor) -> tuple[int, int, Tensor]:
    """``(layer, position, vector)``: the target's readout is ``stack[layer][position] · vector``."""
    if graph.kind(target) == "feature":
        layer, pos, feature = (int(v) for v in graph.active_features[target])
        return layer, pos, state.transcoders[layer].W_enc[:, feature]
    i = target - graph.logit_start
    token = int(graph.logit_tokens[i])
    return graph.n_layers, graph.n_pos - 1, (W_U[:, token] - W_U.mean(dim=1)).detach()


@torch.no_grad()
def intervention_check(model, graph: AttributionGraph, transcoders, edges: Int[Tensor, "m 2"]) -> dict:
    """For each edge (target, source): the edge weight, the target's change when the source is removed in the
    replacement model and in the real model. Returns the rows and summary numbers."""
    by_layer, _ = check_transcoders(model, transcoders)
    by_layer = {layer: tc.to(device=model.cfg.device) for layer, tc in by_layer.items()}
    state = clean_state(model, graph.tokens.to(model.cfg.device), by_layer)
    with frozen_parameters(model):
        replacement = _replacement_changes(model, graph, state, edges)
        real = real_changes(model, graph, state, [(t, [s]) for t, s in edges.tolist()])
    weights = graph.adjacency[edges[:, 0], edges[:, 1]]
    rows = [{"target": graph.describe(int(t))["label"], "source": graph.describe(int(s))["label"],
             "target_node": int(t), "source_node": int(s), "edge_weight": float(w),
             "replacement_change": float(r), "real_change": float(q)}
            for (t, s), w, r, q in zip(edges.tolist(), weights, replacement, real)]
    expected = -weights
    correlation = float(torch.corrcoef(torch.stack([real, expected]))[0, 1]) if len(edges) > 1 else float("nan")
    return {"rows": rows, "max_replacement_error": float((replacement - expected).abs().max()) if len(edges) else 0.0,
            "real_correlation": correlation,
            "real_mean_abs_ratio": float(real.abs().sum() / expected.abs().sum().clamp(min=1e-30))}


def _replacement_changes(model, graph: AttributionGraph, state: CleanState, edges: Tensor) -> Float[Tensor, " m"]:
    m = len(edges)
    tokens = state.token_vectors.float()[None].repeat(m, 1, 1)
    rest = [r.float()[None].repeat(m, 1, 1) for r in state.rest]
    readers = []
    for row, (target, source) in enumerate(edges.tolist()):
        where, layer, pos, delta = _source_delta(graph, state, source)
        (tokens if where == "token" else rest[layer])[row, pos] += delta
        readers.append(_target_reader(graph, state, target, model.W_U))
    inputs, u = frozen_forward(model, state, tokens, rest)
    stack = inputs + [u]
    clean = inputs_clean(state)
    return torch.stack([(stack[l][row, p] - clean[l][p]) @ v for row, (l, p, v) in enumerate(readers)]).cpu()


def inputs_clean(state: CleanState) -> list[Tensor]:
    return list(state.inputs) + [state.unembed_input]


def real_changes(model, graph: AttributionGraph, state: CleanState,
                 items: list[tuple[int, list[int]]]) -> Float[Tensor, " m"]:
    """The real model, one batch row per ``(target, sources)``: the sources removed (their deltas added at the MLP
    outputs or the embedding), the target's change read from the recomputed forward."""
    m, n_pos, d = len(items), graph.n_pos, state.token_vectors.shape[1]
    deltas = {"token": torch.zeros(m, n_pos, d)}
    deltas.update({layer: torch.zeros(m, n_pos, d) for layer in range(graph.n_layers)})
    readers = []
    for row, (target, sources) in enumerate(items):
        for source in sources:
            where, layer, pos, delta = _source_delta(graph, state, source)
            deltas["token" if where == "token" else layer][row, pos] += delta.cpu()
        readers.append(_target_reader(graph, state, target, model.W_U))
    device = model.cfg.device
    captured: dict = {}

    def add(act, hook, key):
        return act + deltas[key].to(device, act.dtype)

    hooks = [("hook_embed", lambda act, hook: add(act, hook, "token"))]
    hooks += [(state.output_hooks[l], lambda act, hook, l=l: add(act, hook, l)) for l in range(graph.n_layers)]
    hooks += [(state.input_hooks[l], lambda act, hook, l=l: captured.__setitem__(l, act.float()))
              for l in range(graph.n_layers)]
    handle = model.unembed.register_forward_pre_hook(lambda module, args: captured.__setitem__("u", args[0].float()))
    try:
        model.run_with_hooks(state.tokens[None].expand(m, -1), fwd_hooks=hooks)
    finally:
        handle.remove()
    stack = [captured[l] for l in range(graph.n_layers)] + [captured["u"]]
    clean = inputs_clean(state)
    return torch.stack([(stack[l][row, p] - clean[l][p]) @ v for row, (l, p, v) in enumerate(readers)]).cpu()
