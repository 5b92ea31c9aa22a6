"""Candidate-graph matching against the exact Hungarian assignment, measured in one run.

At ``--exact-size`` latents (default 4,096, d_in 768) both are run on two decoder pairs: unrelated random
decoders (the worst case: no feature has a clear partner, as at MFR's random initialisation) and a related
pair (B = a permutation of A plus noise of ``--noise`` x the entries' scale: most features have a clear
partner, as in two SAEs trained on the same activations). Prints the wall times, the mean matched cosine of
each, their gap and the fraction of features given the same partner. At ``--large`` latents (default
24,576) only the candidate graph runs (the exact assignment would need ``n^2`` float64 costs, 4.8 GB at
24k, and O(n^3) time).

    python benchmarks/bench_matching.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def pairs(n: int, d: int, noise: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=gen)
    yield "unrelated", A, torch.randn(n, d, generator=gen)
    yield "related", A, A[torch.randperm(n, generator=gen)] + noise * torch.randn(n, d, generator=gen)


def timed(fn):
    tic = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - tic


def main(argv: list[str] | None = None) -> int:
    from scipy.optimize import linear_sum_assignment

    from interp.features.approx_matching import EXACT_MAX, match_by_candidates
    from interp.features.matching import unit_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exact-size", type=int, default=4096)
    parser.add_argument("--large", type=int, default=24_576, help="0 to skip")
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--k", type=int, default=16, help="candidates per feature, both ways")
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for kind, A, B in pairs(args.exact_size, args.d_in, args.noise):
        def exact():
            cos = (unit_rows(A) @ unit_rows(B).T).numpy()
            rows, cols = linear_sum_assignment(cos, maximize=True)
            return cols, cos[rows, cols]
        (exact_match, exact_cos), exact_s = timed(exact)
        (match, cos), cand_s = timed(lambda: match_by_candidates(A, B, k=args.k))
        print(json.dumps({"n": args.exact_size, "d_in": args.d_in, "pair": kind, "k": args.k,
                          "exact_s": round(exact_s, 2), "candidates_s": round(cand_s, 2),
                          "speedup": round(exact_s / cand_s, 2),
                          "exact_mmcs": round(float(exact_cos.mean()), 6),
                          "candidates_mmcs": round(float(cos.mean()), 6),
                          "mmcs_gap": float(exact_cos.mean() - cos.mean()),
                          "same_partner": round(float(np.mean(match == exact_match)), 4)}), flush=True)
    if args.large:
        for kind, A, B in pairs(args.large, args.d_in, args.noise):
            (match, cos), cand_s = timed(lambda: match_by_candidates(A, B, k=args.k))
            print(json.dumps({"n": args.large, "d_in": args.d_in, "pair": kind, "k": args.k,
                              "candidates_s": round(cand_s, 2), "candidates_mmcs": round(float(cos.mean()), 6),
                              "one_to_one": bool(len(np.unique(match)) == args.large),
                              "exact_cost_matrix_gb": round(args.large**2 * 8 / 1e9, 1),
                              "used_by_match_features": args.large > EXACT_MAX}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
