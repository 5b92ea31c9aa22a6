"""Benchmark: activation caching against a plain forward pass and TransformerLens ``run_with_cache``.

For each model (the bundled demo model and a randomly initialised GPT-2-small-sized config) and
each hook set, measures tokens/s of
  (a) forward only: ``model(tokens)``, the whole model, nothing kept;
  (b) TransformerLens ``run_with_cache(tokens, names_filter=hooks)``, activations kept in memory;
  (c) ours: ``CacheWriter.run()``, tokenising, computing and writing verified shards to disk;
and prints JSON with the ratios c/a and c/b (targets on CPU: c/a >= 0.9, c/b >= 1.0).

    python benchmarks/bench_cache.py [--tokens-demo 65536] [--tokens-gpt2 8192]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from interp.cache.writer import CacheConfig, CacheWriter
from interp.models.data import batched_windows, token_windows
from interp.models.loading import demo_tokenizer, load_model, random_model

CONTEXT = 128
BATCH = 32


def gpt2_small_random():
    cfg = {"n_layers": 12, "d_model": 768, "n_heads": 12, "d_head": 64, "d_mlp": 3072, "d_vocab": 50257,
           "n_ctx": 1024, "act_fn": "gelu_new", "normalization_type": "LN"}
    return random_model(cfg, tokenizer=demo_tokenizer(), seed=0, device="cpu")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(model, name: str, hooks: tuple[str, ...], n_tokens: int) -> dict:
    n_windows = n_tokens // CONTEXT
    batches = list(batched_windows(token_windows("demo", model.tokenizer, CONTEXT, seed=0, max_windows=n_windows),
                                   BATCH))
    tokens = n_windows * CONTEXT
    hook_set = set(hooks)

    def forward_only():
        with torch.no_grad():
            for batch in batches:
                model(batch)

    def tl_run_with_cache():
        kept = []
        with torch.no_grad():
            for batch in batches:
                _, cache = model.run_with_cache(batch, names_filter=lambda hook: hook in hook_set)
                kept.append({hook: cache[hook].cpu() for hook in hooks})

    workdir = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    config = CacheConfig(model=name, data="demo", hooks=hooks, n_tokens=tokens, context_size=CONTEXT,
                         batch_size=BATCH, shard_tokens=16_384)

    def ours():
        CacheWriter(config, root=workdir, cache_id="bench", model=model).run(progress=False)

    forward_only()  # warm-up (allocator, kernels)
    results = {}
    for label, fn in (("forward_only", forward_only), ("tl_run_with_cache", tl_run_with_cache), ("ours", ours)):
        shutil.rmtree(workdir / "bench", ignore_errors=True)
        results[label] = tokens / timed(fn)
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "model": name, "hooks": list(hooks), "tokens": tokens,
        "tokens_per_s": {label: round(value, 1) for label, value in results.items()},
        "ratio_ours_vs_forward": round(results["ours"] / results["forward_only"], 3),
        "ratio_ours_vs_run_with_cache": round(results["ours"] / results["tl_run_with_cache"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens-demo", type=int, default=65_536)
    parser.add_argument("--tokens-gpt2", type=int, default=8_192)
    args = parser.parse_args()
    demo = load_model("demo", device="cpu")
    gpt2 = gpt2_small_random()
    runs = [
        measure(demo, "demo", ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"), args.tokens_demo),
        measure(gpt2, "gpt2-small-random", ("blocks.5.hook_resid_post",), args.tokens_gpt2),
        measure(gpt2, "gpt2-small-random", ("blocks.11.hook_resid_post", "blocks.11.hook_mlp_out"), args.tokens_gpt2),
    ]
    print(json.dumps({"benchmark": "cache", "device": "cpu", "threads": torch.get_num_threads(),
                      "machine": platform.machine(), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
