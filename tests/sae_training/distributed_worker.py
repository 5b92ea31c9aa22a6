"""Run by ``torchrun`` from ``test_distributed.py``: train each named config on this rank's slice of the
global batch and write this rank's final parameters to ``<out>/<name>/rank<r>.safetensors``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from sae_training.config import TrainConfig
from sae_training.trainer import train_saes


def planted(n: int = 4096, d: int = 16, n_features: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(n_features, d, generator=g), dim=-1)
    return (torch.rand(n, n_features, generator=g) * (torch.rand(n, n_features, generator=g) < 0.1)) @ features


CONFIGS = {
    # TopK ensemble under MFR with a short dead window, so AuxK and the max-reduced dead counters matter
    "topk_mfr": dict(architecture="topk", d_sae=64, k=4, n_members=2, mfr_coefficient=1.0, mfr_warmup_steps=2,
                     dead_window=2),
    "relu": dict(architecture="relu", d_sae=48, l1_coefficient=0.3),
}


def config(name: str) -> TrainConfig:
    return TrainConfig(**CONFIGS[name], n_tokens=256 * 8, batch_size=256, lr=3e-3, log_every=4,
                       checkpoint_every=4, buffer_tokens=1024, eval_batches=1)


def train(name: str, run_dir: Path) -> dict[str, torch.Tensor]:
    run = train_saes(config(name), run_dir, activations=planted(), progress=False, evaluate=False)
    return {key: value.detach().contiguous() for key, value in run.sae.state_dict().items()}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    import torch.distributed as dist

    for name in CONFIGS:
        state = train(name, out / name / "run")
        save_file(state, str(out / name / f"rank{dist.get_rank()}.safetensors"))
    dist.destroy_process_group()
