"""Hand-set dictionaries for the evaluation tests."""

from __future__ import annotations

import torch


class LinearDictionary:
    """``f = relu(x W_enc^T + b_enc)``, ``x̂ = f W_dec``: any hand-set ReLU dictionary."""

    def __init__(self, W_enc: torch.Tensor, W_dec: torch.Tensor, b_enc: torch.Tensor | None = None):
        self.W_enc, self._W_dec = W_enc.float(), W_dec.float()
        self.b_enc = torch.zeros(W_enc.shape[0]) if b_enc is None else b_enc.float()
        self.d_sae, self.d_in = W_dec.shape

    @property
    def W_dec(self) -> torch.Tensor:
        return self._W_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.float() @ self.W_enc.T + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self._W_dec


def exact_dictionary(d: int, scale: float = 1.0) -> LinearDictionary:
    """``[relu(x), relu(-x)]`` decoded by ``[I; -I]`` times ``scale``: reconstructs ``scale * x`` exactly."""
    eye = torch.eye(d)
    return LinearDictionary(torch.cat([eye, -eye]), scale * torch.cat([eye, -eye]))
