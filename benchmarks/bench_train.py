"""Training throughput: our trainer against SAELens' own ``SAETrainer`` on the same activations and
config (ReLU-L1 and TopK), and K-member ensembles against K times one SAE. Runs are interleaved
(ours and the peer alternate, in alternating order) and repeated; the JSON holds every repeat and the
medians, because the machine may be shared.

Timed regions (like for like):
- ``*_step_seconds``: ours = ``Run.train_seconds`` (per step: fetch the batch from our shuffling store, loss,
  backward, clipping, Adam, decoder renorm, dead counters); SAELens = the sum of ``SAETrainer._train_step``
  (loss, backward, clipping, Adam, scheduler, dead counters) plus its batch fetch.
- ``*_total_seconds``: ours = the whole ``train_saes`` call (run folder, store and stats sample set-up,
  a final checkpoint; no evaluation); SAELens = ``SAETrainer.fit()`` (its norm estimate, steps, final save).
Both use no input normalisation and ``b_dec`` at zero (SAELens' defaults), so neither side pays a
geometric median.

    python benchmarks/bench_train.py --steps 100 --d-in 128 --d-sae 2048 --batch 2048 --k 32 --repeats 3
    python benchmarks/bench_train.py --gpt2 --steps 2 --repeats 1      # real width, peak memory per side
    python benchmarks/bench_train.py --gpt2 --archs relu --code-density 0.0026 --steps 2 --repeats 3

``--code-density D`` (ReLU-L1 only): both sides start from their own random initialisation with ``b_enc``
lowered by the ``1 - D`` quantile of the first batch's pre-activations, so a fraction D of the codes is active,
as in a trained SAE (L0 = D x d_sae; at 24,576 latents D = 0.0026 is L0 64) rather than the ~50 % of an
initialisation. The step time of SAELens' dense step does not depend on D; ours switches to sparse codes below
``sparse_relu.SPARSE_BELOW``. The code density each side ends with is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch


def activations(n_rows: int, d_in: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(4 * d_in, d_in, generator=g)
    codes = torch.rand(n_rows, 4 * d_in, generator=g) * (torch.rand(n_rows, 4 * d_in, generator=g) < 0.02)
    return codes @ features


SPARSITY = 1.0  # L1 coefficient of relu / gated, both sides


@torch.no_grad()
def lower_b_enc_to_density(b_enc: torch.Tensor, pre: torch.Tensor, density: float) -> None:
    """Shift ``b_enc`` (in place) by the ``1 - density`` quantile of ``pre`` (a batch's pre-activations)."""
    b_enc -= torch.quantile(pre.flatten().float(), 1.0 - density)


def code_density(pre: torch.Tensor) -> float:
    return float((pre > 0).float().mean())


def our_sae_at_density(density: float, x: torch.Tensor):
    """A ``build_sae`` that returns the ensemble with ``b_enc`` lowered to ``density`` on ``x`` (b_dec is 0)."""
    from sae_training.architectures import build_sae

    def build(*args, **kwargs):
        sae = build_sae(*args, **kwargs)
        for m in range(sae.n_members):
            lower_b_enc_to_density(sae.b_enc[m], x @ sae.W_enc[m] + sae.b_enc[m], density)
        return sae
    return build


def matryoshka_widths(d_sae: int) -> list[int]:
    return [d_sae // 4, d_sae // 2, d_sae]


def our_options(arch: str, k: int, d_sae: int) -> dict:
    return {"relu": {"l1_coefficient": SPARSITY}, "gated": {"l1_coefficient": SPARSITY},
            "matryoshka": {"k": k, "widths": tuple(matryoshka_widths(d_sae)[:-1])}}.get(arch, {"k": k})


def ours(x: torch.Tensor, arch: str, args, n_members: int = 1, steps: int | None = None, keep: bool = False) -> dict:
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    steps = steps or args.steps
    config = TrainConfig(architecture=arch, options=our_options(arch, args.k, args.d_sae), d_sae=args.d_sae,
                         n_members=n_members, n_tokens=steps * args.batch, batch_size=args.batch,
                         lr=getattr(args, "lr", 3e-4), normalize_activations="none", b_dec_init="zeros",
                         log_every=10**9, checkpoint_every=10**9, buffer_tokens=8 * args.batch)
    density = getattr(args, "code_density", None)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if density is not None:
            import sae_training.trainer as trainer

            stack.enter_context(mock.patch.object(trainer, "build_sae", our_sae_at_density(density, x[:512])))
        start = time.perf_counter()
        run = train_saes(config, f"{tmp}/run", activations=x, progress=False, evaluate=False)
        out = {"step_seconds": run.train_seconds, "total_seconds": time.perf_counter() - start}
        if density is not None:
            out["end_code_density"] = code_density(run.sae.pre_acts(x[:512]).detach())
        return {**out, "run": run} if keep else out



def saelens_sae(arch: str, d_in: int, d_sae: int, k: int):
    """SAELens' own training SAE of the same architecture."""
    from sae_lens.saes.gated_sae import GatedTrainingSAE, GatedTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    if arch == "relu":
        return StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=SPARSITY))
    if arch == "gated":
        return GatedTrainingSAE(GatedTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=SPARSITY))
    if arch == "matryoshka":
        return MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=d_in, d_sae=d_sae, k=k, matryoshka_widths=matryoshka_widths(d_sae)))
    return TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k))


def saelens(x: torch.Tensor, arch: str, args, keep: bool = False) -> dict:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = saelens_sae(arch, x.shape[1], args.d_sae, args.k)
    density = getattr(args, "code_density", None)
    if density is not None:
        with torch.no_grad():
            lower_b_enc_to_density(sae.b_enc, x[:512] @ sae.W_enc + sae.b_enc, density)
    timed = {"seconds": 0.0}

    def batches():
        for i in range(10**9):
            tic = time.perf_counter()
            batch = x[(i * args.batch) % (len(x) - args.batch):][:args.batch]
            timed["seconds"] += time.perf_counter() - tic
            yield batch

    cfg = SAETrainerConfig(total_training_samples=args.steps * args.batch, train_batch_size_samples=args.batch,
                           n_batches_for_norm_estimate=1, lr=getattr(args, "lr", 3e-4), lr_end=3e-5,
                           checkpoint_path=None, save_final_checkpoint=False)
    trainer = SAETrainer(cfg, sae, batches())
    train_step = trainer._train_step

    def timed_step(*a, **kw):
        tic = time.perf_counter()
        out = train_step(*a, **kw)
        timed["seconds"] += time.perf_counter() - tic
        return out

    trainer._train_step = timed_step
    start = time.perf_counter()
    trainer.fit()
    out = {"step_seconds": timed["seconds"], "total_seconds": time.perf_counter() - start}
    if density is not None:
        with torch.no_grad():
            out["end_code_density"] = code_density(x[:512] @ sae.W_enc + sae.b_enc)
    return {**out, "sae": sae} if keep else out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _isolated(side: str, arch: str, args_dict: dict, queue) -> None:
    """One side in a fresh process: its data, its run, and its peak resident memory above the start."""
    import resource

    args = argparse.Namespace(**args_dict)
    torch.set_num_threads(args.threads)
    x = activations(max(args.steps * args.batch, 4 * args.batch), args.d_in)
    import sae_lens.training.sae_trainer  # noqa: F401 - imports before the baseline, on both sides

    import sae_training.trainer  # noqa: F401

    before = rss_mb()
    out = (ours if side == "ours" else saelens)(x, arch, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({**out, "peak_rss_mb": peak, "peak_above_start_mb": peak - before})


def isolated(side: str, x, arch: str, args) -> dict:
    """``ours`` / ``saelens`` in a spawned process, so that each side's peak memory is its own."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_isolated, args=(side, arch, vars(args), queue))
    process.start()
    out = queue.get()
    process.join()
    return out


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--ensemble-steps", type=int, default=None, help="steps of the ensemble runs (default --steps)")
    parser.add_argument("--d-in", type=int, default=128)
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--archs", default="relu,topk", help="comma-separated: relu, topk")
    parser.add_argument("--ensembles", default="1,2,4", help="comma-separated K values ('' skips; needs 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; >1 thrashes on a shared CPU")
    parser.add_argument("--isolate", action="store_true", help="each run in its own process: adds peak memory")
    parser.add_argument("--code-density", type=float, default=None,
                        help="relu only: start both sides with this fraction of codes active (a trained SAE's)")
    parser.add_argument("--gpt2", action="store_true", help="the GPT-2-small-sized case: d_in 768, d_sae 24,576, "
                        "k 32, batch 4,096, TopK / ReLU-L1 / Matryoshka / Gated, isolated (set --steps)")
    args = parser.parse_args()
    if args.gpt2:
        args.d_in, args.d_sae, args.k, args.batch, args.isolate = 768, 24_576, 32, 4096, True
        args.archs = args.archs if args.archs != "relu,topk" else "topk,relu,matryoshka,gated"
        args.ensembles = ""
    if args.code_density is not None and not 0 < args.code_density < 1:
        parser.error(f"--code-density is a fraction of the codes, between 0 and 1 (exclusive), not {args.code_density}")
    if args.code_density is not None and set(args.archs.split(",")) != {"relu"}:
        parser.error("--code-density applies to ReLU-L1 only: pass --archs relu")
    if args.isolate:
        def run_ours(x, a, r):
            return isolated("ours", x, a, r)

        def run_saelens(x, a, r):
            return isolated("saelens", x, a, r)
    else:
        run_ours, run_saelens = ours, saelens
    torch.set_num_threads(args.threads)
    x = None if args.isolate else activations(max(args.steps * args.batch, 16 * args.batch), args.d_in)
    tokens = args.steps * args.batch
    ensemble_steps = args.ensemble_steps or args.steps
    if not args.isolate:
        ours(x, "topk", args, steps=2)  # warm-up: imports and first-call allocations
        saelens(x[: 4 * args.batch], "topk", argparse.Namespace(**{**vars(args), "steps": 2}))
    archs = [a for a in args.archs.split(",") if a]
    ensembles = [int(n) for n in args.ensembles.split(",") if n]
    raw = {f"{side}_{arch}": [] for side in ("ours", "saelens") for arch in archs}
    raw.update({f"ensemble_K={n}": [] for n in ensembles})
    for repeat in range(args.repeats):
        for arch in archs:
            order = [("ours", run_ours), ("saelens", run_saelens)]
            for side, fn in order if repeat % 2 == 0 else order[::-1]:
                raw[f"{side}_{arch}"].append(fn(x, arch, args))
        for n in ensembles if repeat % 2 == 0 else ensembles[::-1]:
            raw[f"ensemble_K={n}"].append(ours(x, "topk", args, n, steps=ensemble_steps))
    result = {
        "config": vars(args),
        "timed_regions": __doc__.split("Timed regions (like for like):")[1].split("\n\n")[0],
        "vs_saelens": {},
        "ensemble": {},
        "raw": raw,
    }
    for arch in archs:
        mine, peer = raw[f"ours_{arch}"], raw[f"saelens_{arch}"]
        result["vs_saelens"][arch] = {
            "ours_tokens_per_s": tokens / median_of(mine, "step_seconds"),
            "saelens_tokens_per_s": tokens / median_of(peer, "step_seconds"),
            "speedup_steps": median_of(peer, "step_seconds") / median_of(mine, "step_seconds"),
            "speedup_total": median_of(peer, "total_seconds") / median_of(mine, "total_seconds"),
            "speedup_steps_per_repeat": [p["step_seconds"] / m["step_seconds"] for m, p in zip(mine, peer)],
        }
        if args.code_density is not None:
            result["vs_saelens"][arch].update(
                {
                    f"{side}_end_code_density": median_of(runs, "end_code_density")
                    for side, runs in (("ours", mine), ("saelens", peer))
                }
            )
        if args.isolate:
            result["vs_saelens"][arch].update(
                {
                    f"{side}_peak_above_start_mb": median_of(runs, "peak_above_start_mb")
                    for side, runs in (("ours", mine), ("saelens", peer))
                }
            )
    single = median_of(raw["ensemble_K=1"], "step_seconds") if ensembles else 0.0
    for n in ensembles:
        seconds = median_of(raw[f"ensemble_K={n}"], "step_seconds")
        result["ensemble"][f"K={n}"] = {
            "step_seconds": seconds,
            "K_times_one_seconds": n * single,
            "ratio_to_K_times_one": seconds / (n * single),
        }
    for runs in raw.values():
        for r in runs:
            r.pop("run", None), r.pop("sae", None)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
