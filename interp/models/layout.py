"""Weight memory layout for fast decoding with TransformerLens' attention.

TransformerLens' ``Attention`` rearranges ``W_Q``/``W_K``/``W_V`` (``head d_model d_head -> (head d_head)
d_model``) and ``W_O`` (``head d_head d_model -> d_model (head d_head)``) on every forward; with the usual
contiguous storage each rearrange copies the matrix, which at GPT-2-small shape was 38 % of a key-value cached
32-token generation. Storing each weight so that its rearranged form is already contiguous makes those copies
views: the values and the shapes are unchanged, and every product is computed on the same contiguous matrix
as before, so outputs are bit-identical.
"""

from __future__ import annotations

import torch

QKV = ("W_Q", "W_K", "W_V")


def _stored_as(weight: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """``weight`` (same values and shape) whose memory is contiguous in the dimension order ``order``."""
    inverse = tuple(order.index(d) for d in range(weight.dim()))
    return weight.permute(order).contiguous().permute(inverse)


def use_decode_layout(model) -> None:
    """Re-store each block's attention weights (in place, idempotent) so that TransformerLens' per-forward
    rearranges are views. Weights that are not plain parameters (grouped-query keys, 4-bit) are left alone."""
    with torch.no_grad():
        for block in getattr(model, "blocks", []):
            params = getattr(block.attn, "_parameters", {})
            wanted = {name: (0, 2, 1) for name in QKV} | {"W_O": (2, 0, 1)}
            for name, order in wanted.items():
                weight = params.get(name)
                if weight is None or weight.dim() != 3 or weight.permute(order).is_contiguous():
                    continue
                weight.data = _stored_as(weight.data, order)
