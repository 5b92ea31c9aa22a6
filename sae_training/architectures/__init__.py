"""SAE architectures, one module each, registered by name in ``ARCHITECTURES``.

Every entry is an ``EnsembleSAE`` subclass: K members as stacked ``[K, ...]`` parameters.
"""

from __future__ import annotations

from interp.errors import InputError
from sae_training.architectures.base import EnsembleSAE, LossParts, SAEShape
from sae_training.architectures.batchtopk import BatchTopKSAE
from sae_training.architectures.jumprelu import JumpReLUSAE
from sae_training.architectures.relu import ReLUSAE
from sae_training.architectures.topk import TopKSAE

ARCHITECTURES: dict[str, type[EnsembleSAE]] = {
    cls.architecture: cls for cls in (ReLUSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE)
}


def architecture_class(name: str) -> type[EnsembleSAE]:
    """The class registered as ``name``; a clear error listing the known ones otherwise."""
    if name not in ARCHITECTURES:
        raise InputError(f"unknown architecture '{name}'; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build_sae(name: str, shape: SAEShape, seed: int = 0) -> EnsembleSAE:
    return architecture_class(name)(shape, seed)


__all__ = ["ARCHITECTURES", "EnsembleSAE", "LossParts", "SAEShape", "architecture_class", "build_sae"]
