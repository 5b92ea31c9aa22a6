"""The ``Dictionary`` protocol: what every analysis accepts, so our SAEs and SAELens SAEs both fit.

A dictionary maps ``[batch, d_in]`` activations to ``[batch, d_sae]`` codes and back, and exposes
its decoder rows ``W_dec [d_sae, d_in]``. ``as_dictionary`` adapts a SAELens ``SAE`` (or any
object with ``encode``/``decode``/``W_dec``) and ``load_dictionary`` opens a SAELens folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from interp.features.releases import load_release
from interp.features.transcoder import is_transcoder_folder, load_transcoder
from interp.store.errors import DictionaryError, InputError  # noqa: F401  (DictionaryError: imported from here too)
from interp.store.names import is_release_spec
from interp.store.run_folder import SAE_CONFIG, SAE_WEIGHTS


@runtime_checkable
class Dictionary(Protocol):
    d_in: int
    d_sae: int

    @property
    def W_dec(self) -> Float[Tensor, "d_sae d_in"]: ...

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]: ...

    def decode(self, f: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_in"]: ...


class SAELensDictionary:
    """Adapter: a SAELens ``SAE`` seen through the ``Dictionary`` protocol."""

    def __init__(self, sae):
        self.sae = sae
        self.d_in = int(sae.cfg.d_in)
        self.d_sae = int(sae.cfg.d_sae)
        metadata = getattr(sae.cfg, "metadata", None)
        self.hook_name = getattr(metadata, "hook_name", None)

    @property
    def W_dec(self) -> Float[Tensor, "d_sae d_in"]:
        return self.sae.W_dec

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        return self.sae.encode(x)

    def decode(self, f: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_in"]:
        return self.sae.decode(f)


class ReluDictionary:
    """A dictionary from given weights: ``encode(x) = ReLU(x W_enc + b_enc)``, ``decode(f) = f W_dec + b_dec``.

    The documented toy of planted tests and benchmarks (hand-set rule latents, random directions): any weights
    that satisfy the ``Dictionary`` protocol without an SAE folder. ``b_dec`` defaults to zero.
    """

    def __init__(self, W_enc: Float[Tensor, "d_in d_sae"], b_enc: Float[Tensor, "d_sae"],
                 W_dec: Float[Tensor, "d_sae d_in"], b_dec: Float[Tensor, "d_in"] | None = None):
        if W_enc.shape != W_dec.T.shape or b_enc.shape != (W_enc.shape[1],):
            raise DictionaryError(f"W_enc {tuple(W_enc.shape)}, b_enc {tuple(b_enc.shape)} and W_dec "
                                  f"{tuple(W_dec.shape)} do not fit: need [d_in, d_sae], [d_sae], [d_sae, d_in]")
        self.W_enc, self.b_enc, self._W_dec = W_enc, b_enc, W_dec
        self.b_dec = torch.zeros(W_dec.shape[1], dtype=W_dec.dtype) if b_dec is None else b_dec
        self.d_in, self.d_sae = int(W_enc.shape[0]), int(W_enc.shape[1])

    @property
    def W_dec(self) -> Float[Tensor, "d_sae d_in"]:
        return self._W_dec

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        return torch.relu(x @ self.W_enc + self.b_enc)

    def decode(self, f: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_in"]:
        return f @ self._W_dec + self.b_dec


def as_dictionary(obj) -> Dictionary:
    """Return ``obj`` if it already satisfies the protocol, else wrap a SAELens SAE."""
    if isinstance(obj, Dictionary):
        return obj
    if hasattr(obj, "cfg") and hasattr(obj, "encode") and hasattr(obj, "W_dec"):
        return SAELensDictionary(obj)
    raise DictionaryError(f"{type(obj).__name__} is not a dictionary: it needs encode, decode, W_dec, d_in, d_sae")


def load_dictionary(folder: Path | str, device: str = "cpu") -> Dictionary:
    """Open a SAELens-format folder (``cfg.json`` + ``sae_weights.safetensors``) with SAELens' loader, or a
    ``saelens:<release>/<sae_id>`` release SAE from the local Hugging Face cache (``SAE.from_pretrained``).

    The one resolver of an SAE argument: the CLI, the pipeline and the analyses all open SAEs here."""
    from sae_lens import SAE

    if is_release_spec(folder):
        return SAELensDictionary(load_release(str(folder), device=device))
    folder = Path(folder)
    for required in (SAE_CONFIG, SAE_WEIGHTS):
        if not (folder / required).exists():
            raise DictionaryError(f"{folder} is not a SAELens SAE folder: {required} is missing")
    if is_transcoder_folder(folder):  # SAELens 6 has no TopK transcoder: ours reads every kind (on the MLP input)
        return load_transcoder(folder, device=device)
    try:
        sae = SAE.load_from_disk(str(folder), device=device)
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as error:  # e.g. cfg.json d_in vs the weights
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise DictionaryError(f"{folder} cannot be loaded as a SAELens SAE ({first}); its {SAE_CONFIG} and "
                              f"{SAE_WEIGHTS} disagree or are damaged: export the SAE again") from None
    return SAELensDictionary(sae)


def check_fits(dictionary: Dictionary, d_in: int, where: str) -> None:
    """Clear error when a dictionary's width does not match the activations at ``where``."""
    if dictionary.d_in != d_in:
        raise DictionaryError(
            f"the dictionary expects d_in={dictionary.d_in} but {where} has width {d_in}; "
            "use an SAE trained on that hook"
        )


def reconstruct(dictionary: Dictionary, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_in"]:
    with torch.no_grad():
        return dictionary.decode(dictionary.encode(x))
