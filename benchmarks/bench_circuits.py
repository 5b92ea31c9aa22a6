"""Circuits: attribution to every SAE feature of a layer (one forward + one backward) vs the naive
per-feature patching loop, and the SVD of every head's QK circuit of a GPT-2-small-sized model
(our QR route vs TransformerLens' ``FactoredMatrix.svd``). Prints one JSON object.

    python benchmarks/bench_circuits.py                       # demo-sized model, 512 features, ~1 min on 2 cores
    python benchmarks/bench_circuits.py --naive-features 512  # time the naive loop over every feature
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformer_lens import FactoredMatrix

from interp.models.loading import random_model

HOOK = "blocks.1.hook_resid_post"
DEMO = dict(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=4096, n_ctx=128, act_fn="gelu",
            normalization_type="LN")
GPT2_SMALL = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=16, d_vocab=16, n_ctx=16, act_fn="gelu",
                  normalization_type="LN")


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    return (time.perf_counter() - start) / repeats, result


def bench_attribution(d_sae: int, n_prompts: int, seq: int, naive_features: int) -> dict:
    from sae_lens import StandardSAE, StandardSAEConfig

    from interp.circuits.feature_circuits import feature_effects_by_patching, node_attribution
    from interp.circuits.prompts import induction_prompts
    from interp.features.dictionary import as_dictionary

    torch.manual_seed(0)
    model = random_model(DEMO, seed=0)
    sae = StandardSAE(StandardSAEConfig(d_in=128, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.1)
    sites = {HOOK: as_dictionary(sae)}
    prompts = induction_prompts(model, n_prompts, seq)
    metric = prompts.metric()
    atp_s, effects = timed(lambda: node_attribution(model, prompts.clean, metric, sites, prompts.corrupt, "atp"), 3)
    ig_s, _ = timed(lambda: node_attribution(model, prompts.clean, metric, sites, prompts.corrupt, "ig", steps=10))
    features = effects[HOOK]["features"].sum(0).abs().argsort(descending=True)[:naive_features].tolist()
    naive_s, exact = timed(
        lambda: feature_effects_by_patching(model, prompts.clean, metric, sites, HOOK, features, prompts.corrupt)
    )
    per_feature = naive_s / len(features)
    approx = effects[HOOK]["features"].sum(0)[features]
    corr = float(torch.corrcoef(torch.stack([approx, exact]))[0, 1])
    return {
        "d_sae": d_sae,
        "tokens": n_prompts * (1 + 2 * seq),
        "atp_all_features_s": round(atp_s, 4),
        "ig10_all_features_s": round(ig_s, 4),
        "naive_loop_features_timed": len(features),
        "naive_loop_s_per_feature": round(per_feature, 5),
        "naive_loop_all_features_s": round(per_feature * d_sae, 3),
        "speedup_atp_vs_naive_all_features": round(per_feature * d_sae / atp_s, 1),
        "atp_vs_exact_pearson_on_timed_features": round(corr, 4),
    }


def bench_svd() -> dict:
    from interp.circuits.decomposition import all_qk_svds, augmented_qk

    model = random_model(GPT2_SMALL, seed=0)
    ours_s, _ = timed(lambda: all_qk_svds(model))
    with torch.no_grad():
        factors = [augmented_qk(model, l, h) for l in range(12) for h in range(12)]
        Q, K = torch.stack([q for q, _ in factors]), torch.stack([k for _, k in factors])
    peer_s, _ = timed(lambda: FactoredMatrix(Q, K.transpose(-1, -2)).svd())
    return {
        "heads": 144,
        "ours_all_qk_svds_s": round(ours_s, 3),
        "transformer_lens_factored_svd_s": round(peer_s, 3),
        "ratio_peer_over_ours": round(peer_s / ours_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-sae", type=int, default=512)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--half-length", type=int, default=20)
    parser.add_argument(
        "--naive-features", type=int, default=64, help="features the naive loop times (extrapolated to all)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "threads": args.threads,
        "attribution": bench_attribution(args.d_sae, args.prompts, args.half_length, args.naive_features),
        "qk_svd_gpt2_small_shape": bench_svd(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
