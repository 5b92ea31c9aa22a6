"""Each architecture against SAELens' own implementation of it, trained on the same planted-feature data
in the same run: MMCS to the true features, recovered at cos > 0.9, FVU, L0 (each side in its inference
form: SAELens' ``save_inference_model`` + ``SAE.load_from_disk``, ours exported the same way) and tokens/s.

    python benchmarks/bench_architectures.py --archs topk,relu,matryoshka,gated --steps 600 --out arch.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("bench_train", HERE / "bench_train.py")
bench_train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_train)


@torch.no_grad()
def scores(encode, decode, W_dec: torch.Tensor, x: torch.Tensor, features: torch.Tensor) -> dict:
    from sae_training.metrics import ground_truth_similarity

    f = encode(x)
    x_hat = decode(f)
    fvu = float((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return {**ground_truth_similarity(W_dec, features), "fvu": fvu, "l0": float((f != 0).sum(-1).float().mean())}


def main() -> None:
    from sae_lens import SAE

    from sae_training.saelens_io import save_member
    from sae_training.synthetic import SyntheticData, generate

    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", default="topk,relu,matryoshka,gated")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--d-sae", type=int, default=128)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = SyntheticData(d=64, n_true=128, groups=4, active=8)
    x, features, _, _ = generate(data, args.steps * args.batch + 20_000, seed=args.seed)
    train, held_out = x[:-20_000], x[-20_000:]
    tokens = args.steps * args.batch
    result = {"config": {**vars(args), "out": str(args.out), "data": data.__dict__,
                         "sparsity_coefficient": bench_train.SPARSITY}, "rows": {}}
    for arch in args.archs.split(","):
        torch.manual_seed(args.seed)
        mine = bench_train.ours(train, arch, args, keep=True)
        torch.manual_seed(args.seed)
        peer = bench_train.saelens(train, arch, args, keep=True)
        with tempfile.TemporaryDirectory() as tmp:
            run = mine["run"]
            save_member(Path(tmp) / "ours", run.sae.eval(), 0, scale=run.scale, hook_name="synthetic")
            peer["sae"].save_inference_model(Path(tmp) / "peer")
            rows = {}
            for side, folder in (("ours", "ours"), ("saelens", "peer")):
                sae = SAE.load_from_disk(str(Path(tmp) / folder))
                rows[side] = scores(sae.encode, sae.decode, sae.W_dec, held_out, features.T)
                seconds = (mine if side == "ours" else peer)["step_seconds"]
                rows[side]["tokens_per_s"] = tokens / seconds
        result["rows"][arch] = rows
        print(json.dumps({arch: rows}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
