"""Benchmark: caching a GPT-2-medium-shaped random checkpoint at float32 vs bfloat16 (tokens/s, peak memory).

The checkpoint is built with transformers' ``GPT2Config`` (24 layers, d_model 1024, 16 heads, d_mlp 4096,
vocab 50257) and saved with ``save_pretrained``, so each run goes the way a user's does: ``load_model``
(transformers -> TransformerLens conversion, log-prob check) and ``build_cache`` at the chosen dtype.
Each dtype runs in its own process so its peak resident memory (CPU) or peak allocation (CUDA) is its own;
the memory estimate printed before loading is reported beside the measured peak.

    python benchmarks/bench_precision.py [--tokens 2048] [--hook blocks.11.hook_resid_post] [--device cpu]
                                         [--folder DIR  (reuse a checkpoint)]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DTYPES = ("float32", "bfloat16")


def build_checkpoint(folder: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp.models.loading import demo_tokenizer

    torch.manual_seed(0)
    config = GPT2Config(n_layer=24, n_embd=1024, n_head=16, n_positions=1024, vocab_size=50257)
    GPT2LMHeadModel(config).save_pretrained(folder)
    demo_tokenizer().save_pretrained(folder)  # ids < 4096: a subset of the 50257-token vocabulary


def one_run(folder: Path, dtype: str, tokens: int, hook: str, device: str) -> dict:
    """Load and cache once at ``dtype`` in this process; tokens/s of the cache and the process' peak memory."""
    from interp.cache.writer import CacheConfig, build_cache, cache_memory_estimate
    from interp.models.loading import load_model

    config = CacheConfig(model=str(folder), hooks=(hook,), n_tokens=tokens, context_size=128, batch_size=8,
                         shard_tokens=min(tokens, 65_536), dtype=dtype)
    estimate = cache_memory_estimate(config)
    start = time.perf_counter()
    model = load_model(str(folder), device=device, dtype=dtype)
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        build_cache(config, root=root, cache_id="bench", device=device, progress=False, model=model)
        cache_s = time.perf_counter() - start
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"dtype": dtype, "load_s": round(load_s, 2), "cache_s": round(cache_s, 2),
            "tokens_per_s": round(config.n_windows * config.context_size / cache_s, 1),
            "peak_memory_gib": round(peak / 2**30, 3), "estimate_gib": round(estimate.total / 2**30, 3),
            "estimate": estimate.describe()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hook", default="blocks.11.hook_resid_post")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", choices=DTYPES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help="Reuse a checkpoint built by an earlier run (default: build one)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.one:
        print(json.dumps(one_run(args.folder, args.one, args.tokens, args.hook, args.device)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp) / "gpt2-medium-random"
        if args.folder is None:
            build_checkpoint(folder)
        runs = []
        for dtype in DTYPES:
            out = subprocess.run([sys.executable, __file__, "--one", dtype, "--folder", str(folder), "--tokens",
                                  str(args.tokens), "--hook", args.hook, "--device", args.device],
                                 check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
    fp32, bf16 = runs
    print(json.dumps({
        "model": "GPT-2-medium-shaped random checkpoint (355M parameters)", "hook": args.hook,
        "tokens": args.tokens, "device": args.device, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "runs": runs,
        "bf16_over_fp32_tokens_per_s": round(bf16["tokens_per_s"] / fp32["tokens_per_s"], 2),
        "bf16_over_fp32_peak_memory": round(bf16["peak_memory_gib"] / fp32["peak_memory_gib"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
