"""What a feature's weights say without any activations: its logit effects (``W_dec @ W_U``) and its
nearest other features by decoder cosine. Batched so a 65k-feature SAE never forms the full product."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from interp.features.dictionary import DictionaryError
from interp.features.matching import unit_rows


def logit_effects(W_dec: Float[Tensor, "d_sae d_in"], W_U: Float[Tensor, "d_in d_vocab"], k: int = 10,
                  batch: int = 1024) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top ``k`` positive and negative entries of each row of ``W_dec @ W_U`` (values, token ids)."""
    if W_dec.shape[1] != W_U.shape[0]:
        raise DictionaryError(f"W_dec has d_in={W_dec.shape[1]} but W_U has d_model={W_U.shape[0]}; "
                              "the dictionary must sit in the residual stream of this model")
    out = [[], [], [], []]
    with torch.no_grad():
        W_U = W_U.float().to(W_dec.device)
        for start in range(0, W_dec.shape[0], batch):
            logits = W_dec[start:start + batch].float() @ W_U
            pos, neg = logits.topk(k, dim=1), (-logits).topk(k, dim=1)
            for slot, t in enumerate((pos.values, pos.indices, -neg.values, neg.indices)):
                out[slot].append(t)
    return tuple(torch.cat(o).cpu() for o in out)  # one transfer at the end, not one per batch


def nearest_features(W_dec: Float[Tensor, "d_sae d_in"], k: int = 10, batch: int = 2048) -> tuple[Tensor, Tensor]:
    """Each feature's ``k`` nearest other features by decoder cosine (cosines, ids)."""
    unit = unit_rows(W_dec.detach())
    k = min(k, unit.shape[0] - 1)
    values, ids = [], []
    for start in range(0, unit.shape[0], batch):
        cos = unit[start:start + batch] @ unit.T
        cos[torch.arange(cos.shape[0]), torch.arange(start, start + cos.shape[0])] = -torch.inf
        top = cos.topk(k, dim=1)
        values.append(top.values)
        ids.append(top.indices)
    return torch.cat(values).cpu(), torch.cat(ids).cpu()
