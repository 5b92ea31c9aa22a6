"""Refuse a training run whose SAE will not fit in memory, before allocating it."""

from __future__ import annotations

import os

import torch

from sae_training.config import ConfigError, TrainConfig


def estimate_training_bytes(config: TrainConfig, d_in: int) -> int:
    """float32 bytes of parameters, gradients and two Adam moments (4 copies of ``K·(2·d_in·d_sae + …)``)
    plus about three ``[K, batch, d_sae]`` activation tensors (pre-activations, codes, their gradient)."""
    K, d_sae = config.n_members, config.d_sae
    parameters = K * (2 * d_in * d_sae + 3 * d_sae + d_in)
    return 4 * (4 * parameters + 3 * K * config.batch_size * d_sae)


def available_bytes(device: str) -> int:
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_memory(config: TrainConfig, d_in: int) -> None:
    """A one-line ConfigError naming the estimate and the free memory when the run cannot fit."""
    need, free = estimate_training_bytes(config, d_in), available_bytes(config.device)
    if need > free:
        raise ConfigError(f"d_sae={config.d_sae} x d_in={d_in} x {config.n_members} member(s) at batch "
                          f"{config.batch_size} needs about {gib(need)} to train, but {config.device} has "
                          f"{gib(free)} free; lower --d-sae, --batch-size or --ensemble")
