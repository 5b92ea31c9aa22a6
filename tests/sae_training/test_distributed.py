"""Two gloo processes under ``torchrun``, each on half of every global batch, take the same steps as one
process on the whole batch (gradients averaged across ranks, dead-latent counters max-reduced)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.sae_training.distributed_worker import CONFIGS, train

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_on_the_same_global_batch(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(WORKER), str(tmp_path / "ddp")], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    for name in CONFIGS:
        ranks = [load_file(str(tmp_path / "ddp" / name / f"rank{r}.safetensors")) for r in (0, 1)]
        single = train(name, tmp_path / "single" / name)
        assert set(ranks[0]) == set(single) and "W_enc" in single
        for key, value in single.items():
            assert torch.equal(ranks[0][key], ranks[1][key]), f"{name}: ranks disagree on {key}"
            torch.testing.assert_close(ranks[0][key], value, atol=1e-5, rtol=1e-4, msg=f"{name}: {key}")
            if key in ("W_enc", "W_dec"):
                assert not torch.equal(value, train_init(name)[key]), f"{name}: {key} never moved"


def train_init(name):
    """The parameters before any step (so the comparison is not between two untrained models)."""
    from sae_training.architectures import build_sae
    from tests.sae_training.distributed_worker import config

    cfg = config(name)
    return build_sae(cfg.architecture, cfg.shape(16), seed=cfg.seed).state_dict()
