"""Training throughput: our trainer against SAELens' own ``SAETrainer`` on the same activations and
config (ReLU-L1 and TopK), and K-member ensembles against K independent runs. Prints JSON with
ratios against the peer measured in the same run.

    python benchmarks/bench_train.py --steps 60 --d-in 128 --d-sae 1024 --batch 1024 --k 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def activations(n_rows: int, d_in: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(4 * d_in, d_in, generator=g)
    codes = torch.rand(n_rows, 4 * d_in, generator=g) * (torch.rand(n_rows, 4 * d_in, generator=g) < 0.02)
    return codes @ features


def ours(x: torch.Tensor, arch: str, args, n_members: int = 1) -> float:
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    config = TrainConfig(architecture=arch, d_sae=args.d_sae, k=args.k, n_members=n_members,
                         n_tokens=args.steps * args.batch, batch_size=args.batch, sparsity_coefficient=1.0,
                         normalize_activations="none", b_dec_init="zeros", log_every=10**9,
                         checkpoint_every=10**9, buffer_tokens=8 * args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_saes(config, f"{tmp}/run", activations=x, progress=False, evaluate=False)
        return time.perf_counter() - start


def saelens(x: torch.Tensor, arch: str, args) -> float:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if arch == "relu":
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=x.shape[1], d_sae=args.d_sae, l1_coefficient=1.0))
    else:
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=args.d_sae, k=args.k))
    batches = (x[i * args.batch:(i + 1) * args.batch] for i in range(10**9))
    cfg = SAETrainerConfig(total_training_samples=args.steps * args.batch, train_batch_size_samples=args.batch,
                           n_batches_for_norm_estimate=1, lr_end=3e-5)
    trainer = SAETrainer(cfg, sae, batches)
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--d-in", type=int, default=128)
    parser.add_argument("--d-sae", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = activations(max(args.steps * args.batch, 16 * args.batch), args.d_in)
    tokens = args.steps * args.batch
    result = {"config": vars(args), "vs_saelens": {}, "ensemble": {}}
    ours(x, "topk", args)  # warm-up: imports and first-call allocations
    for arch in ("relu", "topk"):
        peer, mine = saelens(x, arch, args), ours(x, arch, args)
        result["vs_saelens"][arch] = {"ours_tokens_per_s": tokens / mine, "saelens_tokens_per_s": tokens / peer,
                                      "speedup": peer / mine}
    single = ours(x, "topk", args, 1)
    for n_members in (1, 2, 4):
        seconds = single if n_members == 1 else ours(x, "topk", args, n_members)
        result["ensemble"][f"K={n_members}"] = {"seconds": seconds, "independent_runs_seconds": n_members * single,
                                                "ratio_to_K_times_one": seconds / (n_members * single)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
