"""MFR at the paper's synthetic set-up (PAPERS.md §1.5-1.6), paired seeds, resumable.

Data: the MFR code's generator (d = 256, 512 true features, 12 groups of 42, 32 active in a group,
0.99^j preference, U(0,1) magnitudes), fresh points every step (``SyntheticStream``; per-point supports).
For each (SAE, k schedule, seed) the runs with and without MFR share data and initialisation (same seed),
so their difference is the effect of the penalty. Every finished run appends one line to
``<out>/results.jsonl``; finished runs are skipped, an interrupted one resumes from its checkpoint.

    # the subset run on 2 shared CPU cores (README table):
    python benchmarks/mfr_paper.py --saes untied,tied --lambdas 0,1 --k-schedules constant --seeds 5 --steps 1000
    # the full grid of issue 13 (on a GPU):
    python benchmarks/mfr_paper.py --saes untied,tied --lambdas 0,1,3 --k-schedules constant,multiply \\
        --seeds 5 --steps 1000 --device cuda
    python benchmarks/mfr_paper.py --report          # the table from results.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

SAES = {  # our name -> (architecture, fixed options)
    "untied": ("topk", {"aux_k_coefficient": 0.0}),  # SAELens-style TopK (b_dec, ReLU, unit decoder rows)
    "tied": ("mfr_tied", {"reinit": "off"}),  # the MFR code's tied TopK SAE (its HEAD: no re-initialisation)
}


def config_for(sae: str, k_schedule: str, lam: float, seed: int, args):
    from sae_training.config import TrainConfig

    architecture, options = SAES[sae]
    return TrainConfig(architecture=architecture, options={**options, "k": 32, "k_schedule": k_schedule},
                       d_sae=512, n_members=2, mfr_coefficient=lam, mfr_warmup_steps=100,
                       n_tokens=args.steps * args.batch, batch_size=args.batch, lr=0.01, grad_clip=0.0,
                       mse_reduction="mean", normalize_activations="none", b_dec_init="zeros", seed=seed,
                       log_every=50, mmcs_log_every=50, checkpoint_every=100, eval_batches=1, eval_ce_batches=0,
                       device=args.device, autocast=False)


@torch.no_grad()
def evaluate(run, stream, seed: int) -> list[dict]:
    """Per member: MMCS to the true features (Hungarian and max-cosine), recovered at cos > 0.9, FVU, L0 on
    20,000 fresh held-out points."""
    from sae_training.metrics import ground_truth_similarity
    from sae_training.synthetic import sample_points

    x = sample_points(stream.spec, stream.features, 20_000, torch.Generator().manual_seed(10**7 + seed))
    sae = run.sae.eval().cpu()
    f = sae.encode(x * run.scale)
    x_hat = sae.decode(f) / run.scale
    variance = (x - x.mean(0)).pow(2).sum()
    out = []
    for i in range(sae.n_members):
        truth = ground_truth_similarity(run.member(i).W_dec, stream.features.T)
        out.append({**truth, "fvu": float((x_hat[i] - x).pow(2).sum() / variance),
                    "l0": float((f[i] != 0).sum(-1).float().mean())})
    return out


def run_one(key: dict, args, out: Path) -> dict:
    from interp.store.run_folder import RunFolder
    from sae_training.synthetic import PAPER_DATA, SyntheticStream
    from sae_training.trainer import train_saes

    config = config_for(key["sae"], key["k_schedule"], key["lambda"], key["seed"], args)
    stream = SyntheticStream(PAPER_DATA, data_seed=key["seed"])
    run_dir = out / "runs" / "-".join(str(v) for v in key.values())
    tic = time.perf_counter()
    run = train_saes(config, run_dir, resume=RunFolder(run_dir).exists(), activations=stream,
                     progress=False, evaluate=False)
    if run.step < config.n_steps:  # stopped (SIGTERM): checkpointed, the next call resumes it
        raise SystemExit(f"stopped at step {run.step} of {config.n_steps}; rerun to continue")
    return {**key, "steps": args.steps, "batch": args.batch, "seconds": time.perf_counter() - tic,
            "members": evaluate(run, stream, key["seed"])}


def done_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {json.dumps({k: r[k] for k in ("sae", "k_schedule", "lambda", "seed")}, sort_keys=True)
            for r in map(json.loads, path.read_text().splitlines()) if r.get("steps")}


def report(path: Path) -> str:
    """Markdown: mean ± std per setting (members pooled) and per-seed MFR − baseline of the member mean."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    metrics = ("mmcs_true", "mmcs_true_max", "recovered_fraction", "fvu", "l0")
    settings: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        mean = {m: statistics.fmean(member[m] for member in r["members"]) for m in metrics}
        settings.setdefault((r["sae"], r["k_schedule"], r["lambda"]), {})[r["seed"]] = mean
    lines = ["| SAE | k | λ | seeds | MMCS (Hungarian) | MMCS (max-cos) | recovered (cos>0.9) | FVU | L0 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (sae, sched, lam), seeds in sorted(settings.items()):
        cells = []
        for m in metrics:
            values = [s[m] for s in seeds.values()]
            std = statistics.pstdev(values) if len(values) > 1 else 0.0
            cells.append(
                f"{statistics.fmean(values):.4f} ± {std:.4f}" if m != "l0" else f"{statistics.fmean(values):.1f}"
            )
        k = "32/32" if sched == "constant" else "32/64"
        lines.append(f"| {sae} | {k} | {lam:g} | {len(seeds)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| SAE | k | λ | paired seeds | Δ MMCS (Hungarian) per seed | Δ recovered | Δ FVU | MFR wins (MMCS) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (sae, sched, lam), seeds in sorted(settings.items()):
        base = settings.get((sae, sched, 0.0), {})
        paired = sorted(set(seeds) & set(base))
        if lam == 0 or not paired:
            continue
        delta = {m: [seeds[s][m] - base[s][m] for s in paired] for m in metrics}
        wins = sum(d > 0 for d in delta["mmcs_true"])
        k = "32/32" if sched == "constant" else "32/64"
        lines.append(
            f"| {sae} | {k} | {lam:g} | {len(paired)} | {', '.join(f'{d:+.4f}' for d in delta['mmcs_true'])}"
            f" (mean {statistics.fmean(delta['mmcs_true']):+.4f}) | "
            f"{statistics.fmean(delta['recovered_fraction']):+.4f}"
            f" | {statistics.fmean(delta['fvu']):+.4f} | {wins}/{len(paired)} |"
        )
    lines += [
        "",
        "Per member (k_i = 32·(i+1) with the 32/64 schedule): MMCS to truth and recovered, and MFR − baseline "
        "on paired seeds.",
        "",
        "| SAE | k | λ | member | seeds | MMCS (Hungarian) | recovered | Δ MMCS per seed | MFR wins |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    per_member: dict[tuple, dict[int, list[dict]]] = {}
    for r in rows:
        per_member.setdefault((r["sae"], r["k_schedule"], r["lambda"]), {})[r["seed"]] = r["members"]
    for (sae, sched, lam), seeds in sorted(per_member.items()):
        base = per_member.get((sae, sched, 0.0), {})
        paired = sorted(set(seeds) & set(base)) if lam != 0 else []
        for i in range(len(next(iter(seeds.values())))):
            mmcs = [seeds[s][i]["mmcs_true"] for s in seeds]
            recovered = [seeds[s][i]["recovered_fraction"] for s in seeds]
            delta = [seeds[s][i]["mmcs_true"] - base[s][i]["mmcs_true"] for s in paired]
            k = "32/32" if sched == "constant" else "32/64"
            l0 = seeds[next(iter(seeds))][i]["l0"]
            cells = [
                sae,
                k,
                f"{lam:g}",
                f"{i} (L0 {l0:.0f})",
                str(len(seeds)),
                f"{statistics.fmean(mmcs):.4f}",
                f"{statistics.fmean(recovered):.4f}",
                "",
                "",
            ]
            if delta:
                cells[7] = ", ".join(f"{d:+.4f}" for d in delta) + f" (mean {statistics.fmean(delta):+.4f})"
                cells[8] = f"{sum(d > 0 for d in delta)}/{len(delta)}"
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saes", default="untied,tied")
    parser.add_argument("--lambdas", default="0,1")
    parser.add_argument("--k-schedules", default="constant")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-workspace-mfr"))
    parser.add_argument("--report", action="store_true", help="print the table from results.jsonl and exit")
    args = parser.parse_args()
    results = args.out / "results.jsonl"
    if args.report:
        print(report(results))
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    done = done_keys(results)
    # seed-major order: every finished seed adds a complete pair to the table
    for seed in range(args.seeds):
        for sae in args.saes.split(","):
            for sched in args.k_schedules.split(","):
                for lam in (float(v) for v in args.lambdas.split(",")):
                    key = {"sae": sae, "k_schedule": sched, "lambda": lam, "seed": seed}
                    if json.dumps(key, sort_keys=True) in done:
                        continue
                    result = run_one(key, args, args.out)
                    with open(results, "a") as handle:
                        handle.write(json.dumps(result) + "\n")
                    print(json.dumps({k: result[k] for k in (*key, "seconds")}), flush=True)


if __name__ == "__main__":
    main()
