"""The evaluation suite at scale: time and peak memory of each metric on a GPT-2-small-shaped random model
(12 layers, d_model 768, 12 heads, d_mlp 3072; the bundled 4,096-token tokenizer) with a 24,576-latent TopK
pair read at ``blocks.0.hook_resid_post``. Each metric runs in a fresh process and reports its own peak RSS
(``VmHWM``: ``ru_maxrss`` would carry over the parent's peak, which built the SAEs);
core runs at several token counts to show its memory is flat in tokens (it streams the cache).

    python benchmarks/bench_evals.py --threads 1 > evals.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOK = "blocks.0.hook_resid_post"


def random_model(seed: int = 0):
    """GPT-2 small's shape with random weights and the bundled tokenizer (no download)."""
    from interp.models.loading import demo_tokenizer, random_model

    return random_model(dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=4096, n_ctx=128,
                             act_fn="gelu_new", normalization_type="LN"), demo_tokenizer(), seed=seed, device="cpu")


def build(workspace: Path, d_sae: int, k: int, cache_tokens: int) -> Path:
    from interp.cache.writer import CacheConfig, build_cache
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    model = random_model()
    cache = build_cache(CacheConfig(model="demo", hooks=(HOOK,), n_tokens=cache_tokens, context_size=64),
                        root=workspace / "cached_activations", cache_id="bench", device="cpu", progress=False,
                        model=model)
    config = TrainConfig(cache=str(cache), hook=HOOK, architecture="topk", d_sae=d_sae, k=k, n_members=2,
                         n_tokens=2 * 1024, batch_size=1024, lr=1e-4, log_every=1, checkpoint_every=10,
                         eval_batches=1, eval_ce_batches=0, buffer_tokens=4096)
    train_saes(config, workspace / "runs" / "bench", progress=False, model=model)
    return workspace / "runs" / "bench"


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import torch; torch.set_num_threads({threads})
from pathlib import Path
from bench_evals import random_model
from interp.evals.absorption import AbsorptionConfig
from interp.pipeline.evals import EvalConfig, evaluate_saes
from interp.store.analysis_folder import AnalysisFolder
model = random_model()
config = EvalConfig(core_tokens={tokens}, ce_batches=2, ce_batch_size=4, probe_train=100, probe_test=50,
                    probe_context=32, principled_prompts=32, absorption=AbsorptionConfig(max_words=500))
tic = time.perf_counter()
evaluate_saes([Path({run!r})], Path({out!r}), ({metric!r},), config, progress=lambda _: None, model=model)
usage = resource.getrusage(resource.RUSAGE_SELF)
# this process's own peak: VmHWM of its memory map (ru_maxrss keeps the parent's peak across fork and exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
folder = AnalysisFolder.of_sae(Path({out!r}), Path({run!r}) / "sae_0")
read = (folder.read_eval("core")["eval_result_metrics"]["token_stats"]["total_tokens_eval_sparsity_variance"]
        if {metric!r} == "core" else None)
print(json.dumps({{"wall_s": time.perf_counter() - tic, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": hwm / 1024, "tokens_read": read, "written": folder.evals()}}))
"""


def measure(run: Path, out: Path, metric: str, tokens: int, threads: int) -> dict:
    code = CHILD.format(root=str(ROOT), bench=str(ROOT / "benchmarks"), threads=threads, tokens=tokens,
                        run=str(run), out=str(out), metric=metric)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"metric": metric, "error": done.stderr.strip().splitlines()[-1:]}
    return {"metric": metric, "tokens": tokens, **json.loads(done.stdout.strip().splitlines()[-1]),
            "load_avg_1min": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-sae", type=int, default=24_576)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--core-tokens", default="8192,32768", help="token counts for core (memory flat in tokens)")
    parser.add_argument("--metrics", default="sparse_probing,absorption,principled,stability")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-core", action="store_true",
                        help="skip the core runs (stability then finds the live latents over the first count)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    counts = [int(t) for t in args.core_tokens.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        run = build(Path(tmp), args.d_sae, args.k, max(counts) + max(counts) // 16)  # room for the BOS rows dropped
        print(json.dumps({"setup_s": time.perf_counter() - tic, "d_sae": args.d_sae, "d_in": 768}), flush=True)
        for tokens in [] if args.no_core else counts:
            print(json.dumps(measure(run, Path(tmp) / f"analyses_{tokens}", "core", tokens, args.threads)), flush=True)
        for metric in args.metrics.split(","):
            print(json.dumps(measure(run, Path(tmp) / f"analyses_{counts[0]}", metric, counts[0], args.threads)),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
