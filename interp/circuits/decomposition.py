"""Sparse attention decomposition (Franco & Crovella): per-singular-component attention scores and tracing.

A head's pre-softmax score is ``[x̃_d; 1] Ω [x̃_s; 1]ᵀ / attn_scale`` with ``x̃`` the layer-normed
residual before its weight and bias, and ``Ω = Q_aug K_augᵀ`` the QK circuit with the layer norm's
weight and bias and the Q/K biases folded in (rank <= d_head). Its SVD ``Ω = U Σ Vᵀ`` splits the
score into ``c_k = σ_k (x̃_d·u_k)(v_k·x̃_s) / attn_scale``; a few components usually carry it.
Because the residual is a sum of upstream writes and LN is a shared per-token scale, each upstream
component's share of the score is linear in its write: that weights head-to-head edges.

As the reference code (gaabrielfranco/sparse-attention-decomposition) does it: only "firings" are
decomposed (attention >= 0.5, score > 0, source != 0); an edge's weight is
``Σ_{k∈S} sign(x̃_d·u_k) √σ_k (v_k·[o; 1]) / scale`` (the exact score share is kept beside it);
tracing runs per prompt and per firing, keeping the upstream heads that cover 70 % of the weight.
Remaining deviations are listed in ``interp/CIRCUITS.md``.
"""

from __future__ import annotations

import einops
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import FactoredMatrix
from transformer_lens.utilities import get_act_name

from interp.circuits.attention import CircuitInputError, check_head, check_tokens

NORMALIZATIONS = (None, "LN", "LNPre", "RMS", "RMSPre")
ATTENTION_THRESHOLD = 0.5  # the reference's firing threshold
CUTOFF = 0.7  # the reference's cumulative share of upstream weight kept when tracing


def unsupported_reason(model) -> str | None:
    """Why the decomposition cannot run on ``model`` (rotary or ALiBi positions, an odd norm), or None."""
    if model.cfg.positional_embedding_type not in ("standard", "shortformer"):
        return (f"sparse attention decomposition needs additive position embeddings; this model uses "
                f"'{model.cfg.positional_embedding_type}' (rotary scores are not a fixed bilinear form)")
    if model.cfg.normalization_type not in NORMALIZATIONS:
        return f"unsupported normalization '{model.cfg.normalization_type}'"
    return None


def _check_supported(model) -> None:
    reason = unsupported_reason(model)
    if reason:
        raise CircuitInputError(reason)


def augmented_qk(
    model, layer: int, head: int
) -> tuple[Float[Tensor, "d_model+1 d_head"], Float[Tensor, "d_model+1 d_head"]]:
    """``Q_aug, K_aug``: LN weight/bias and Q/K biases folded so the score reads ``[x̃; 1]``."""
    check_head(model, layer, head)
    _check_supported(model)
    ln = model.blocks[layer].ln1
    w = getattr(ln, "w", None)
    b = getattr(ln, "b", None)
    parts = []
    for W, bias in (
        (model.blocks[layer].attn.W_Q[head], model.blocks[layer].attn.b_Q[head]),
        (model.blocks[layer].attn.W_K[head], model.blocks[layer].attn.b_K[head]),
    ):
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
    x = _centered(model, cache[get_act_name("resid_pre", layer)]) / _scale(model, cache, layer)
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def _centered(model, x: Tensor) -> Tensor:
    return x - x.mean(-1, keepdim=True) if model.cfg.normalization_type in ("LN", "LNPre") else x


def _scale(model, cache, layer: int) -> Tensor | float:
    return cache[get_act_name("scale", layer, "ln1")] if model.cfg.normalization_type is not None else 1.0


def score_terms(
    x_dest: Float[Tensor, "... d_aug"],
    x_src: Float[Tensor, "... d_aug"],
    U: Tensor,
    S: Tensor,
    V: Tensor,
    attn_scale: float,
) -> Float[Tensor, "... r"]:
    """Per-component contributions ``c_k``; they sum to the head's pre-softmax score."""
    return (x_dest @ U) * S * (x_src @ V) / attn_scale


def sparse_support(c: Float[Tensor, "... r"], frac: float = 1.0, tol: float = 1e-4) -> Bool[Tensor, "... r"]:
    """Smallest set of terms, taken largest first in the direction of the score's sign, whose sum
    reaches ``frac`` of the score (as the reference's ``get_components_used``).

    For a negative score the most negative terms come first, so its ``|S|`` is not 1 by construction.
    ``tol`` (relative to ``Σ|c_k|``) absorbs float noise; ``|S|`` is the "dimensionality of the signal".
    """
    sign = torch.where(c.sum(-1, keepdim=True) < 0, -1.0, 1.0).to(c.dtype)
    c = c * sign
    order = c.argsort(dim=-1, descending=True)
    sorted_c = c.gather(-1, order)
    target = frac * c.sum(-1, keepdim=True) - tol * c.abs().sum(-1, keepdim=True)
    reached = sorted_c.cumsum(-1) >= target
    size = torch.where(
        reached.any(-1), reached.float().argmax(-1) + 1, torch.full_like(reached[..., 0], c.shape[-1], dtype=torch.long)
    )
    keep_sorted = torch.arange(c.shape[-1], device=c.device) < size[..., None]
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def firing_mask(
    pattern: Float[Tensor, "batch dest src"],
    scores: Float[Tensor, "batch dest src"],
    dest_mask: Bool[Tensor, "batch dest"] | None = None,
    attention_threshold: float = ATTENTION_THRESHOLD,
) -> Bool[Tensor, "batch dest src"]:
    """The reference's "firings" of one head: attention >= threshold, score > 0, source != 0
    (BOS attention is a resting state, not a signal), destination allowed by ``dest_mask``."""
    mask = (pattern >= attention_threshold) & (scores > 0)
    mask[..., 0] = False
    return mask if dest_mask is None else mask & dest_mask[..., None].to(mask.device)


def check_cutoff(cutoff: float) -> float:
    if not 0 < cutoff <= 1:
        raise CircuitInputError(
            f"cutoff {cutoff} is outside (0, 1]: it is the cumulative share of the edge weight to keep "
            "(0.7 in the paper)"
        )
    return float(cutoff)


def cumulative_cutoff(weights: Float[Tensor, "n"], cutoff: float = 0.7) -> Bool[Tensor, "n"]:
    """The reference's ``contrib_ahs``: the largest weights whose running sum first exceeds ``cutoff``
    of the total, and every weight tied with the last of them. None when the total is not positive;
    every positive weight when no running sum exceeds it (cutoff 1 up to rounding)."""
    check_cutoff(cutoff)
    total = float(weights.sum())
    if weights.numel() == 0 or total <= 0:
        return torch.zeros_like(weights, dtype=torch.bool)
    ordered = weights.sort(descending=True).values
    over = (ordered.cumsum(0) > cutoff * total).nonzero()
    if len(over) == 0:
        return weights > 0
    return weights >= ordered[int(over[0])]


def residual_components(model, cache, layer: int) -> tuple[list[str], Float[Tensor, "comp batch pos d_model"]]:
    """The residual before ``layer`` split into its writers: embeddings, each earlier head, attention biases, MLPs."""
    names, parts = ["embed"], [cache["hook_embed"]]
    if model.cfg.positional_embedding_type == "standard":
        names.append("pos_embed")
        parts.append(cache["hook_pos_embed"])
    for l in range(layer):
        heads = einops.einsum(cache[get_act_name("z", l)], model.blocks[l].attn.W_O, "b p h dh, h dh d -> h b p d")
        names += [f"L{l}H{h}" for h in range(model.cfg.n_heads)]
        parts += list(heads)
        names.append(f"L{l}.b_O")
        parts.append(model.blocks[l].attn.b_O.expand_as(parts[0]))
        if not model.cfg.attn_only:
            names.append(f"L{l}.mlp")
            parts.append(cache[get_act_name("mlp_out", l)])
    return names, torch.stack(parts)


def _cache_for_tracing(model, tokens):
    wanted = (
        "hook_embed",
        "hook_pos_embed",
        "hook_resid_pre",
        "hook_z",
        "hook_mlp_out",
        "hook_scale",
        "hook_pattern",
        "hook_attn_scores",
    )
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name.endswith(wanted) and "ln_final" not in name
        )
    return cache


def decompose_firings(
    model,
    cache,
    layer: int,
    head: int,
    dest_mask: Bool[Tensor, "batch pos"] | None = None,
    frac: float = 1.0,
    attention_threshold: float = ATTENTION_THRESHOLD,
    svd: tuple[Tensor, Tensor, Tensor] | None = None,
) -> dict:
    """Decompose ``(layer, head)``'s score at each of its firings ``(batch, dest, src)``.

    For every upstream writer ``c`` (rows ``names``, the last is ``bias``, the augmented constant) and
    firing, two weights on the key side (through ``x̃_src``) and the query side (through ``x̃_dest``):
    - ``weight_*``: the reference's ``Σ_{k∈S} sign(x̃_d·u_k) √σ_k (v_k·[õ_c; 1]) / scale`` (``u_k`` on the
      query side): how strongly ``c`` writes along the signal, in units independent of the other side;
    - ``contribution_*``: ``c``'s exact share of the score restricted to ``S`` (over all writers it
      sums to ``Σ_{k∈S} c_k``, which equals the score when ``S`` is every component).
    ``õ_c`` is the writer's output, centred for layer norms (as the reference's centred writing weights).
    """
    U, S, V = svd if svd is not None else qk_svd(model, layer, head)
    attn_scale = float(model.blocks[layer].attn.attn_scale)
    pattern = cache[get_act_name("pattern", layer)][:, head]
    fires = firing_mask(pattern, cache[get_act_name("attn_scores", layer)][:, head], dest_mask, attention_threshold)
    b, d, s = fires.nonzero(as_tuple=True)
    x = normalized_residual(model, cache, layer)
    x_d, x_s = x[b, d], x[b, s]
    q_side = (x_d @ U) * S / attn_scale
    k_side = x_s @ V
    terms = q_side * k_side
    support = sparse_support(terms, frac)
    signed = support * torch.sign(x_d @ U) * S.sqrt()
    names, comps = residual_components(model, cache, layer)
    scale = _scale(model, cache, layer)
    scale_d, scale_s = (scale[b, d], scale[b, s]) if isinstance(scale, Tensor) else (scale, scale)
    comps = _centered(model, comps)
    d_model = model.cfg.d_model
    comp_s = comps[:, b, s] @ V[:d_model]  # [C, F, r]
    comp_d = comps[:, b, d] @ U[:d_model]
    weight_key = (signed * (comp_s + V[d_model]) / scale_s).sum(-1)
    weight_query = (signed * (comp_d + U[d_model]) / scale_d).sum(-1)
    contribution_key = (support * q_side * comp_s / scale_s).sum(-1)
    contribution_query = (support * k_side * S / attn_scale * comp_d / scale_d).sum(-1)
    bias_key = (support * q_side * V[d_model]).sum(-1)
    bias_query = (support * k_side * S / attn_scale * U[d_model]).sum(-1)
    no_weight = torch.zeros_like(bias_key)[None]  # the constant is inside every writer's reference weight
    return {
        "names": names + ["bias"],
        "batch": b,
        "dest": d,
        "src": s,
        "score": terms.sum(-1),
        "attention": pattern[b, d, s],
        "terms": terms,
        "support": support,
        "weight_key": torch.cat([weight_key, no_weight]),
        "weight_query": torch.cat([weight_query, no_weight]),
        "contribution_key": torch.cat([contribution_key, bias_key[None]]),
        "contribution_query": torch.cat([contribution_query, bias_query[None]]),
    }


def default_dest_mask(tokens: Tensor) -> Bool[Tensor, "batch pos"]:
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    return mask


def _all_firings(model, cache, dest_mask, frac, attention_threshold) -> dict[tuple[int, int], dict]:
    svds = all_qk_svds(model)
    return {key: decompose_firings(model, cache, *key, dest_mask, frac, attention_threshold, svds[key]) for key in svds}


def signal_dimensionality(
    model,
    tokens: Int[Tensor, "batch pos"],
    dest_mask=None,
    frac: float = 1.0,
    attention_threshold: float = ATTENTION_THRESHOLD,
) -> pd.DataFrame:
    """``|S|`` of every firing of every head (``layer, head, batch, dest, src, score, size``)."""
    tokens = check_tokens(model, tokens)
    dest_mask = default_dest_mask(tokens) if dest_mask is None else dest_mask.to(tokens.device)
    with torch.no_grad():
        firings = _all_firings(model, _cache_for_tracing(model, tokens), dest_mask, frac, attention_threshold)
    frames = [
        pd.DataFrame(
            {
                "layer": layer,
                "head": head,
                "batch": out["batch"].cpu().numpy(),
                "dest": out["dest"].cpu().numpy(),
                "src": out["src"].cpu().numpy(),
                "score": out["score"].cpu().numpy(),
                "size": out["support"].sum(-1).cpu().numpy(),
            }
        )
        for (layer, head), out in firings.items()
    ]
    return pd.concat(frames, ignore_index=True)


def trace_head_edges(
    model,
    tokens: Int[Tensor, "batch pos"],
    dest_mask: Bool[Tensor, "batch pos"] | None = None,
    frac: float = 1.0,
    attention_threshold: float = ATTENTION_THRESHOLD,
) -> pd.DataFrame:
    """The communication graph: every upstream writer's mean weight into every head, over its firings.

    Columns ``source, layer, head, side (query|key), weight`` (the reference edge weight),
    ``contribution`` (exact score share, score units), ``fraction`` (contribution / mean score),
    ``n_firings``, ``source_layer``/``source_head`` (-1 for non-head writers). A head that never
    fires has no rows.
    """
    tokens = check_tokens(model, tokens)
    dest_mask = default_dest_mask(tokens) if dest_mask is None else dest_mask.to(tokens.device)
    with torch.no_grad():
        firings = _all_firings(model, _cache_for_tracing(model, tokens), dest_mask, frac, attention_threshold)
    rows = []
    for (layer, head), out in firings.items():
        n = len(out["batch"])
        if n == 0:
            continue
        mean_score = float(out["score"].mean())
        for side in ("query", "key"):
            weights, contributions = (
                out[f"weight_{side}"].mean(-1).tolist(),
                out[f"contribution_{side}"].mean(-1).tolist(),
            )
            for name, weight, value in zip(out["names"], weights, contributions):
                rows.append(
                    {
                        "source": name,
                        "layer": layer,
                        "head": head,
                        "side": side,
                        "weight": weight,
                        "contribution": value,
                        "fraction": value / mean_score,
                        "n_firings": n,
                        **_parse(name),
                    }
                )
    columns = [
        "source",
        "layer",
        "head",
        "side",
        "weight",
        "contribution",
        "fraction",
        "n_firings",
        "source_layer",
        "source_head",
    ]
    return pd.DataFrame(rows, columns=columns)


def _parse(name: str) -> dict:
    if name.startswith("L") and "H" in name:
        layer, head = name[1:].split("H")
        return {"source_layer": int(layer), "source_head": int(head)}
    return {"source_layer": -1, "source_head": -1}


def head_edge_matrix(
    edges: pd.DataFrame, side: str, n_layers: int, n_heads: int, value: str = "contribution"
) -> Float[Tensor, "layer_a head_a layer_b head_b"]:
    """Head-to-head edge weights of one side as a ``[layer_a, head_a, layer_b, head_b]`` tensor."""
    out = torch.zeros(n_layers, n_heads, n_layers, n_heads)
    heads = edges[(edges.side == side) & (edges.source_layer >= 0)]
    for row in heads.itertuples():
        out[row.source_layer, row.source_head, row.layer, row.head] = getattr(row, value)
    return out


def trace_circuit(
    model,
    tokens: Int[Tensor, "batch pos"],
    start: tuple[int, int],
    dest_mask: Bool[Tensor, "batch pos"] | None = None,
    src_mask: Bool[Tensor, "batch pos"] | None = None,
    cutoff: float = CUTOFF,
    frac: float = 1.0,
    attention_threshold: float = ATTENTION_THRESHOLD,
) -> dict:
    """The reference's tracing, per prompt and per firing, from the firings of ``start``.

    Start firings are ``start``'s firings at destinations in ``dest_mask`` (and sources in ``src_mask``
    when given: IOI starts at END → IO). At each firing the upstream heads whose reference weights
    cover ``cutoff`` of the total (``cumulative_cutoff``) on the key side (at the source) and on the
    query side (at the destination) become edges, and the trace recurses into their firings whose
    destination is that token. Edges are counted once per prompt and averaged over the prompts that
    use them: ``{"nodes", "edges": [{source, target, side, position, weight, contribution, fraction, count}],
    "n_start_firings"}``; ``position`` is the token the upstream head writes to.
    """
    tokens = check_tokens(model, tokens)
    check_head(model, *start)
    check_cutoff(cutoff)
    for name, mask in (("dest_mask", dest_mask), ("src_mask", src_mask)):
        if mask is not None and tuple(mask.shape) != tuple(tokens.shape):
            raise CircuitInputError(f"{name} of shape {tuple(mask.shape)} must match the prompts {tuple(tokens.shape)}")
    with torch.no_grad():
        firings = _all_firings(
            model, _cache_for_tracing(model, tokens), default_dest_mask(tokens), frac, attention_threshold
        )
    index = {key: {(int(b), int(d)): [] for b, d in zip(out["batch"], out["dest"])} for key, out in firings.items()}
    for key, out in firings.items():
        for i, (b, d) in enumerate(zip(out["batch"].tolist(), out["dest"].tolist())):
            index[key][b, d].append(i)
    out = firings[start]
    keep = torch.ones_like(out["batch"], dtype=torch.bool)
    if dest_mask is not None:
        keep &= dest_mask.to(tokens.device)[out["batch"], out["dest"]]
    if src_mask is not None:
        keep &= src_mask.to(tokens.device)[out["batch"], out["src"]]
    frontier = [(start, int(i)) for i in keep.nonzero().flatten()]
    per_prompt: dict[tuple, dict] = {}
    seen = set()
    while frontier:
        key, i = frontier.pop()
        if (key, i) in seen:
            continue
        seen.add((key, i))
        out = firings[key]
        b, d, s = int(out["batch"][i]), int(out["dest"][i]), int(out["src"][i])
        heads = [n for n, name in enumerate(out["names"]) if _parse(name)["source_layer"] >= 0]
        for side, position in (("key", s), ("query", d)):
            weights = out[f"weight_{side}"][heads, i]
            for n in torch.tensor(heads)[cumulative_cutoff(weights, cutoff)].tolist():
                name = out["names"][n]
                edge = (name, f"L{key[0]}H{key[1]}", side, position, b)
                if edge not in per_prompt:  # the reference counts an edge once per prompt
                    per_prompt[edge] = {
                        "weight": float(out[f"weight_{side}"][n, i]),
                        "contribution": float(out[f"contribution_{side}"][n, i]),
                        "fraction": float(out[f"contribution_{side}"][n, i] / out["score"][i]),
                    }
                upstream = (_parse(name)["source_layer"], _parse(name)["source_head"])
                frontier += [(upstream, j) for j in index[upstream].get((b, position), [])]
    return {
        "nodes": sorted({e[0] for e in per_prompt} | {e[1] for e in per_prompt} | {f"L{start[0]}H{start[1]}"}),
        "edges": _aggregate_edges(per_prompt),
        "n_start_firings": int(keep.sum()),
    }


def _aggregate_edges(per_prompt: dict[tuple, dict]) -> list[dict]:
    if not per_prompt:
        return []
    frame = pd.DataFrame(
        [
            dict(zip(("source", "target", "side", "position", "prompt"), key)) | value
            for key, value in per_prompt.items()
        ]
    )
    grouped = frame.groupby(["source", "target", "side", "position"], sort=False)
    table = grouped[["weight", "contribution", "fraction"]].mean().assign(count=grouped.size()).reset_index()
    records = table.sort_values(["count", "weight"], ascending=False).to_dict("records")
    return [{k: v.item() if hasattr(v, "item") else v for k, v in r.items()} for r in records]
