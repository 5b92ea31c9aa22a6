"""SAELens-format folders: ``cfg.json`` + ``sae_weights.safetensors`` + ``sparsity.safetensors``.

``save_member`` writes member i of an ensemble so that ``sae_lens.SAE.load_from_disk`` opens it
and gives the same encode/decode; ``check_saelens_folder`` validates a folder before loading it.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import safe_open
from torch import Tensor

from interp.features.dictionary import DictionaryError, load_dictionary
from interp.store.io import write_json, write_safetensors
from interp.store.run_folder import SAE_CONFIG, SAE_SPARSITY, SAE_WEIGHTS
from sae_training.architectures import EnsembleSAE

REQUIRED = {"standard": ("W_enc", "b_enc", "W_dec", "b_dec"), "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
            "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
            "gated": ("W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec")}


def saelens_cfg(sae: EnsembleSAE, i: int, hook_name: str, model_name: str | None, context_size: int) -> dict:
    version = importlib.metadata.version("sae-lens")  # not `import sae_lens`: that costs seconds
    return {
        "architecture": sae.saelens_architecture,
        "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
        **sae.saelens_extra_cfg(i),
        "metadata": {
            "sae_lens_version": version, "sae_lens_training_version": version,
            "model_name": model_name, "hook_name": hook_name, "hook_head_index": None,
            "context_size": context_size, "prepend_bos": True, "seqpos_slice": [None],
            "model_from_pretrained_kwargs": {},
            "trained_with": "interp-workbench sae_training", "ensemble_member": i,
            "trained_architecture": sae.architecture,
        },
    }


def save_member(folder: Path | str, sae: EnsembleSAE, i: int, *, scale: float = 1.0, hook_name: str,
                model_name: str | None = None, context_size: int = 128,
                density: Float[Tensor, " d_sae"] | None = None) -> Path:
    """Write member ``i`` (activation scaling folded into the weights) as a SAELens folder."""
    folder = Path(folder)
    tensors = {name: t.float().cpu() for name, t in sae.member_state(i, scale).items()}
    write_safetensors(folder / SAE_WEIGHTS, tensors)
    if density is not None:
        sparsity = torch.log10(density.float().cpu().clamp_min(1e-10))
        write_safetensors(folder / SAE_SPARSITY, {"sparsity": sparsity})
    write_json(folder / SAE_CONFIG, saelens_cfg(sae, i, hook_name, model_name, context_size), durable=True)
    return folder


def check_saelens_folder(folder: Path | str) -> dict:
    """Validate a SAELens folder (files, tensor names and shapes); return its cfg. Clear error otherwise."""
    folder = Path(folder)
    for name in (SAE_CONFIG, SAE_WEIGHTS):
        if not (folder / name).exists():
            raise DictionaryError(f"{folder} is not a SAELens SAE folder: {name} is missing")
    cfg = json.loads((folder / SAE_CONFIG).read_text())
    architecture = cfg.get("architecture", "standard")
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if not isinstance(d_in, int) or not isinstance(d_sae, int):
        raise DictionaryError(f"{folder / SAE_CONFIG} lacks integer d_in / d_sae")
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,),
                "threshold": (d_sae,), "b_gate": (d_sae,), "r_mag": (d_sae,), "b_mag": (d_sae,)}
    with safe_open(str(folder / SAE_WEIGHTS), framework="pt") as handle:
        present = set(handle.keys())
        for name in REQUIRED.get(architecture, ("W_enc", "W_dec", "b_dec")):
            if name not in present:
                raise DictionaryError(f"{folder / SAE_WEIGHTS} has no tensor '{name}' "
                                      f"(needed by a '{architecture}' SAE); the folder is incomplete, re-export it")
            shape = tuple(handle.get_slice(name).get_shape())
            if shape != expected[name]:
                raise DictionaryError(f"{folder / SAE_WEIGHTS}: '{name}' has shape {shape}, "
                                      f"{SAE_CONFIG} (d_in={d_in}, d_sae={d_sae}) implies {expected[name]}")
    return cfg


def load_saelens(folder: Path | str, device: str = "cpu"):
    """Validated SAELens folder seen through our ``Dictionary`` protocol (SAELens' own loader)."""
    check_saelens_folder(folder)
    return load_dictionary(folder, device=device)


class MemberDictionary:
    """Member ``i`` of a trained ensemble as a ``Dictionary`` on raw (unnormalised) activations."""

    def __init__(self, sae: EnsembleSAE, i: int, scale: float = 1.0):
        self.sae, self.i, self.scale = sae, i, scale
        self.d_in, self.d_sae = sae.d_in, sae.d_sae

    @property
    def W_dec(self) -> Float[Tensor, "d_sae d_in"]:
        return self.sae.W_dec[self.i].detach() / self.scale

    # no ``torch.no_grad`` here: feature circuits take gradients through encode and decode (callers that only
    # read values wrap their loops in no_grad themselves)
    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        return self.sae.encode(x * self.scale)[self.i]

    def decode(self, f: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_in"]:
        stacked = f.new_zeros(self.sae.n_members, *f.shape)
        stacked[self.i] = f
        return self.sae.decode(stacked)[self.i] / self.scale
