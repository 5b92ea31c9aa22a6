"""Sparse feature circuits (Marks et al.): attribute a metric to SAE features and SAE error terms.

At each site the activation is spliced as ``x = decode(f) + ε`` with ``ε = x - decode(encode(x))``,
so the model's forward is unchanged and every feature and each position's error is a node.
Node effects: attribution patching (one forward + one backward) or integrated gradients (midpoint
rule over ``steps`` interpolations, run as one batched forward + backward per site). Edges between
two sites: ``∇_d m · ∂d/∂u · Δu`` by one backward per kept downstream node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.attention import CircuitInputError, check_hook, check_tokens, write_json
from interp.dictionary import Dictionary, as_dictionary, check_fits
from interp.patching import Metric


@dataclass
class SiteValues:
    """Features ``f [batch, pos, d_sae]`` and error ``ε [batch, pos, d_in]`` at one site."""

    features: Tensor
    error: Tensor


def _encode(dictionary: Dictionary, x: Tensor) -> Tensor:
    flat = x.reshape(-1, x.shape[-1])
    return dictionary.encode(flat).reshape(*x.shape[:-1], -1)


def _decode(dictionary: Dictionary, f: Tensor) -> Tensor:
    flat = f.reshape(-1, f.shape[-1])
    return dictionary.decode(flat).reshape(*f.shape[:-1], -1)


def _check_sites(model, sites: dict[str, Dictionary]) -> dict[str, Dictionary]:
    if not sites:
        raise CircuitInputError("no SAE sites given; pass {hook_name: dictionary}")
    for hook in sites:
        check_hook(model, hook)
    order = {name: i for i, name in enumerate(model.hook_dict)}
    return {hook: as_dictionary(sites[hook]) for hook in sorted(sites, key=order.__getitem__)}


def _splice(hook: str, dictionary: Dictionary, store: dict, override: SiteValues | None = None, track: bool = False) -> Callable:
    """Hook that splices the dictionary in at ``hook`` and records ``f``/``ε`` in ``store[hook]``.

    ``track``: ``f`` and ``ε`` become grad leaves while the output keeps the value and the gradient
    of ``x`` (so upstream gradients are exact); ``override``: output ``decode(f) + ε`` from given
    values; neither: plain values (``f`` stays a function of ``x`` when grads are on).
    """

    def fn(x, hook=None):
        check_fits(dictionary, x.shape[-1], f"hook {hook.name}")
        if override is not None:
            store[hook.name] = override
            return _decode(dictionary, override.features) + override.error
        f = _encode(dictionary, x)
        if not track:
            store[hook.name] = SiteValues(f, x - _decode(dictionary, f))
            return x
        f = f.detach().requires_grad_()
        error = (x - _decode(dictionary, f)).detach().requires_grad_()
        store[hook.name] = SiteValues(f, error)
        reconstruction = _decode(dictionary, f)
        return x + (reconstruction - reconstruction.detach()) + (error - error.detach())

    return fn


def site_values(model, tokens: Int[Tensor, "batch pos"], sites: dict[str, Dictionary]) -> dict[str, SiteValues]:
    """Features and errors at every site on ``tokens`` (no gradients)."""
    store: dict[str, SiteValues] = {}
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(h, _splice(h, d, store)) for h, d in sites.items()])
    return store


def _patch_values(model, tokens, patch, sites) -> dict[str, SiteValues]:
    if isinstance(patch, Tensor):
        patch = check_tokens(model, patch)
        if patch.shape != tokens.shape:
            raise CircuitInputError(f"patch prompts {tuple(patch.shape)} must match the clean prompts {tuple(tokens.shape)}")
        return site_values(model, patch, sites)
    clean = site_values(model, tokens, sites)
    if patch == "zero":
        return {h: SiteValues(torch.zeros_like(v.features), torch.zeros_like(v.error)) for h, v in clean.items()}
    if patch == "mean":
        return {h: SiteValues(v.features.mean((0, 1), keepdim=True).expand_as(v.features),
                              v.error.mean((0, 1), keepdim=True).expand_as(v.error)) for h, v in clean.items()}
    raise CircuitInputError(f"patch must be corrupted tokens, 'zero' or 'mean'; got {patch!r}")


def node_attribution(
    model, tokens: Int[Tensor, "batch pos"], metric: Metric, sites: dict[str, Dictionary],
    patch: Tensor | str = "zero", method: str = "atp", steps: int = 10,
) -> dict[str, dict[str, Tensor]]:
    """Indirect effect of patching each feature and each error term, per site.

    Returns ``{hook: {"features": [pos, d_sae], "error": [pos]}}`` summed over prompts (the metric
    is a mean over prompts, so these add up to the change of that mean). ``method`` is ``atp``
    (``∇m|clean · Δ``) or ``ig`` (``Δ · mean_α ∇m|clean+αΔ``, other sites free to respond).
    """
    tokens = check_tokens(model, tokens)
    sites = _check_sites(model, sites)
    if method not in ("atp", "ig"):
        raise CircuitInputError(f"method must be 'atp' or 'ig'; got {method!r}")
    target = _patch_values(model, tokens, patch, sites)
    if method == "atp":
        store: dict[str, SiteValues] = {}
        with torch.enable_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=[(h, _splice(h, d, store, track=True)) for h, d in sites.items()])
            metric(logits).backward()
        grads = {h: SiteValues(v.features.grad, v.error.grad) for h, v in store.items()}
        values = {h: SiteValues(v.features.detach(), v.error.detach()) for h, v in store.items()}
    else:
        values = site_values(model, tokens, sites)
        grads = {hook: _ig_gradients(model, tokens, metric, sites, hook, values[hook], target[hook], steps) for hook in sites}
    model.zero_grad(set_to_none=True)
    return {
        hook: {
            "features": ((target[hook].features - values[hook].features) * grads[hook].features).sum(0).detach(),
            "error": ((target[hook].error - values[hook].error) * grads[hook].error).sum((0, -1)).detach(),
        }
        for hook in sites
    }


def _ig_gradients(model, tokens, metric, sites, hook, clean: SiteValues, patched: SiteValues, steps: int) -> SiteValues:
    """Mean gradient at ``clean + α Δ`` for the midpoints α = (k + ½)/steps, batched over α."""
    batch = tokens.shape[0]
    alphas = ((torch.arange(steps, device=tokens.device) + 0.5) / steps).repeat_interleave(batch)[:, None, None]
    f = (clean.features.repeat(steps, 1, 1) + alphas * (patched.features - clean.features).repeat(steps, 1, 1)).requires_grad_()
    e = (clean.error.repeat(steps, 1, 1) + alphas * (patched.error - clean.error).repeat(steps, 1, 1)).requires_grad_()
    store: dict[str, SiteValues] = {}
    hooks = [(h, _splice(h, d, store, SiteValues(f, e) if h == hook else None)) for h, d in sites.items()]
    with torch.enable_grad():
        logits = model.run_with_hooks(tokens.repeat(steps, 1), fwd_hooks=hooks)
        total = sum(metric(logits[k * batch:(k + 1) * batch]) for k in range(steps))
        total.backward()
    return SiteValues(f.grad.reshape(steps, *clean.features.shape).mean(0),
                      e.grad.reshape(steps, *clean.error.shape).mean(0))


def _metric_gradients(model, tokens, metric, sites) -> tuple[dict[str, SiteValues], dict[str, SiteValues]]:
    store: dict[str, SiteValues] = {}
    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(h, _splice(h, d, store, track=True)) for h, d in sites.items()])
        metric(logits).backward()
    model.zero_grad(set_to_none=True)
    values = {h: SiteValues(v.features.detach(), v.error.detach()) for h, v in store.items()}
    return values, {h: SiteValues(v.features.grad, v.error.grad) for h, v in store.items()}


def edge_attribution(
    model, tokens, metric: Metric, sites: dict[str, Dictionary], upstream: str, downstream: str,
    downstream_features: list[int], patch: Tensor | str = "zero",
) -> dict[str, Tensor]:
    """``IE(u -> d) ≈ ∇_d m · ∂d/∂u · Δu`` for every upstream feature/error into each chosen downstream node.

    Returns ``{"features": [n_down + 1, d_sae_u], "error": [n_down + 1]}``; the last downstream row is
    the downstream error node. Summed over prompts and positions; one backward per downstream node.
    """
    tokens = check_tokens(model, tokens)
    sites = _check_sites(model, sites)
    hooks = list(sites)
    if upstream not in sites or downstream not in sites or hooks.index(upstream) >= hooks.index(downstream):
        raise CircuitInputError(f"edges need two sites with '{upstream}' before '{downstream}'; sites are {hooks}")
    values, grads = _metric_gradients(model, tokens, metric, sites)
    target = _patch_values(model, tokens, patch, sites)
    leaf = SiteValues(values[upstream].features.clone().requires_grad_(), values[upstream].error.clone().requires_grad_())
    store: dict[str, SiteValues] = {}
    splices = [(h, _splice(h, d, store, leaf if h == upstream else None)) for h, d in sites.items()]
    delta_f = target[upstream].features - values[upstream].features
    delta_e = target[upstream].error - values[upstream].error
    rows_f, rows_e = [], []
    with torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=splices)
        down, g = store[downstream], grads[downstream]
        scalars = [(g.features[..., j] * down.features[..., j]).sum() for j in downstream_features]
        scalars.append((g.error * down.error).sum())
        for scalar in scalars:
            grad_f, grad_e = torch.autograd.grad(scalar, [leaf.features, leaf.error], retain_graph=True, allow_unused=True)
            rows_f.append((grad_f * delta_f).sum((0, 1)) if grad_f is not None else torch.zeros(delta_f.shape[-1]))
            rows_e.append((grad_e * delta_e).sum() if grad_e is not None else torch.zeros(()))
    model.zero_grad(set_to_none=True)
    return {"features": torch.stack(rows_f).detach(), "error": torch.stack(rows_e).detach()}


def feature_circuit(
    model, tokens, metric: Metric, sites: dict[str, Dictionary], patch: Tensor | str = "zero",
    method: str = "ig", steps: int = 10, node_threshold: float = 0.0, edge_threshold: float = 0.0, top_k: int = 8,
) -> dict:
    """The circuit graph: nodes (features and error terms with ``|IE| >= node_threshold``, at most
    ``top_k`` per site), edges between consecutive sites (``|IE| >= edge_threshold``), and each
    last-site node's edge into the metric. Effects are summed over prompts and positions.
    """
    sites = _check_sites(model, sites)
    effects = node_attribution(model, tokens, metric, sites, patch, method, steps)
    nodes, kept = [], {}
    for hook, effect in effects.items():
        per_feature = effect["features"].sum(0)
        order = per_feature.abs().argsort(descending=True)[:top_k]
        kept[hook] = [int(i) for i in order if abs(float(per_feature[i])) >= node_threshold]
        nodes += [{"id": f"{hook}/{i}", "hook": hook, "feature": i, "effect": float(per_feature[i])} for i in kept[hook]]
        error = float(effect["error"].sum())
        nodes.append({"id": f"{hook}/error", "hook": hook, "feature": -1, "effect": error})
    edges = []
    hooks = list(sites)
    for up, down in zip(hooks, hooks[1:]):
        weights = edge_attribution(model, tokens, metric, sites, up, down, kept[down], patch)
        targets = [f"{down}/{j}" for j in kept[down]] + [f"{down}/error"]
        for row, target in enumerate(targets):
            sources = [(f"{up}/{i}", float(weights["features"][row, i])) for i in kept[up]]
            sources.append((f"{up}/error", float(weights["error"][row])))
            edges += [{"source": s, "target": target, "weight": w} for s, w in sources if abs(w) >= edge_threshold]
    edges += [{"source": n["id"], "target": "metric", "weight": n["effect"]} for n in nodes if n["hook"] == hooks[-1]]
    return {"sites": hooks, "method": method, "nodes": nodes, "edges": edges}


def faithfulness(model, tokens, metric: Metric, sites: dict[str, Dictionary], circuit: dict[str, list[int]]) -> float:
    """``(m(C) - m(∅)) / (m(M) - m(∅))``: keep only the circuit's nodes (feature ids, ``-1`` for the
    error node) at each site and mean-ablate the rest over prompts and positions; ∅ ablates every node."""
    tokens = check_tokens(model, tokens)
    sites = _check_sites(model, sites)
    clean = site_values(model, tokens, sites)
    means = _patch_values(model, tokens, "mean", sites)

    def run(keep: dict[str, list[int]]) -> float:
        overrides = {}
        for hook, value in clean.items():
            mask = torch.zeros(value.features.shape[-1], dtype=torch.bool, device=value.features.device)
            mask[[i for i in keep.get(hook, []) if i >= 0]] = True
            features = torch.where(mask, value.features, means[hook].features)
            error = value.error if -1 in keep.get(hook, []) else means[hook].error
            overrides[hook] = SiteValues(features, error)
        with torch.no_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=[(h, _splice(h, d, {}, overrides[h])) for h, d in sites.items()])
            return float(metric(logits))

    with torch.no_grad():
        full = float(metric(model(tokens)))
    empty = run({})
    return (run(circuit) - empty) / (full - empty)


def circuit_nodes(graph: dict) -> dict[str, list[int]]:
    """The ``{hook: [feature ids, -1 for error]}`` of a ``feature_circuit`` graph, for ``faithfulness``."""
    nodes: dict[str, list[int]] = {hook: [] for hook in graph["sites"]}
    for node in graph["nodes"]:
        nodes[node["hook"]].append(node["feature"])
    return nodes


def write_feature_circuit(folder: Path | str, graph: dict) -> list[Path]:
    """``feature_circuit.json`` (the graph) and ``feature_nodes.parquet`` (``id, hook, feature, effect``)."""
    import pandas as pd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(graph["nodes"]).to_parquet(folder / "feature_nodes.parquet", index=False)
    return [folder / "feature_nodes.parquet", write_json(folder / "feature_circuit.json", graph)]


def feature_effects_by_patching(
    model, tokens, metric: Metric, sites: dict[str, Dictionary], hook: str, features: list[int], patch: Tensor | str = "zero",
) -> Float[Tensor, "n_features"]:
    """Exact indirect effects, one forward per feature (the naive loop attribution patching replaces)."""
    tokens = check_tokens(model, tokens)
    sites = _check_sites(model, sites)
    values = site_values(model, tokens, sites)[hook]
    target = _patch_values(model, tokens, patch, sites)[hook]
    out = torch.zeros(len(features))
    with torch.no_grad():
        base = metric(model(tokens))
        for n, i in enumerate(features):
            f = values.features.clone()
            f[..., i] = target.features[..., i]
            splices = [(hook, _splice(hook, sites[hook], {}, SiteValues(f, values.error)))]
            out[n] = metric(model.run_with_hooks(tokens, fwd_hooks=splices)) - base
    return out
