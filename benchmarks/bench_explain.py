"""Explanations at scale: the example pass and the offline explainer + scorer on a synthetic SAE, JSON out.

A random ReLU dictionary reads activations made of a token embedding plus noise (so its latents are
mostly token-driven, like a small SAE's); tokens follow a Zipf law over a synthetic vocabulary. The
stream is generated chunk by chunk, so memory is what the pass keeps, not the tokens. Reports the pass's
tokens/s, the seconds per 1,000 features of explaining and scoring, the peak resident memory, and the
detection scores against their baseline.

    python benchmarks/bench_explain.py --features 512 --tokens 262144            # the demo's shape
    python benchmarks/bench_explain.py --features 24576 --tokens 262144          # the 24k figure
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import time

import torch


def random_dictionary(d_in: int, d_sae: int, density: float, seed: int):
    """ReLU(x W_enc + b): unit random directions, thresholds set for about ``density`` firing, decoder = W_encᵀ."""
    from interp.features.dictionary import ReluDictionary

    g = torch.Generator().manual_seed(seed)
    W_enc = torch.nn.functional.normalize(torch.randn(d_in, d_sae, generator=g), dim=0)
    b_enc = torch.full((d_sae,), -float(torch.distributions.Normal(0, 1).icdf(torch.tensor(1 - density))))
    return ReluDictionary(W_enc, b_enc, W_enc.T.contiguous())


def stream(n_tokens: int, vocab: int, d_in: int, context: int, chunk_seqs: int, seed: int):
    from interp.cache.store import TokenChunk

    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(vocab, d_in, generator=g)
    zipf = 1.0 / torch.arange(1, vocab + 1).float()
    n_seq = n_tokens // context
    for start in range(0, n_seq, chunk_seqs):
        b = min(chunk_seqs, n_seq - start)
        ids = torch.multinomial(zipf, b * context, replacement=True, generator=g).reshape(b, context)
        ids[:, 0] = 0
        x = embed[ids] + 0.5 * torch.randn(b, context, d_in, generator=g)
        yield TokenChunk(
            x.reshape(-1, d_in),
            ids.reshape(-1),
            torch.arange(start, start + b).repeat_interleave(context),
            torch.arange(context).repeat(b),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=262_144)
    parser.add_argument("--d-in", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-chunks", type=int, default=4, help="chunks of 4,096 tokens for the top tokens")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from interp.explain.examples import ExampleArrays, ExampleConfig, collect_examples, example_frame
    from interp.explain.explanations import Explainer
    from interp.explain.rules import Vocabulary
    from interp.features.dashboards import DashboardConfig, feature_dashboards

    dictionary = random_dictionary(args.d_in, args.features, args.density, args.seed)
    chunks = lambda: stream(args.tokens, args.vocab, args.d_in, 128, 32, args.seed)
    start = time.perf_counter()  # the hard-negative tokens: the dashboards' top tokens, here over the first chunks
    first = itertools.islice(chunks(), args.top_chunks)
    top = feature_dashboards(dictionary, first, DashboardConfig(cooccurrence=None)).top.context_ids[:, 8, :].T
    dashboards = time.perf_counter() - start
    start = time.perf_counter()
    config = ExampleConfig()
    sets = collect_examples(dictionary, chunks(), top, config)
    frame = example_frame(sets)
    collect = time.perf_counter() - start
    start = time.perf_counter()
    arrays = ExampleArrays(frame, config.left)
    vocab = Vocabulary([f" w{i}" if i % 7 else f" W{i}" for i in range(args.vocab)])
    explainer = Explainer(
        arrays,
        vocab,
        (sets.fires["train"] + sets.fires["test"]).numpy(),
        sets.n_tokens["train"] + sets.n_tokens["test"],
    )
    table = explainer.rows(range(args.features))
    explain = time.perf_counter() - start
    scored = table.dropna(subset=["detection", "baseline_detection"])
    print(
        json.dumps(
            {
                "features": args.features,
                "tokens": args.tokens,
                "threads": args.threads,
                "top_tokens_seconds (a dashboards pass over --top-chunks chunks; not part of explain)": round(
                    dashboards, 2
                ),
                "example_pass_seconds": round(collect, 2),
                "example_pass_tokens_per_s": round(args.tokens / collect),
                "explain_and_score_seconds": round(explain, 2),
                "explain_and_score_seconds_per_1000_features": round(1000 * explain / args.features, 2),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "status": table.status.value_counts().to_dict(),
                "detection_median": round(float(scored.detection.median()), 3),
                "baseline_detection_median": round(float(scored.baseline_detection.median()), 3),
                "share_beating_baseline_by_0.2": round(
                    float((scored.detection >= scored.baseline_detection + 0.2).mean()), 3
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
