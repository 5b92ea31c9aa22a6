"""Sparse attention decomposition (Franco & Crovella): per-singular-component attention scores and tracing.

A head's pre-softmax score is ``[x̃_d; 1] Ω [x̃_s; 1]ᵀ / attn_scale`` with ``x̃`` the layer-normed
residual before its weight and bias, and ``Ω = Q_aug K_augᵀ`` the QK circuit with the layer norm's
weight and bias and the Q/K biases folded in (rank <= d_head). Its SVD ``Ω = U Σ Vᵀ`` splits the
score into ``c_k = σ_k (x̃_d·u_k)(v_k·x̃_s) / attn_scale``; a few components usually carry it.
Because the residual is a sum of upstream writes and LN is a shared per-token scale, each upstream
component's share of the score is linear in its write: that weights head-to-head edges.
"""

from __future__ import annotations

from pathlib import Path

import einops
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import FactoredMatrix

from interp.attention import CircuitInputError, check_head, check_tokens, write_json

NORMALIZATIONS = (None, "LN", "LNPre", "RMS", "RMSPre")


def _check_supported(model) -> None:
    if model.cfg.positional_embedding_type not in ("standard", "shortformer"):
        raise CircuitInputError(
            f"sparse attention decomposition needs additive position embeddings; this model uses "
            f"'{model.cfg.positional_embedding_type}' (rotary scores are not a fixed bilinear form)"
        )
    if model.cfg.normalization_type not in NORMALIZATIONS:
        raise CircuitInputError(f"unsupported normalization '{model.cfg.normalization_type}'")


def augmented_qk(model, layer: int, head: int) -> tuple[Float[Tensor, "d_model+1 d_head"], Float[Tensor, "d_model+1 d_head"]]:
    """``Q_aug, K_aug``: LN weight/bias and Q/K biases folded so the score reads ``[x̃; 1]``."""
    check_head(model, layer, head)
    _check_supported(model)
    ln = model.blocks[layer].ln1
    w = getattr(ln, "w", None)
    b = getattr(ln, "b", None)
    parts = []
    for W, bias in ((model.blocks[layer].attn.W_Q[head], model.blocks[layer].attn.b_Q[head]), (model.blocks[layer].attn.W_K[head], model.blocks[layer].attn.b_K[head])):
        W_in = W * w[:, None] if w is not None else W
        b_in = bias + (b @ W if b is not None else 0.0)
        parts.append(torch.cat([W_in, b_in[None]], dim=0))
    return parts[0], parts[1]


def qk_svd(model, layer: int, head: int) -> tuple[Tensor, Tensor, Tensor]:
    """``U [d_model+1, r], S [r], V [d_model+1, r]`` of the augmented QK circuit, from its factors."""
    Q_aug, K_aug = augmented_qk(model, layer, head)
    with torch.no_grad():
        return factored_svd(FactoredMatrix(Q_aug, K_aug.T))


def factored_svd(matrix: FactoredMatrix) -> tuple[Tensor, Tensor, Tensor]:
    """``U, S, V`` with ``A B = U diag(S) Vᵀ`` from thin QRs of the factors and a small ``r x r`` SVD.

    Same result as ``FactoredMatrix.svd`` (which runs two tall SVDs); QR is several times faster on CPU.
    """
    Qa, Ra = torch.linalg.qr(matrix.A)
    Qb, Rb = torch.linalg.qr(matrix.B.transpose(-1, -2))
    Um, S, Vhm = torch.linalg.svd(Ra @ Rb.transpose(-1, -2))
    return Qa @ Um, S, Qb @ Vhm.transpose(-1, -2)


def all_qk_svds(model) -> dict[tuple[int, int], tuple[Tensor, Tensor, Tensor]]:
    """SVD of every head's QK circuit, batched over heads (seconds for GPT-2 small on CPU)."""
    out = {}
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            pairs = [augmented_qk(model, layer, h) for h in range(model.cfg.n_heads)]
            Q = torch.stack([q for q, _ in pairs])
            K = torch.stack([k for _, k in pairs])
            U, S, V = factored_svd(FactoredMatrix(Q, K.transpose(-1, -2)))
            for h in range(model.cfg.n_heads):
                out[layer, h] = (U[h], S[h], V[h])
    return out


def normalized_residual(model, cache, layer: int) -> Float[Tensor, "batch pos d_model+1"]:
    """``[x̃; 1]``: the residual before ``layer`` after LN centring and scaling, with a 1 appended."""
    x = _centered(model, cache[f"blocks.{layer}.hook_resid_pre"]) / _scale(model, cache, layer)
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def _centered(model, x: Tensor) -> Tensor:
    return x - x.mean(-1, keepdim=True) if model.cfg.normalization_type in ("LN", "LNPre") else x


def _scale(model, cache, layer: int) -> Tensor | float:
    return cache[f"blocks.{layer}.ln1.hook_scale"] if model.cfg.normalization_type is not None else 1.0


def score_terms(
    x_dest: Float[Tensor, "... d_aug"], x_src: Float[Tensor, "... d_aug"], U: Tensor, S: Tensor, V: Tensor, attn_scale: float
) -> Float[Tensor, "... r"]:
    """Per-component contributions ``c_k``; they sum to the head's pre-softmax score."""
    return (x_dest @ U) * S * (x_src @ V) / attn_scale


def sparse_support(c: Float[Tensor, "... r"], frac: float = 1.0, tol: float = 1e-4) -> Bool[Tensor, "... r"]:
    """Smallest set of the largest terms whose sum reaches ``frac`` of the total score.

    ``tol`` (relative to ``Σ|c_k|``) absorbs float noise; ``|S|`` is the "dimensionality of the signal".
    """
    order = c.argsort(dim=-1, descending=True)
    sorted_c = c.gather(-1, order)
    target = frac * c.sum(-1, keepdim=True) - tol * c.abs().sum(-1, keepdim=True)
    reached = sorted_c.cumsum(-1) >= target
    size = torch.where(reached.any(-1), reached.float().argmax(-1) + 1, torch.full_like(reached[..., 0], c.shape[-1], dtype=torch.long))
    keep_sorted = torch.arange(c.shape[-1], device=c.device) < size[..., None]
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def residual_components(model, cache, layer: int) -> tuple[list[str], Float[Tensor, "comp batch pos d_model"]]:
    """The residual before ``layer`` split into its writers: embeddings, each earlier head, attention biases, MLPs."""
    names, parts = ["embed"], [cache["hook_embed"]]
    if model.cfg.positional_embedding_type == "standard":
        names.append("pos_embed")
        parts.append(cache["hook_pos_embed"])
    for l in range(layer):
        heads = einops.einsum(cache[f"blocks.{l}.attn.hook_z"], model.blocks[l].attn.W_O, "b p h dh, h dh d -> h b p d")
        names += [f"L{l}H{h}" for h in range(model.cfg.n_heads)]
        parts += list(heads)
        names.append(f"L{l}.b_O")
        parts.append(model.blocks[l].attn.b_O.expand_as(parts[0]))
        if not model.cfg.attn_only:
            names.append(f"L{l}.mlp")
            parts.append(cache[f"blocks.{l}.hook_mlp_out"])
    return names, torch.stack(parts)


def _cache_for_tracing(model, tokens):
    wanted = ("hook_embed", "hook_pos_embed", "hook_resid_pre", "hook_z", "hook_mlp_out", "hook_scale", "hook_pattern", "hook_attn_scores")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith(wanted) and "ln_final" not in name)
    return cache


def head_contributions(
    model, cache, layer: int, head: int, dest_mask: Bool[Tensor, "batch pos"], frac: float = 1.0
) -> dict:
    """Decompose ``(layer, head)``'s score at each selected destination and its most-attended source.

    Returns the score terms, their sparse support, and each upstream component's contribution on
    the query side (through ``x̃_d``) and key side (through ``x̃_s``) restricted to that support.
    """
    U, S, V = qk_svd(model, layer, head)
    attn_scale = float(model.blocks[layer].attn.attn_scale)
    x = normalized_residual(model, cache, layer)
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
    src = pattern.argmax(-1)
    x_src = x.gather(1, src[..., None].expand_as(x))
    q_side = (x @ U) * S / attn_scale
    k_side = x_src @ V
    terms = q_side * k_side
    support = sparse_support(terms, frac)
    names, comps = residual_components(model, cache, layer)
    comps = _centered(model, comps) / _scale(model, cache, layer)
    d_model = model.cfg.d_model
    comp_k = (comps @ V[:d_model]).gather(2, src[None, :, :, None].expand(len(names), -1, -1, V.shape[1]))
    comp_q = (comps @ U[:d_model]) * S / attn_scale
    key = ((comp_k * q_side) * support).sum(-1)
    query = ((comp_q * k_side) * support).sum(-1)
    bias_key = ((V[d_model] * q_side) * support).sum(-1)
    bias_query = ((U[d_model] * S / attn_scale * k_side) * support).sum(-1)
    return {
        "names": names + ["bias"], "dest_mask": dest_mask, "src": src, "terms": terms, "support": support,
        "key": torch.cat([key, bias_key[None]]), "query": torch.cat([query, bias_query[None]]),
    }


def default_dest_mask(tokens: Tensor) -> Bool[Tensor, "batch pos"]:
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    return mask


def signal_dimensionality(model, tokens: Int[Tensor, "batch pos"], dest_mask=None, frac: float = 1.0) -> pd.DataFrame:
    """``|S|`` per head and destination: how many singular components carry the score (``layer, head, size``)."""
    tokens = check_tokens(model, tokens)
    dest_mask = default_dest_mask(tokens) if dest_mask is None else dest_mask
    cache = _cache_for_tracing(model, tokens)
    rows = []
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                U, S, V = qk_svd(model, layer, head)
                x = normalized_residual(model, cache, layer)
                src = cache[f"blocks.{layer}.attn.hook_pattern"][:, head].argmax(-1)
                terms = score_terms(x, x.gather(1, src[..., None].expand_as(x)), U, S, V, float(model.blocks[layer].attn.attn_scale))
                sizes = sparse_support(terms, frac).sum(-1)[dest_mask]
                rows += [{"layer": layer, "head": head, "size": int(s)} for s in sizes]
    return pd.DataFrame(rows)


def trace_head_edges(
    model, tokens: Int[Tensor, "batch pos"], dest_mask: Bool[Tensor, "batch pos"] | None = None, frac: float = 1.0
) -> pd.DataFrame:
    """The communication graph: every upstream component's mean contribution to every head's score.

    Columns ``source, layer, head, side (query|key), contribution`` (score units, mean over the
    selected destinations), ``fraction`` (contribution / mean score) and ``source_layer``/``source_head``
    (-1 for non-head sources).
    """
    tokens = check_tokens(model, tokens)
    dest_mask = default_dest_mask(tokens) if dest_mask is None else dest_mask.to(tokens.device)
    cache = _cache_for_tracing(model, tokens)
    rows = []
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                out = head_contributions(model, cache, layer, head, dest_mask, frac)
                mean_score = float((out["terms"].sum(-1))[dest_mask].mean())
                for side in ("query", "key"):
                    means = out[side][:, dest_mask].mean(-1)
                    for name, value in zip(out["names"], means.tolist()):
                        rows.append({"source": name, "layer": layer, "head": head, "side": side, "contribution": value,
                                     "fraction": value / mean_score if mean_score else float("nan"), **_parse(name)})
    return pd.DataFrame(rows)


def _parse(name: str) -> dict:
    if name.startswith("L") and "H" in name:
        layer, head = name[1:].split("H")
        return {"source_layer": int(layer), "source_head": int(head)}
    return {"source_layer": -1, "source_head": -1}


def head_edge_matrix(edges: pd.DataFrame, side: str, n_layers: int, n_heads: int) -> Float[Tensor, "layer_a head_a layer_b head_b"]:
    """Head-to-head edge weights of one side as a ``[layer_a, head_a, layer_b, head_b]`` tensor."""
    out = torch.zeros(n_layers, n_heads, n_layers, n_heads)
    heads = edges[(edges.side == side) & (edges.source_layer >= 0)]
    for row in heads.itertuples():
        out[row.source_layer, row.source_head, row.layer, row.head] = row.contribution
    return out


def trace_circuit(
    model, tokens: Int[Tensor, "batch pos"], start: tuple[int, int], dest_mask=None,
    top_k: int = 3, threshold: float = 0.1, frac: float = 1.0, max_depth: int = 4,
) -> dict:
    """Recursive tracing from ``start``: follow each head's top upstream heads (fraction >= threshold).

    An upstream head found on the key side is traced at the sources it was read from, on the query
    side at the destinations. Returns ``{"nodes": [...], "edges": [...]}`` for the front end.
    """
    tokens = check_tokens(model, tokens)
    check_head(model, *start)
    cache = _cache_for_tracing(model, tokens)
    frontier = [(start, default_dest_mask(tokens) if dest_mask is None else dest_mask.to(tokens.device), 0)]
    nodes, edges, seen = {f"L{start[0]}H{start[1]}"}, [], set()
    with torch.no_grad():
        while frontier:
            (layer, head), mask, depth = frontier.pop(0)
            if (layer, head) in seen or depth >= max_depth or not mask.any():
                continue
            seen.add((layer, head))
            out = head_contributions(model, cache, layer, head, mask, frac)
            mean_score = float(out["terms"].sum(-1)[mask].mean())
            for side in ("query", "key"):
                means = out[side][:, mask].mean(-1)
                ranked = sorted(zip(out["names"], means.tolist()), key=lambda item: -item[1])
                for name, value in [item for item in ranked if _parse(item[0])["source_layer"] >= 0][:top_k]:
                    fraction = value / mean_score if mean_score else 0.0
                    if fraction < threshold:
                        continue
                    edges.append({"source": name, "target": f"L{layer}H{head}", "side": side,
                                  "contribution": value, "fraction": fraction})
                    nodes.add(name)
                    upstream = _parse(name)
                    next_mask = mask if side == "query" else _source_mask(out["src"], mask)
                    frontier.append(((upstream["source_layer"], upstream["source_head"]), next_mask, depth + 1))
    return {"nodes": sorted(nodes), "edges": edges}


def _source_mask(src: Int[Tensor, "batch pos"], dest_mask: Bool[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
    counts = torch.zeros_like(src).scatter_add(1, src, dest_mask.long())
    return counts > 0


def write_decomposition(folder: Path | str, edges: pd.DataFrame, dimensionality: pd.DataFrame, graph: dict) -> list[Path]:
    """``svd_edges.parquet``, ``signal_dimensionality.parquet``, ``svd_trace.json`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    edges.to_parquet(folder / "svd_edges.parquet", index=False)
    dimensionality.to_parquet(folder / "signal_dimensionality.parquet", index=False)
    return [folder / "svd_edges.parquet", folder / "signal_dimensionality.parquet", write_json(folder / "svd_trace.json", graph)]
