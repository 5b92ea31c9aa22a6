"""Feature dashboards: ours vs sae-dashboard (or a per-feature loop) on the same SAE and tokens, one run.

Both sides start from the same random 2-layer model (saved as safetensors), the same SAELens SAE
folder and the same token ids, and run the model themselves. Ours: ``feature_dashboards`` over a
live token stream + ``dashboard_tables`` (logit effects, neighbours, labels). The peer is
sae-dashboard's ``SaeVisRunner`` run in the Python given by ``--peer-python`` (a separate venv,
since sae-dashboard pins transformer-lens < 3); without one, a straightforward per-feature loop.

    python benchmarks/bench_features.py --features 512 --tokens 8192              # minutes on 2 cores
    python benchmarks/bench_features.py --features 16384 --tokens 1000000 --peer none  # the 16k x 1M figure
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

HOOK = "blocks.1.hook_resid_post"
MODEL = dict(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=4096, n_ctx=128,
             act_fn="gelu", normalization_type="LN")

PEER = """
import json, sys, time, torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformerConfig
from sae_lens import SAE, HookedSAETransformer
from sae_dashboard.sae_vis_data import SaeVisConfig
from sae_dashboard.sae_vis_runner import SaeVisRunner
root, batch = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]))
model = HookedSAETransformer(HookedTransformerConfig(**json.load(open(root + "/model.json")), device="cpu"))
model.load_state_dict(load_file(root + "/model.safetensors"), strict=False)  # parameters only
sae = SAE.load_from_disk(root + "/sae", device="cpu")
tokens = load_file(root + "/tokens.safetensors")["tokens"]
start = time.perf_counter()
config = SaeVisConfig(hook_point=%r, features=list(range(sae.cfg.d_sae)), minibatch_size_features=batch,
                      minibatch_size_tokens=64, device="cpu", verbose=False)
data = SaeVisRunner(config).run(encoder=sae, model=model, tokens=tokens)
print(json.dumps({"seconds": time.perf_counter() - start, "n_features": len(data.feature_data_dict)}))
""" % HOOK


def setup(root: Path, n_features: int, n_tokens: int, context: int, seed: int, density: float):
    """Random model, SAE and tokens on disk, the same bytes for both sides."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from interp.models.loading import random_model

    torch.manual_seed(seed)
    model = random_model(MODEL, seed=seed, device="cpu")
    (root / "model.json").write_text(json.dumps(MODEL))
    save_file({k: v.detach().contiguous() for k, v in model.named_parameters()}, str(root / "model.safetensors"))
    sae = StandardSAE(StandardSAEConfig(d_in=MODEL["d_model"], d_sae=n_features,
                                        metadata=SAEMetadata(hook_name=HOOK)))
    tokens = torch.randint(0, MODEL["d_vocab"], (max(1, n_tokens // context), context))
    tokens[:, 0] = 1
    with torch.no_grad():  # thresholds so that each feature fires on ~`density` of tokens, like a trained SAE
        _, cache = model.run_with_cache(tokens[:16], names_filter=HOOK, stop_at_layer=2)
        pre = (cache[HOOK][:, 1:].reshape(-1, MODEL["d_model"]) - sae.b_dec) @ sae.W_enc
        sae.b_enc.copy_(-torch.quantile(pre, 1 - density, dim=0))
    sae.save_model(str(root / "sae"))
    save_file({"tokens": tokens}, str(root / "tokens.safetensors"))
    return model, tokens


def live_chunks(model, tokens, batch: int = 32):
    from interp.cache.store import TokenChunk

    for start in range(0, len(tokens), batch):  # 32 x 128 = 4096 tokens a chunk
        t = tokens[start:start + batch]
        with torch.no_grad():
            _, cache = model.run_with_cache(t, names_filter=HOOK, stop_at_layer=2)
        b, ctx = t.shape
        yield TokenChunk(cache[HOOK].reshape(b * ctx, -1), t.reshape(-1),
                         torch.arange(start, start + b).repeat_interleave(ctx), torch.arange(ctx).repeat(b))


def ours(root: Path, model, tokens) -> dict:
    from interp.features.dashboards import DashboardConfig, dashboard_tables, feature_dashboards
    from interp.features.dictionary import load_dictionary

    dictionary = load_dictionary(root / "sae")
    start = time.perf_counter()
    data = feature_dashboards(dictionary, live_chunks(model, tokens), DashboardConfig(cooccurrence=None))
    tables = dashboard_tables(data, dictionary.W_dec.detach(), lambda t: str(t), W_U=model.W_U.detach())
    return {"seconds": time.perf_counter() - start, "n_features": len(tables["features"]),
            "max_act": data.act_max}


def per_feature(root: Path, model, tokens) -> dict:
    """The straightforward peer: activations once, then one feature at a time (stats, top-k, logits)."""
    from interp.features.dictionary import load_dictionary

    sae = load_dictionary(root / "sae").sae
    start = time.perf_counter()
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=HOOK, stop_at_layer=2)
        x = cache[HOOK].reshape(-1, MODEL["d_model"]) - sae.b_dec
        for f in range(sae.cfg.d_sae):
            acts = torch.relu(x @ sae.W_enc[:, f] + sae.b_enc[f])
            _ = (acts > 0).float().mean(), acts.max(), acts.topk(20), torch.histc(acts[acts > 0], 40)
            _ = (sae.W_dec[f] @ model.W_U).topk(10)
    return {"seconds": time.perf_counter() - start, "n_features": sae.cfg.d_sae}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--peer", choices=("sae-dashboard", "per-feature", "none"), default="sae-dashboard")
    parser.add_argument("--peer-python", default="/tmp/saedash_venv/bin/python",
                        help="Python with sae-dashboard installed (a separate venv: it pins transformer-lens<3)")
    parser.add_argument("--peer-feature-batch", type=int, default=1024)
    parser.add_argument("--density", type=float, default=0.01, help="Fraction of tokens each feature fires on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, tokens = setup(root, args.features, args.tokens, args.context, args.seed, args.density)
        mine = ours(root, model, tokens)
        result = {"features": args.features, "tokens": int(tokens.numel()), "density": args.density,
                  "threads": torch.get_num_threads(),
                  "ours_seconds": round(mine["seconds"], 2),
                  "ours_tokens_per_s": round(tokens.numel() / mine["seconds"]),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
        if args.peer == "sae-dashboard":
            if not Path(args.peer_python).exists():
                sys.exit(f"{args.peer_python} does not exist: create a venv with `pip install sae-dashboard` "
                         "(see interp/ANALYSES.md) or use --peer per-feature")
            out = subprocess.run([args.peer_python, "-c", PEER, tmp, str(min(args.peer_feature_batch, args.features)),
                                  str(torch.get_num_threads())], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"sae-dashboard failed:\n{out.stderr[-3000:]}")
            peer = json.loads(out.stdout.strip().splitlines()[-1])
        elif args.peer == "per-feature":
            peer = per_feature(root, model, tokens)
        else:
            peer = None
        if peer:
            result.update(peer=args.peer, peer_seconds=round(peer["seconds"], 2),
                          speedup=round(peer["seconds"] / mine["seconds"], 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
