"""Activation patching, path patching and attribution patching (the gradient approximation).

Convention ("noising"): run the clean prompt, overwrite one activation with its value on the
corrupted prompt, and report ``metric(patched) - metric(clean)``; important sites give large
negative effects. ``corrupt`` is either corrupted tokens (same shape) or a dict of corrupted
activations by hook name, which lets tests and notebooks patch in small, hand-made edits.
"""

from __future__ import annotations

from collections.abc import Callable

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from interp.circuits.attention import CircuitInputError, check_tokens

Metric = Callable[[Float[Tensor, "batch pos vocab"]], Float[Tensor, ""]]
SIDES = ("q", "k", "v")


def next_token_metric(tokens: Int[Tensor, "batch pos"], positions: slice | Tensor) -> Metric:
    """Mean log-probability of the clean next token at ``positions`` (e.g. the second copy for induction)."""
    targets = tokens[:, 1:]

    def metric(logits):
        log_probs = logits[:, :-1].log_softmax(-1).gather(-1, targets[..., None].to(logits.device))[..., 0]
        return log_probs[:, positions].mean()

    return metric


def logit_diff_metric(position: int | Tensor, right: Tensor, wrong: Tensor) -> Metric:
    """Mean ``logit[right] - logit[wrong]`` at ``position`` (IOI: indirect object vs subject)."""

    def metric(logits):
        rows = torch.arange(logits.shape[0], device=logits.device)
        at = logits[rows, position] if isinstance(position, Tensor) else logits[:, position]
        return (at[rows, right] - at[rows, wrong]).mean()

    return metric


def _corrupt_activations(model, corrupt: Tensor | dict[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    if isinstance(corrupt, dict):
        missing = [name for name in names if name not in corrupt]
        if missing:
            raise CircuitInputError(f"corrupted activations lack {missing}; pass tokens or every hook in {names}")
        return corrupt
    corrupt = check_tokens(model, corrupt)
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupt, names_filter=lambda name: name in names)
    return {name: cache[name] for name in names}


def _check_pair(model, clean: Tensor, corrupt) -> Tensor:
    clean = check_tokens(model, clean)
    if isinstance(corrupt, Tensor) and check_tokens(model, corrupt).shape != clean.shape:
        raise CircuitInputError(
            f"clean {tuple(clean.shape)} and corrupted {tuple(corrupt.shape)} prompts must have the same shape"
        )
    return clean


def _replace(values: Tensor, index) -> Callable:
    def hook(activation, hook):
        activation = activation.clone()
        activation[index] = values[index]
        return activation

    return hook


def patch_residual(model, clean, corrupt, metric: Metric) -> Float[Tensor, "layer pos"]:
    """Effect of patching the residual stream before each layer at each position."""
    clean = _check_pair(model, clean, corrupt)
    names = [get_act_name("resid_pre", l) for l in range(model.cfg.n_layers)]
    source = _corrupt_activations(model, corrupt, names)
    out = torch.zeros(model.cfg.n_layers, clean.shape[1])
    with torch.no_grad():
        base = metric(model(clean))
        for l, name in enumerate(names):
            for pos in range(clean.shape[1]):
                hooks = [(name, _replace(source[name], (slice(None), pos)))]
                out[l, pos] = metric(model.run_with_hooks(clean, fwd_hooks=hooks)) - base
    return out


def patch_heads(model, clean, corrupt, metric: Metric) -> Float[Tensor, "layer head"]:
    """Effect of patching each head's output (``hook_z``, all positions)."""
    clean = _check_pair(model, clean, corrupt)
    names = [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    source = _corrupt_activations(model, corrupt, names)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.no_grad():
        base = metric(model(clean))
        for l, name in enumerate(names):
            for h in range(model.cfg.n_heads):
                hooks = [(name, _replace(source[name], (slice(None), slice(None), h)))]
                out[l, h] = metric(model.run_with_hooks(clean, fwd_hooks=hooks)) - base
    return out


def path_patch(
    model, clean, corrupt, metric: Metric, sides: tuple[str, ...] = SIDES
) -> Float[Tensor, "side layer_a head_a layer_b head_b"]:
    """Effect of sender head A's corrupted output reaching receiver head B only through B's q, k or v.

    B's input is recomputed from the clean residual plus A's output change (every other path frozen
    at its clean value), passed through B's own layer norm; everything after B runs freely.
    """
    clean = _check_pair(model, clean, corrupt)
    unknown = set(sides) - set(SIDES)
    if unknown:
        raise CircuitInputError(f"unknown side(s) {sorted(unknown)}; use q, k, v")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    z_names = [get_act_name("z", l) for l in range(L)]
    source = _corrupt_activations(model, corrupt, z_names)
    out = torch.zeros(len(sides), L, H, L, H)
    with torch.no_grad():
        logits, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith(("hook_z", "hook_resid_pre")))
        base = metric(logits)
        for la in range(L - 1):
            attn_a = model.blocks[la].attn
            for ha in range(H):
                delta = (source[z_names[la]][:, :, ha] - cache[z_names[la]][:, :, ha]) @ attn_a.W_O[ha]
                for lb in range(la + 1, L):
                    normed = model.blocks[lb].ln1(cache[get_act_name("resid_pre", lb)] + delta)
                    attn_b = model.blocks[lb].attn
                    for i, side in enumerate(sides):
                        W, b, group = _receiver_weights(attn_b, side, H)
                        patched = einops.einsum(normed, W, "b p d, h d dh -> b p h dh") + b
                        for g in range(W.shape[0]):  # a key/value head shared by a GQA group: one patch, its heads
                            hooks = [(get_act_name(side, lb), _replace(patched, (slice(None), slice(None), g)))]
                            out[i, la, ha, lb, g * group : (g + 1) * group] = (
                                metric(model.run_with_hooks(clean, fwd_hooks=hooks)) - base
                            )
    return out


def _receiver_weights(attn, side: str, n_heads: int) -> tuple[Tensor, Tensor, int]:
    """A receiver's q/k/v weights as its hook sees them, and how many query heads share each one.

    Under grouped-query attention ``hook_k``/``hook_v`` hold the ``n_key_value_heads`` unexpanded heads
    (TransformerLens' ``_W_K``/``_W_V``), so a path into one key reaches every head of its group."""
    if side == "q":
        return attn.W_Q, attn.b_Q, 1
    grouped = hasattr(attn, "_W_K")
    if side == "k":
        W, b = (attn._W_K, attn._b_K) if grouped else (attn.W_K, attn.b_K)
    else:
        W, b = (attn._W_V, attn._b_V) if grouped else (attn.W_V, attn.b_V)
    return W, b, n_heads // W.shape[0]


ATP_METHODS = ("atp", "atp*")


def attribution_patching(model, clean, corrupt, metric: Metric, method: str = "atp*") -> dict[str, Tensor]:
    """Linear estimate of every patch from forward and backward passes on the clean prompt.

    ``effect ≈ ∇_a metric|clean · (a_corrupt - a_clean)``; returns ``residual [layer, pos]`` and
    ``heads [layer, head]``, shaped like ``patch_residual`` and ``patch_heads``. ``method="atp*"``
    (default) applies the QK fix of AtP* (Kramár et al. 2024) to the heads: each head's effect on
    later heads' attention is passed through their softmax exactly (``atp_star_heads``), which keeps
    the estimate right where attention saturates; ``"atp"`` is plain attribution patching.
    """
    if method not in ATP_METHODS:
        raise CircuitInputError(f"method must be one of {ATP_METHODS}; got {method!r}")
    clean = _check_pair(model, clean, corrupt)
    L = model.cfg.n_layers
    resid = [get_act_name("resid_pre", l) for l in range(L)]
    z = [get_act_name("z", l) for l in range(L)]
    source = _corrupt_activations(model, corrupt, resid + z)
    saved, grads = _gradients(model, clean, metric, resid + z)
    out = {
        "residual": torch.stack([_effect(source[n], saved[n], grads[n], "b p d -> p") for n in resid]).cpu(),
        "heads": torch.stack([_effect(source[n], saved[n], grads[n], "b p h dh -> h") for n in z]).cpu(),
    }
    if method == "atp*":
        out["heads"] = atp_star_heads(model, clean, {n: source[n] for n in z}, metric)
    return out


def _effect(source: Tensor, value: Tensor, grad: Tensor, reduce: str) -> Tensor:
    return einops.reduce((source - value) * grad, reduce, "sum")


def _gradients(
    model, clean, metric: Metric, names: list[str], stop_attention: bool = False, drop: tuple[str, ...] = ()
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Values and metric gradients at ``names`` from one forward and backward pass.

    ``stop_attention``: every attention pattern becomes a leaf (its gradient is kept under
    ``hook_pattern`` names, none flows back to queries and keys); ``drop``: hooks whose gradient is
    zeroed on the way back (GradDrop).
    """
    saved: dict[str, Tensor] = {}

    def keep(activation, hook):
        if not activation.requires_grad:  # frozen weights: make the earliest site a leaf
            activation = activation.detach().requires_grad_()
        activation.retain_grad()
        saved[hook.name] = activation
        return activation

    def leaf(activation, hook):
        saved[hook.name] = activation.detach().requires_grad_()
        return saved[hook.name]

    def dropped(activation, hook):
        return activation.detach() + 0 * activation  # same value, no gradient back through this hook

    hooks = [(name, keep) for name in names] + [(name, dropped) for name in drop]
    if stop_attention:
        hooks.append((lambda name: name.endswith("hook_pattern"), leaf))
    with torch.enable_grad():
        logits = model.run_with_hooks(clean, fwd_hooks=hooks)
        metric(logits).backward()
    model.zero_grad(set_to_none=True)
    return {n: v.detach() for n, v in saved.items()}, {
        n: v.grad if v.grad is not None else torch.zeros_like(v) for n, v in saved.items()
    }


def atp_star_heads(model, clean, source: dict[str, Tensor], metric: Metric) -> Float[Tensor, "layer head"]:
    """AtP* with the QK fix for every head's output (``hook_z``) patched to ``source``.

    ``effect(n) = ∇_z m|attention stopped · Δz_n + Σ_{later heads h'} ∇_{A_h'} m · (softmax(S_h') - A_h')``:
    the first term follows every path that does not pass through an attention softmax; for each later
    head, the change of its queries and keys caused by ``Δz_n`` (one forward-mode pass per head ``n``)
    gives its new scores ``S_h' = (q + Δq)(k + Δk)ᵀ / scale``, whose softmax is taken exactly.
    """
    L, H = model.cfg.n_layers, model.cfg.n_heads
    z = [get_act_name("z", l) for l in range(L)]
    rot = "rot_" if model.cfg.positional_embedding_type == "rotary" else ""  # scores read the rotated q, k
    qk = [get_act_name(rot + s, l) for l in range(L) for s in ("q", "k")]
    saved, grads = _gradients(model, clean, metric, z + qk, stop_attention=True)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith(("hook_attn_scores", "hook_pattern")))
    out = torch.zeros(L, H)
    for l in range(L):
        delta = source[z[l]].to(saved[z[l]].device) - saved[z[l]]
        out[l] = einops.reduce(delta * grads[z[l]], "b p h dh -> h", "sum").cpu()
        for h in range(H):
            tangent = torch.zeros_like(delta)
            tangent[:, :, h] = delta[:, :, h]
            changes = _forward_changes(model, clean, z[l], tangent, qk[2 * (l + 1) :])
            for lb in range(l + 1, L):
                attn = model.blocks[lb].attn
                q, k = saved[qk[2 * lb]], saved[qk[2 * lb + 1]]
                dq, dk = changes[qk[2 * lb]], changes[qk[2 * lb + 1]]
                # the head's own score function: its scale, softcap and grouped keys
                shift = attn.calculate_attention_scores(q + dq, k + dk) - attn.calculate_attention_scores(q, k)
                scores = cache[get_act_name("attn_scores", lb)] + shift
                new_pattern = scores.softmax(-1)
                old_pattern = cache[get_act_name("pattern", lb)]
                out[l, h] += float(((new_pattern - old_pattern) * grads[get_act_name("pattern", lb)]).sum())
    return out


def _forward_changes(model, clean, hook: str, tangent: Tensor, names: list[str]) -> dict[str, Tensor]:
    """First-order change at ``names`` when the activation at ``hook`` moves by ``tangent`` (forward-mode AD)."""
    import torch.autograd.forward_ad as fwAD

    found: dict[str, Tensor] = {}

    def inject(activation, hook):
        return fwAD.make_dual(activation, tangent)

    def read(activation, hook):
        found[hook.name] = fwAD.unpack_dual(activation).tangent
        return activation

    with torch.no_grad(), fwAD.dual_level():
        model.run_with_hooks(clean, fwd_hooks=[(hook, inject)] + [(name, read) for name in names])
    return {name: found[name] if found.get(name) is not None else torch.zeros(()) for name in names}


def graddrop_heads(model, clean, corrupt, metric: Metric) -> Float[Tensor, "layer head"]:
    """AtP* GradDrop: ``mean_ℓ |AtP_ℓ(n)|`` over the layers ℓ after the head's own, where ``AtP_ℓ`` zeroes
    the gradient through layer ℓ's attention and MLP outputs (plain ``|AtP|`` for heads in the last
    layer). An unsigned magnitude that exposes effects cancelling across paths; rank with it, do not sum it."""
    clean = _check_pair(model, clean, corrupt)
    L = model.cfg.n_layers
    z = [get_act_name("z", l) for l in range(L)]
    source = _corrupt_activations(model, corrupt, z)
    plain_values, plain_grads = _gradients(model, clean, metric, z)
    plain = torch.stack([_effect(source[n], plain_values[n], plain_grads[n], "b p h dh -> h") for n in z]).abs()
    total, count = torch.zeros_like(plain), torch.zeros(L, 1)
    for drop in range(1, L):
        outputs = (get_act_name("attn_out", drop),) + (() if model.cfg.attn_only else (get_act_name("mlp_out", drop),))
        values, grads = _gradients(model, clean, metric, z, drop=outputs)
        effects = torch.stack([_effect(source[n], values[n], grads[n], "b p h dh -> h") for n in z]).abs()
        total[:drop] += effects[:drop]
        count[:drop] += 1
    last = count[:, 0] == 0
    total[last], count[last] = plain[last], 1
    return (total / count).cpu()


def atp_agreement(model, clean, corrupt, metric: Metric, scales: tuple[float, ...] = (0.1, 1.0)) -> pd.DataFrame:
    """Pearson of each estimate with exact head patching, with every head output moved ``scale`` of the
    way from clean to corrupted (small and full corruption). GradDrop is compared on ``|effect|``.
    Columns ``scale, method, pearson, spearman, n``."""
    clean = _check_pair(model, clean, corrupt)
    z = [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    full = _corrupt_activations(model, corrupt, z)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=lambda n: n in z)
    rows = []
    for scale in scales:
        edits = {n: cache[n] + scale * (full[n] - cache[n]) for n in z}
        exact = patch_heads(model, clean, edits, metric)
        for method in ATP_METHODS:
            estimate = attribution_patching(model, clean, _with_residual(model, clean, edits), metric, method)["heads"]
            rows.append({"scale": scale, "method": method, **agreement(exact, estimate)})
        rows.append(
            {
                "scale": scale,
                "method": "graddrop",
                **agreement(exact.abs(), graddrop_heads(model, clean, edits, metric)),
            }
        )
    return pd.DataFrame(rows)


def _with_residual(model, clean, edits: dict[str, Tensor]) -> dict[str, Tensor]:
    """Head edits plus the clean residual (``attribution_patching`` also estimates residual patches)."""
    names = [get_act_name("resid_pre", l) for l in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=lambda n: n in names)
    return edits | {n: cache[n] for n in names}


def rank(x: Tensor) -> Tensor:
    return x.flatten().argsort().argsort().double()


def agreement(exact: Tensor, approx: Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation between two equally shaped effect tensors."""
    a, b = exact.flatten().double(), approx.flatten().double()
    pearson = torch.corrcoef(torch.stack([a, b]))[0, 1]
    spearman = torch.corrcoef(torch.stack([rank(a), rank(b)]))[0, 1]
    return {"pearson": float(pearson), "spearman": float(spearman), "n": int(a.numel())}


def grid_frame(values: Tensor, columns: tuple[str, ...], name: str) -> pd.DataFrame:
    """Long table with one column per axis of ``values`` and the value in ``name``."""
    index = torch.cartesian_prod(*[torch.arange(n) for n in values.shape]).reshape(-1, values.ndim)
    frame = pd.DataFrame(index.numpy(), columns=list(columns))
    frame[name] = values.flatten().tolist()
    return frame
