"""Sparse feature circuits (Marks et al.): attribute a metric to SAE features and SAE error terms.

At each site the activation is spliced as ``x = decode(f) + ε`` with ``ε = x - decode(encode(x))``,
so the model's forward is unchanged and every feature and every position's error is a node.
As the reference code (saprmarks/feature-circuits) does it: node effects by integrated gradients
(or attribution patching), nodes kept per position and feature above a threshold, edges between
every pair of sites with no residual-stream site between them (resid→attn/mlp/resid, attn→mlp/resid,
mlp→resid) with gradients stopped at the sites in between, each edge weighted with the downstream
node's IG-averaged gradient; mean ablation averages over the batch only (per position).
Remaining deviations are listed in ``interp/CIRCUITS.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.circuits.attention import CircuitInputError, check_tokens
from interp.circuits.patching import Metric
from interp.features.dictionary import Dictionary, as_dictionary, check_fits
from interp.models.loading import check_hooks

Node = tuple[int, int]  # (position, feature); feature -1 is the position's error node
ALL = -1  # a node's position when effects are summed over positions (the paper's choice for non-templatic prompts)


@dataclass
class SiteValues:
    """Features ``f [batch, pos, d_sae]`` and error ``ε [batch, pos, d_in]`` at one site."""

    features: Tensor
    error: Tensor


def _encode(dictionary: Dictionary, x: Tensor) -> Tensor:
    return dictionary.encode(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


def _decode(dictionary: Dictionary, f: Tensor) -> Tensor:
    return dictionary.decode(f.reshape(-1, f.shape[-1])).reshape(*f.shape[:-1], -1)


def _check_sites(model, sites: dict[str, Dictionary]) -> dict[str, Dictionary]:
    if not sites:
        raise CircuitInputError("no SAE sites given; pass {hook_name: dictionary}")
    for hook in sites:
        check_hooks(model, [hook], CircuitInputError)
    order = {name: i for i, name in enumerate(model.hook_dict)}
    return {hook: as_dictionary(sites[hook]) for hook in sorted(sites, key=order.__getitem__)}


def _splice(
    hook: str, dictionary: Dictionary, store: dict, override: SiteValues | None = None, track: bool = False
) -> Callable:
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


def _stop_gradient(x, hook=None):
    return x.detach()


def site_values(model, tokens: Int[Tensor, "batch pos"], sites: dict[str, Dictionary]) -> dict[str, SiteValues]:
    """Features and errors at every site on ``tokens`` (no gradients)."""
    store: dict[str, SiteValues] = {}
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(h, _splice(h, d, store)) for h, d in sites.items()])
    return store


def _batch_mean(value: SiteValues) -> SiteValues:
    """The reference's mean ablation: the mean over prompts, per position."""
    return SiteValues(
        value.features.mean(0, keepdim=True).expand_as(value.features),
        value.error.mean(0, keepdim=True).expand_as(value.error),
    )


def _patch_values(model, tokens, patch, sites) -> dict[str, SiteValues]:
    if isinstance(patch, Tensor):
        patch = check_tokens(model, patch)
        if patch.shape != tokens.shape:
            raise CircuitInputError(
                f"patch prompts {tuple(patch.shape)} must match the clean prompts {tuple(tokens.shape)}"
            )
        return site_values(model, patch, sites)
    clean = site_values(model, tokens, sites)
    if patch == "zero":
        return {h: SiteValues(torch.zeros_like(v.features), torch.zeros_like(v.error)) for h, v in clean.items()}
    if patch == "mean":
        return {h: _batch_mean(v) for h, v in clean.items()}
    raise CircuitInputError(f"patch must be corrupted tokens, 'zero' or 'mean'; got {patch!r}")


@dataclass
class Attribution:
    """Clean values, patch targets and metric gradients (IG-averaged for ``ig``) at every site."""

    values: dict[str, SiteValues]
    target: dict[str, SiteValues]
    grads: dict[str, SiteValues]

    def effects(self, hook: str) -> dict[str, Tensor]:
        """``{"features": [pos, d_sae], "error": [pos]}`` summed over prompts."""
        v, t, g = self.values[hook], self.target[hook], self.grads[hook]
        return {
            "features": ((t.features - v.features) * g.features).sum(0).detach(),
            "error": ((t.error - v.error) * g.error).sum((0, -1)).detach(),
        }


def attribute(
    model,
    tokens,
    metric: Metric,
    sites: dict[str, Dictionary],
    patch: Tensor | str = "zero",
    method: str = "ig",
    steps: int = 10,
    rule: str = "left",
) -> Attribution:
    """Values, targets and gradients for node and edge effects.

    ``atp``: the clean gradient (one forward + backward). ``ig``: the mean gradient at
    ``clean + α Δ`` for α = k/steps (``rule="left"``, the reference's points) or (k + ½)/steps
    (``"midpoint"``), one batched forward + backward per site, other sites free to respond.
    """
    tokens = check_tokens(model, tokens)
    if method not in ("atp", "ig"):
        raise CircuitInputError(f"method must be 'atp' or 'ig'; got {method!r}")
    if rule not in ("left", "midpoint"):
        raise CircuitInputError(f"rule must be 'left' or 'midpoint'; got {rule!r}")
    target = _patch_values(model, tokens, patch, sites)
    if method == "atp":
        store: dict[str, SiteValues] = {}
        with torch.enable_grad():
            logits = model.run_with_hooks(
                tokens, fwd_hooks=[(h, _splice(h, d, store, track=True)) for h, d in sites.items()]
            )
            metric(logits).backward()
        grads = {h: SiteValues(v.features.grad, v.error.grad) for h, v in store.items()}
        values = {h: SiteValues(v.features.detach(), v.error.detach()) for h, v in store.items()}
    else:
        values = site_values(model, tokens, sites)
        offset = 0.0 if rule == "left" else 0.5
        grads = {
            hook: _ig_gradients(model, tokens, metric, sites, hook, values[hook], target[hook], steps, offset)
            for hook in sites
        }
    model.zero_grad(set_to_none=True)
    return Attribution(values, target, grads)


def node_attribution(
    model,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    sites: dict[str, Dictionary],
    patch: Tensor | str = "zero",
    method: str = "atp",
    steps: int = 10,
    rule: str = "left",
) -> dict[str, dict[str, Tensor]]:
    """Indirect effect of patching each feature and each error term, per site and position.

    Returns ``{hook: {"features": [pos, d_sae], "error": [pos]}}`` summed over prompts (the metric
    is a mean over prompts, so these add up to the change of that mean).
    """
    sites = _check_sites(model, sites)
    result = attribute(model, tokens, metric, sites, patch, method, steps, rule)
    return {hook: result.effects(hook) for hook in sites}


def _ig_gradients(
    model, tokens, metric, sites, hook, clean: SiteValues, patched: SiteValues, steps: int, offset: float
) -> SiteValues:
    batch = tokens.shape[0]
    alphas = ((torch.arange(steps, device=tokens.device) + offset) / steps).repeat_interleave(batch)[:, None, None]
    f = (
        clean.features.repeat(steps, 1, 1) + alphas * (patched.features - clean.features).repeat(steps, 1, 1)
    ).requires_grad_()
    e = (clean.error.repeat(steps, 1, 1) + alphas * (patched.error - clean.error).repeat(steps, 1, 1)).requires_grad_()
    store: dict[str, SiteValues] = {}
    hooks = [(h, _splice(h, d, store, SiteValues(f, e) if h == hook else None)) for h, d in sites.items()]
    with torch.enable_grad():
        logits = model.run_with_hooks(tokens.repeat(steps, 1), fwd_hooks=hooks)
        sum(metric(logits[k * batch : (k + 1) * batch]) for k in range(steps)).backward()
    return SiteValues(
        f.grad.reshape(steps, *clean.features.shape).mean(0), e.grad.reshape(steps, *clean.error.shape).mean(0)
    )


def edge_pairs(hooks: list[str]) -> list[tuple[str, str]]:
    """Site pairs that get edges: ``u`` before ``d`` with no residual-stream site strictly between
    (past one, every path runs through it, so stopping gradients there leaves nothing)."""
    return [
        (u, d)
        for i, u in enumerate(hooks)
        for j, d in enumerate(hooks[i + 1 :], i + 1)
        if not any("hook_resid" in m for m in hooks[i + 1 : j])
    ]


def edge_attribution(
    model,
    tokens,
    metric: Metric,
    sites: dict[str, Dictionary],
    upstream: str,
    downstream: str,
    downstream_nodes: list[Node],
    patch: Tensor | str = "zero",
    attribution: Attribution | None = None,
    method: str = "ig",
    steps: int = 10,
) -> dict[str, Tensor]:
    """``IE(u -> d) ≈ Σ_b g_d · ∂d/∂u · Δu`` from every upstream node into each given downstream node.

    ``g_d`` is the downstream node's (IG-averaged) metric gradient; ``∂d/∂u`` is taken with the
    gradient stopped at every site between ``upstream`` and ``downstream`` (direct edges only).
    Returns ``{"features": [n_down, pos, d_sae_u], "error": [n_down, pos]}`` summed over prompts;
    one backward per downstream node.
    """
    tokens = check_tokens(model, tokens)
    sites = _check_sites(model, sites)
    hooks = list(sites)
    if upstream not in sites or downstream not in sites or hooks.index(upstream) >= hooks.index(downstream):
        raise CircuitInputError(f"edges need two sites with '{upstream}' before '{downstream}'; sites are {hooks}")
    attribution = attribution or attribute(model, tokens, metric, sites, patch, method, steps)
    up = attribution.values[upstream]
    leaf = SiteValues(up.features.clone().requires_grad_(), up.error.clone().requires_grad_())
    between = hooks[hooks.index(upstream) + 1 : hooks.index(downstream)]
    store: dict[str, SiteValues] = {}
    splices = [
        (upstream, _splice(upstream, sites[upstream], {}, leaf)),
        (downstream, _splice(downstream, sites[downstream], store)),
    ]
    splices += [(h, _stop_gradient) for h in between]
    delta = SiteValues(
        attribution.target[upstream].features - up.features, attribution.target[upstream].error - up.error
    )
    g = attribution.grads[downstream]
    rows_f, rows_e = [], []
    with torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=splices)
        down = store[downstream]
        for pos, j in downstream_nodes:
            pos = slice(None) if pos == ALL else pos
            scalar = (
                (g.features[:, pos, j] * down.features[:, pos, j]).sum()
                if j >= 0
                else (g.error[:, pos] * down.error[:, pos]).sum()
            )
            grad_f, grad_e = torch.autograd.grad(
                scalar, [leaf.features, leaf.error], retain_graph=True, allow_unused=True
            )
            rows_f.append(
                (grad_f * delta.features).sum(0) if grad_f is not None else torch.zeros_like(delta.features[0])
            )
            rows_e.append(
                (grad_e * delta.error).sum((0, -1)) if grad_e is not None else torch.zeros_like(delta.error[0, :, 0])
            )
    model.zero_grad(set_to_none=True)
    empty = (0, *delta.features.shape[1:])
    return {
        "features": torch.stack(rows_f).detach() if rows_f else torch.zeros(empty),
        "error": torch.stack(rows_e).detach() if rows_e else torch.zeros(0, delta.error.shape[1]),
    }


def _node_id(hook: str, pos: int, feature: int) -> str:
    return f"{hook}/{'all' if pos == ALL else pos}/{'error' if feature < 0 else feature}"


def _over_positions(effects: dict[str, Tensor]) -> dict[str, Tensor]:
    """Effects summed over positions, kept as one position (index 0 stands for ``ALL``)."""
    return {"features": effects["features"].sum(0, keepdim=True), "error": effects["error"].sum(0, keepdim=True)}


def kept_nodes(effects: dict[str, Tensor], threshold: float, over_positions: bool = False) -> list[Node]:
    """``(pos, feature)`` with ``|effect| > threshold`` (features) and error nodes likewise (feature -1);
    ``over_positions``: effects summed over positions first, nodes ``(ALL, feature)``."""
    if over_positions:
        return [(ALL, j) for _, j in kept_nodes(_over_positions(effects), threshold)]
    features = [tuple(ix) for ix in (effects["features"].abs() > threshold).nonzero().tolist()]
    errors = [(int(p), -1) for p in (effects["error"].abs() > threshold).nonzero().flatten().tolist()]
    return features + errors


def _value(table: dict[str, Tensor], pos: int, j: int) -> float:
    """One node's entry of a ``{"features": [pos, d_sae], "error": [pos]}`` table (summed for ``ALL``)."""
    at = slice(None) if pos == ALL else pos
    return float((table["features"][at, j] if j >= 0 else table["error"][at]).sum())


def error_share(nodes: list[dict]) -> float:
    """Share of the nodes' total ``|effect|`` carried by SAE error nodes (feature -1): how much of a circuit
    the dictionaries do not explain. NaN without nodes."""
    total = sum(abs(n["effect"]) for n in nodes)
    return sum(abs(n["effect"]) for n in nodes if n["feature"] < 0) / total if total else float("nan")


def effect_error_shares(effects: dict[str, dict[str, Tensor]], over_positions: bool = False) -> dict:
    """``error_share`` over every node of every site (no threshold), overall and per site."""
    totals = {}
    for hook, e in effects.items():
        e = _over_positions(e) if over_positions else e
        totals[hook] = (float(e["error"].abs().sum()), float(e["features"].abs().sum()))

    def share(err: float, feat: float) -> float:
        return err / (err + feat) if err + feat else float("nan")

    return {
        "all_nodes": share(sum(t[0] for t in totals.values()), sum(t[1] for t in totals.values())),
        "by_site": {hook: share(*t) for hook, t in totals.items()},
    }


def feature_circuit(
    model,
    tokens,
    metric: Metric,
    sites: dict[str, Dictionary],
    patch: Tensor | str = "zero",
    method: str = "ig",
    steps: int = 10,
    node_threshold: float = 0.1,
    edge_threshold: float = 0.01,
    over_positions: bool = False,
    attribution: Attribution | None = None,
) -> dict:
    """The circuit graph: nodes ``(site, position, feature or error)`` with ``|IE| > node_threshold``,
    edges (``|IE| > edge_threshold``) between the kept nodes of every ``edge_pairs`` site pair, and the
    last site's kept nodes into ``metric``. Effects are summed over prompts (mean-metric units);
    ``over_positions`` sums them over positions too (position ``ALL``), as the paper does for prompts
    whose positions mean nothing across prompts (random-token induction). ``attribution``: reuse one.
    """
    tokens = check_tokens(model, tokens)
    sites = _check_sites(model, sites)
    attribution = attribution or attribute(model, tokens, metric, sites, patch, method, steps)
    effects = {hook: attribution.effects(hook) for hook in sites}
    kept = {hook: kept_nodes(effects[hook], node_threshold, over_positions) for hook in sites}
    nodes = [
        {"id": _node_id(hook, p, j), "hook": hook, "pos": p, "feature": j, "effect": _value(effects[hook], p, j)}
        for hook in sites
        for p, j in kept[hook]
    ]
    edges = []
    for up, down in edge_pairs(list(sites)):
        if not kept[up] or not kept[down]:
            continue
        weights = edge_attribution(model, tokens, metric, sites, up, down, kept[down], attribution=attribution)
        for row, (pd_, jd) in enumerate(kept[down]):
            for pu, ju in kept[up]:
                w = _value({"features": weights["features"][row], "error": weights["error"][row]}, pu, ju)
                if abs(w) > edge_threshold:
                    edges.append({"source": _node_id(up, pu, ju), "target": _node_id(down, pd_, jd), "weight": w})
    last = list(sites)[-1]
    edges += [{"source": n["id"], "target": "metric", "weight": n["effect"]} for n in nodes if n["hook"] == last]
    return {
        "sites": list(sites),
        "method": method,
        "node_threshold": node_threshold,
        "edge_threshold": edge_threshold,
        "over_positions": over_positions,
        "nodes": nodes,
        "edges": edges,
        "error_share": error_share(nodes),
    }


class MeanAblation:
    """One prompt set's clean site values, their mean-ablation targets (the mean over the prompts of
    ``ablate_from``, default the clean ones, per position) and the metric of the full and of the empty
    circuit, computed once for every circuit measured against them."""

    def __init__(self, model, tokens, metric: Metric, sites: dict[str, Dictionary],
                 ablate_from: Tensor | None = None):
        self.model, self.metric = model, metric
        self.tokens = check_tokens(model, tokens)
        self.sites = _check_sites(model, sites)
        self.clean = site_values(model, self.tokens, self.sites)
        self.means = (
            _patch_values(model, self.tokens, "mean", self.sites)
            if ablate_from is None
            else {h: _batch_mean(v) for h, v in _patch_values(model, self.tokens, ablate_from, self.sites).items()}
        )
        with torch.no_grad():
            self.full = float(metric(model(self.tokens)))
        self.empty = self.ablated({})

    def ablated(self, keep: dict[str, list], complement: bool = False) -> float:
        """The metric with every node outside ``keep`` mean-ablated. ``keep[hook]`` holds ``(pos, feature)``
        nodes (feature -1: the error) or bare feature ids (every position); ``complement`` ablates ``keep``."""
        overrides = {}
        for hook, value in self.clean.items():
            f_mask = torch.zeros(value.features.shape[1:], dtype=torch.bool, device=value.features.device)
            e_mask = torch.zeros(value.error.shape[1], dtype=torch.bool, device=value.error.device)
            for node in keep.get(hook, []):
                pos, j = (slice(None), node) if isinstance(node, int) else node
                if j >= 0:
                    f_mask[pos, j] = True
                else:
                    e_mask[pos] = True
            if complement:
                f_mask, e_mask = ~f_mask, ~e_mask
            overrides[hook] = SiteValues(
                torch.where(f_mask, value.features, self.means[hook].features),
                torch.where(e_mask[:, None], value.error, self.means[hook].error),
            )
        with torch.no_grad():
            logits = self.model.run_with_hooks(
                self.tokens, fwd_hooks=[(h, _splice(h, d, {}, overrides[h])) for h, d in self.sites.items()]
            )
            return float(self.metric(logits))

    def faithfulness(self, circuit: dict[str, list], complement: bool = False) -> float:
        """``(m(C) - m(∅)) / (m(M) - m(∅))``; ``complement=True`` gives the completeness measure ``m(M \\ C)``."""
        return (self.ablated(circuit, complement) - self.empty) / (self.full - self.empty)


def faithfulness(
    model,
    tokens,
    metric: Metric,
    sites: dict[str, Dictionary],
    circuit: dict[str, list],
    complement: bool = False,
    ablate_from: Tensor | None = None,
) -> float:
    """``(m(C) - m(∅)) / (m(M) - m(∅))`` with the rest mean-ablated (``MeanAblation``); ``complement=True``
    gives the completeness measure ``m(M \\ C)`` in the same units (near 0 for a complete circuit)."""
    return MeanAblation(model, tokens, metric, sites, ablate_from).faithfulness(circuit, complement)


def faithfulness_curve(
    model,
    tokens,
    metric: Metric,
    sites: dict[str, Dictionary],
    effects: dict[str, dict[str, Tensor]],
    sizes: list[int] | None = None,
    ablate_from: Tensor | None = None,
    over_positions: bool = False,
) -> pd.DataFrame:
    """Faithfulness and completeness of the top-``n`` nodes by ``|effect|`` (features and errors,
    every site and position; ``over_positions``: nodes summed over positions), for each ``n`` in ``sizes``
    (default: doubling up to all nodes). Columns ``n_nodes, threshold, faithfulness, completeness``."""
    ablation = MeanAblation(model, tokens, metric, sites, ablate_from)
    if over_positions:  # a bare id keeps the node at every position (MeanAblation.ablated)
        summed = {hook: _over_positions(e) for hook, e in effects.items()}
        ranked = [
            (abs(float(e["features"][0, j])), hook, j)
            for hook, e in summed.items()
            for j in (e["features"][0] != 0).nonzero().flatten().tolist()
        ]
        ranked += [(abs(float(e["error"][0])), hook, -1) for hook, e in summed.items()]
    else:
        ranked = [
            (abs(float(e["features"][p, j])), hook, (p, j))
            for hook, e in effects.items()
            for p, j in (e["features"] != 0).nonzero().tolist()
        ]
        ranked += [
            (abs(float(e["error"][p])), hook, (p, -1)) for hook, e in effects.items() for p in range(len(e["error"]))
        ]
    ranked.sort(key=lambda item: -item[0])
    total = len(ranked)
    sizes = sizes or sorted({min(2**i, total) for i in range(total.bit_length() + 1)} | {total})
    rows = []
    for n in sizes:
        keep: dict[str, list] = {hook: [] for hook in ablation.sites}
        for _, hook, node in ranked[:n]:
            keep[hook].append(node)
        rows.append(
            {
                "n_nodes": n,
                "threshold": ranked[n - 1][0] if n else float("inf"),
                "faithfulness": ablation.faithfulness(keep),
                "completeness": ablation.faithfulness(keep, True),
            }
        )
    return pd.DataFrame(rows)


def circuit_nodes(graph: dict) -> dict[str, list[Node]]:
    """The ``{hook: [(pos, feature)]}`` of a ``feature_circuit`` graph (feature -1: error; a node over all
    positions as its bare feature id), for ``faithfulness``."""
    nodes: dict[str, list] = {hook: [] for hook in graph["sites"]}
    for node in graph["nodes"]:
        nodes[node["hook"]].append(node["feature"] if node["pos"] == ALL else (node["pos"], node["feature"]))
    return nodes


def feature_effects_by_patching(
    model,
    tokens,
    metric: Metric,
    sites: dict[str, Dictionary],
    hook: str,
    features: list[int],
    patch: Tensor | str = "zero",
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
