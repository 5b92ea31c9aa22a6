"""SAE architectures, one module each, registered by name in ``ARCHITECTURES``.

Every entry is an ``EnsembleSAE`` subclass (K members as stacked ``[K, ...]`` parameters) whose
``Options`` frozen dataclass holds its own knobs. Adding one: see sae_training/README.md.
"""

from __future__ import annotations

from interp.store.errors import InputError
from sae_training.architectures.base import EnsembleSAE, LossParts, SAEShape
from sae_training.architectures.batchtopk import BatchTopKSAE
from sae_training.architectures.gated import GatedSAE
from sae_training.architectures.jumprelu import JumpReLUSAE
from sae_training.architectures.matryoshka import MatryoshkaSAE
from sae_training.architectures.mfr_tied import TiedTopKSAE
from sae_training.architectures.options import OptionSpec, build_options, option_specs
from sae_training.architectures.relu import ReLUSAE
from sae_training.architectures.topk import TopKSAE

ARCHITECTURES: dict[str, type[EnsembleSAE]] = {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReLUSAE,
    "mfr_tied": TiedTopKSAE,
    "matryoshka": MatryoshkaSAE,
    "gated": GatedSAE,
}


def architecture_class(name: str) -> type[EnsembleSAE]:
    """The class registered as ``name``; a clear error listing the known ones otherwise."""
    if name not in ARCHITECTURES:
        raise InputError(f"unknown architecture '{name}'; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def architecture_options(name: str) -> list[OptionSpec]:
    """The options of architecture ``name`` (name, type, default, help, choices)."""
    return option_specs(architecture_class(name).Options)


def make_options(name: str, values=None):
    """Architecture ``name``'s options from a dict (or an options instance, checked to be its type)."""
    cls = architecture_class(name).Options
    if values is None:
        return cls()
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise InputError(f"options of '{name}' must be a {cls.__name__} or a dict, got {type(values).__name__}")
    return build_options(name, cls, values)


def build_sae(name: str, shape: SAEShape, options=None, seed: int = 0) -> EnsembleSAE:
    return architecture_class(name)(shape, make_options(name, options), seed)


__all__ = ["ARCHITECTURES", "EnsembleSAE", "LossParts", "OptionSpec", "SAEShape", "architecture_class",
           "architecture_options", "build_sae", "make_options"]
