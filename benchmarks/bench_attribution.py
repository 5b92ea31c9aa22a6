"""Attribution-graph time and peak memory per prompt length on a random model, with the estimate printed before
each run next to the measured growth of the process's peak resident memory (one subprocess per length, so each
peak is its own).

    python benchmarks/bench_attribution.py --lengths 16 32 --layers 2 --d-model 128 --d-sae 512 --k 16
    python benchmarks/bench_attribution.py --gpt2 --lengths 64 256 1024 --k 32 --device cuda   # the issue's shape
    python benchmarks/bench_attribution.py --gpt2 --lengths 256 --k 32 --max-feature-nodes 4096   # capped, on a CPU

``--gpt2``: 12 layers, d_model 768, 12 heads, d_mlp 3072, vocabulary 50,257, 24,576-latent TopK transcoders (random
weights). A length whose estimate exceeds the free memory is reported as refused, with the estimate.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from transformer_lens.utilities import get_act_name


def one(args: argparse.Namespace, length: int) -> dict:
    import torch

    from interp.circuits.attribution import attribute
    from interp.features.transcoder import Transcoder
    from interp.models.loading import random_model
    from interp.store.errors import InputError

    torch.manual_seed(0)
    shape = ({"n_layers": 12, "d_model": 768, "n_heads": 12, "d_head": 64, "d_mlp": 3072, "d_vocab": 50257,
              "d_sae": 24576} if args.gpt2 else
             {"n_layers": args.layers, "d_model": args.d_model, "n_heads": 4, "d_head": args.d_model // 4,
              "d_mlp": 4 * args.d_model, "d_vocab": 4096, "d_sae": args.d_sae})
    d_sae = shape.pop("d_sae")
    model = random_model({**shape, "n_ctx": max(length, 8), "act_fn": "gelu", "normalization_type": "LN"}, seed=None,
                         device=args.device)
    d = model.cfg.d_model
    transcoders = [
        Transcoder(
            torch.randn(d, d_sae, device=args.device) / d**0.5,
            torch.zeros(d_sae, device=args.device),
            torch.randn(d_sae, d, device=args.device) / d_sae**0.5,
            torch.zeros(d, device=args.device),
            "topk",
            k=args.k,
            hook_in=get_act_name("normalized", layer, "ln2"),
            hook_out=get_act_name("mlp_out", layer),
        )
        for layer in range(model.cfg.n_layers)
    ]
    tokens = torch.randint(1, model.cfg.d_vocab, (length,))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    estimates = []

    def printed(estimate: dict) -> None:  # shown before the run starts
        estimates.append(estimate)
        print(json.dumps({"length": length, "estimate_before_run": estimate}), file=sys.stderr, flush=True)

    start, cpu, reported = time.perf_counter(), time.process_time(), [0.0]

    def progress(done: int, total: int) -> None:  # a line a minute: what a killed run had reached
        if time.perf_counter() - reported[0] > 60 or done == total:
            reported[0] = time.perf_counter()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            print(json.dumps({"length": length, "rows_done": done, "rows": total,
                              "wall_s": round(time.perf_counter() - start, 1),
                              "cpu_s": round(time.process_time() - cpu, 1), "peak_growth_bytes_so_far": rss - base}),
                  file=sys.stderr, flush=True)

    try:
        graph = attribute(model, transcoders, tokens, batch_size=args.batch_size, on_estimate=printed,
                          on_progress=progress, max_feature_nodes=args.max_feature_nodes,
                          update_interval=args.update_interval)
    except InputError as error:
        return {"length": length, "refused": str(error), "estimate_bytes": estimates[0]["total"] if estimates else None}
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated()
        if args.device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "length": length,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "n_features": graph.n_features,
        "n_active_features": graph.n_active_features,
        "n_nodes": graph.n_nodes,
        "estimate_bytes": estimates[0]["total"],
        "estimate_parts": estimates[0],
        "peak_growth_bytes": peak - base,
        "estimate_over_measured": round(estimates[0]["total"] / max(peak - base, 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--gpt2", action="store_true")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--d-sae", type=int, default=512)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-feature-nodes", type=int, default=None,
                        help="cap on feature nodes (most influential first); default: every active feature")
    parser.add_argument("--update-interval", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # run one length in this process
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args, args.one)))
        return
    results = []
    for length in args.lengths:
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--one", str(length)], stdout=subprocess.PIPE, text=True,
            check=False,
        )  # a failed length is reported, not raised; its stderr (the estimate before the run) passes through
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        results.append(json.loads(lines[-1]) if lines else {"length": length, "error": f"exit {out.returncode}"})
        print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({"config": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
