"""Activation patching, path patching and attribution patching (the gradient approximation).

Convention ("noising"): run the clean prompt, overwrite one activation with its value on the
corrupted prompt, and report ``metric(patched) - metric(clean)``; important sites give large
negative effects. ``corrupt`` is either corrupted tokens (same shape) or a dict of corrupted
activations by hook name, which lets tests and notebooks patch in small, hand-made edits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.attention import CircuitInputError, check_tokens

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
        raise CircuitInputError(f"clean {tuple(clean.shape)} and corrupted {tuple(corrupt.shape)} prompts must have the same shape")
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
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)]
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
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    source = _corrupt_activations(model, corrupt, names)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.no_grad():
        base = metric(model(clean))
        for l, name in enumerate(names):
            for h in range(model.cfg.n_heads):
                hooks = [(name, _replace(source[name], (slice(None), slice(None), h)))]
                out[l, h] = metric(model.run_with_hooks(clean, fwd_hooks=hooks)) - base
    return out


def path_patch(model, clean, corrupt, metric: Metric, sides: tuple[str, ...] = SIDES) -> Float[Tensor, "side layer_a head_a layer_b head_b"]:
    """Effect of sender head A's corrupted output reaching receiver head B only through B's q, k or v.

    B's input is recomputed from the clean residual plus A's output change (every other path frozen
    at its clean value), passed through B's own layer norm; everything after B runs freely.
    """
    clean = _check_pair(model, clean, corrupt)
    unknown = set(sides) - set(SIDES)
    if unknown:
        raise CircuitInputError(f"unknown side(s) {sorted(unknown)}; use q, k, v")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    z_names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
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
                    normed = model.blocks[lb].ln1(cache[f"blocks.{lb}.hook_resid_pre"] + delta)
                    attn_b = model.blocks[lb].attn
                    for i, side in enumerate(sides):
                        W, b = {"q": (attn_b.W_Q, attn_b.b_Q), "k": (attn_b.W_K, attn_b.b_K), "v": (attn_b.W_V, attn_b.b_V)}[side]
                        patched = einops.einsum(normed, W, "b p d, h d dh -> b p h dh") + b
                        for hb in range(H):
                            hooks = [(f"blocks.{lb}.attn.hook_{side}", _replace(patched, (slice(None), slice(None), hb)))]
                            out[i, la, ha, lb, hb] = metric(model.run_with_hooks(clean, fwd_hooks=hooks)) - base
    return out


def attribution_patching(model, clean, corrupt, metric: Metric) -> dict[str, Tensor]:
    """Linear estimate of every patch from one forward and one backward pass on the clean prompt.

    ``effect ≈ ∇_a metric|clean · (a_corrupt - a_clean)``; returns ``residual [layer, pos]`` and
    ``heads [layer, head]``, shaped like ``patch_residual`` and ``patch_heads``.
    """
    clean = _check_pair(model, clean, corrupt)
    L = model.cfg.n_layers
    resid = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
    z = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    source = _corrupt_activations(model, corrupt, resid + z)
    saved: dict[str, Tensor] = {}

    def keep(activation, hook):
        if not activation.requires_grad:  # frozen weights: make the earliest site a leaf
            activation = activation.detach().requires_grad_()
        activation.retain_grad()
        saved[hook.name] = activation
        return activation

    with torch.enable_grad():
        logits = model.run_with_hooks(clean, fwd_hooks=[(name, keep) for name in resid + z])
        metric(logits).backward()
    model.zero_grad(set_to_none=True)

    def effect(name, reduce):
        return einops.reduce((source[name] - saved[name].detach()) * saved[name].grad, reduce, "sum")

    return {
        "residual": torch.stack([effect(name, "b p d -> p") for name in resid]).cpu(),
        "heads": torch.stack([effect(name, "b p h dh -> h") for name in z]).cpu(),
    }


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


def write_patching(folder: Path | str, **frames: pd.DataFrame) -> list[Path]:
    """Store each frame as ``<name>.parquet`` (e.g. ``patch_residual``, ``patch_heads``, ``path_patch``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return [folder / f"{name}.parquet" for name in frames]
