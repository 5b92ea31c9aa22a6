"""Helpers shared by the circuit analyses and notebooks: head-pair edges of ``[layer_a, head_a, layer_b,
head_b]`` tensors, their labels, and rank agreement between edge-scoring methods."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from interp.circuits.patching import agreement


def head_pairs(values: Float[Tensor, "n_layers n_heads n_layers n_heads"]) -> Float[Tensor, "n_pairs"]:
    """The ``[layer_a, head_a, layer_b, head_b]`` entries with ``layer_b > layer_a``, flattened."""
    n_layers = values.shape[0]
    keep = torch.zeros(values.shape, dtype=torch.bool)
    for la in range(n_layers):
        keep[la, :, la + 1:] = True
    return values[keep]


def pair_label(index: int, n_layers: int, n_heads: int) -> str:
    """``L{la}H{ha}->L{lb}H{hb}`` of entry ``index`` of ``head_pairs``."""
    pairs = [(la, ha, lb, hb) for la in range(n_layers) for ha in range(n_heads)
             for lb in range(n_layers) for hb in range(n_heads) if lb > la]
    la, ha, lb, hb = pairs[index]
    return f"L{la}H{ha}->L{lb}H{hb}"


def rank_agreement(methods: dict[str, Tensor]) -> dict:
    """Spearman correlation of every pair of methods' edge weights, and each method's top edge index."""
    names = list(methods)
    pairs = {
        f"{a}~{b}": agreement(methods[a], methods[b])["spearman"] for i, a in enumerate(names) for b in names[i + 1 :]
    }
    return {"spearman": pairs, "top_edge": {name: int(values.flatten().argmax()) for name, values in methods.items()}}
