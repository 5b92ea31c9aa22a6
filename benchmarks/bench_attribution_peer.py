"""Our ``attribute`` against circuit-tracer's on the same random model, transcoders and tokens, each in a
subprocess of its own: the seconds ``attribute`` takes, the growth of the process's peak resident memory over it,
and whether the two graphs agree (the same chosen features, the adjacency to 1e-4 of its largest entry).

circuit-tracer pins transformers <= 4.57, so it runs from its own virtual environment: ``--peer-python`` (or
``CIRCUIT_TRACER_PYTHON``) is that venv's python (``pip install torch==2.13.0 circuit-tracer`` there). Its side is
``tests/interp/circuit_tracer_peer.py``, the script the peer tests use.

    PYTHONPATH=$PWD python benchmarks/bench_attribution_peer.py --layers 12 --d-model 768 --d-sae 24576 \\
        --length 64 --max-feature-nodes 2048

The model has the demo tokenizer's vocabulary (4,096; circuit-tracer needs a tokenizer with the model) and
GPT-2-small's other sizes by default; the transcoders are ReLU (circuit-tracer 0.5.0's per-layer loader has no
TopK) with an encoder bias that leaves ~30 features active per position.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "tests" / "interp" / "circuit_tracer_peer.py"
INPUT_HOOK = "ln2.hook_normalized"


def model_config(args: argparse.Namespace) -> dict:
    return {"n_layers": args.layers, "d_model": args.d_model, "n_heads": args.d_model // 64, "d_head": 64,
            "d_mlp": 4 * args.d_model, "d_vocab": 4096, "n_ctx": max(args.length, 8), "act_fn": "gelu",
            "normalization_type": "LN", "positional_embedding_type": "standard", "model_name": "bench-peer",
            "tokenizer_name": None, "default_prepend_bos": True}


def build(args: argparse.Namespace, work: Path) -> tuple[Path, list[Path], Path]:
    """The model folder (config, weights, the demo tokenizer), per-layer transcoder files and the tokens."""
    import torch
    from safetensors.torch import save_file

    from interp.features.transcoder import Transcoder
    from interp.models.loading import DEMO_CONFIG, DEMO_WEIGHTS, demo_tokenizer, random_model

    torch.manual_seed(0)
    cfg = model_config(args)
    model = random_model(cfg, seed=0)
    folder = work / "model"
    folder.mkdir()
    (folder / DEMO_CONFIG.name).write_text(json.dumps(cfg))  # a HookedTransformerConfig, as the peer script reads
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith(("mask", "IGNORE"))},
              str(folder / "model.safetensors"))
    for path in DEMO_WEIGHTS.glob("tokenizer*"):  # the demo tokenizer's files, as a Hugging Face folder holds them
        shutil.copy(path, folder / path.name)
    d, g = args.d_model, torch.Generator().manual_seed(1)
    paths = []
    for layer in range(args.layers):
        tc = Transcoder(torch.randn(d, args.d_sae, generator=g) / d**0.5, torch.full((args.d_sae,), args.bias),
                        torch.randn(args.d_sae, d, generator=g) / args.d_sae**0.5, torch.zeros(d), "relu")
        paths.append(work / f"layer_{layer}.safetensors")
        save_file(tc.circuit_tracer_tensors(), str(paths[-1]))
    rest = torch.randint(5, cfg["d_vocab"], (args.length - 1,), generator=g).tolist()
    tokens = [int(demo_tokenizer().bos_token_id)] + rest
    (work / "tokens.json").write_text(json.dumps(tokens))
    return folder, paths, work / "tokens.json"


def ours(args: argparse.Namespace, work: Path) -> dict:
    """Our side, in this (sub)process: load what ``build`` wrote, attribute, write the graph's tensors."""
    import torch
    from safetensors.torch import load_file, save_file

    from interp.circuits.attribution import attribute
    from interp.features.transcoder import Transcoder
    from interp.models.loading import DEMO_CONFIG, random_model

    cfg = json.loads((work / "model" / DEMO_CONFIG.name).read_text())
    model = random_model(cfg, seed=0)  # the weights ``build`` saved for circuit-tracer, rebuilt from the seed
    saved = load_file(str(work / "model" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items() if k in saved), "weights differ"
    transcoders = []
    for layer in range(cfg["n_layers"]):
        t = load_file(str(work / f"layer_{layer}.safetensors"))
        transcoders.append(Transcoder(t["W_enc"].T.contiguous(), t["b_enc"], t["W_dec"], t["b_dec"], "relu",
                                      hook_in=f"blocks.{layer}.{INPUT_HOOK}", hook_out=f"blocks.{layer}.hook_mlp_out"))
    tokens = json.loads((work / "tokens.json").read_text())
    base, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, time.perf_counter()
    graph = attribute(model, transcoders, tokens, batch_size=args.batch_size, max_feature_nodes=args.max_feature_nodes,
                      update_interval=4)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    save_file({"adjacency": graph.adjacency.contiguous(), "active_features": graph.active_features.contiguous()},
              str(work / "ours.safetensors"))
    return {"attribute_seconds": round(seconds, 2), "peak_growth_bytes": peak, "n_active_features":
            graph.n_active_features, "n_features": graph.n_features, "n_nodes": graph.n_nodes}


def agreement(work: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(work / "ours.safetensors")), load_file(str(work / "peer.safetensors"))
    chosen = b["active_features"][b["selected_features"]]
    same_features = a["active_features"].shape == chosen.shape and bool(torch.equal(a["active_features"], chosen))
    out = {"same_features": same_features}
    if same_features:
        scale = float(a["adjacency"].abs().max())
        out["max_adjacency_difference_over_largest"] = float((a["adjacency"] - b["adjacency"]).abs().max()) / scale
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--d-sae", type=int, default=24576)
    parser.add_argument("--bias", type=float, default=-3.0, help="encoder bias (sets how many features fire)")
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--max-feature-nodes", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--peer-python", default=os.environ.get("CIRCUIT_TRACER_PYTHON"))
    parser.add_argument("--ours-in", help=argparse.SUPPRESS)  # run our side on a built folder, in this process
    args = parser.parse_args()
    if args.ours_in:
        print(json.dumps(ours(args, Path(args.ours_in))))
        return
    if not args.peer_python:
        sys.exit("give --peer-python (or set CIRCUIT_TRACER_PYTHON) to a venv's python that has circuit-tracer")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder, paths, tokens = build(args, work)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PEER_MAX_FEATURE_NODES": str(args.max_feature_nodes), "PEER_BATCH_SIZE": str(args.batch_size)}
        mine = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--ours-in", str(work)], check=True,
                              stdout=subprocess.PIPE, text=True, env=env)
        ours_result = json.loads(mine.stdout.strip().splitlines()[-1])
        subprocess.run([args.peer_python, str(PEER), str(folder), str(work / "peer"), str(tokens), INPUT_HOOK,
                        *map(str, paths)], check=True, env=env)
        theirs = json.loads((work / "peer.json").read_text())
        result = {"config": {k: v for k, v in vars(args).items() if k not in ("peer_python", "ours_in")},
                  "ours": ours_result,
                  "circuit_tracer": {"attribute_seconds": round(theirs["attribute_seconds"], 2),
                                     "peak_growth_bytes": theirs["peak_growth_bytes"]},
                  "agreement": agreement(work)}
        result["time_ratio_theirs_over_ours"] = round(theirs["attribute_seconds"] / ours_result["attribute_seconds"], 2)
        result["memory_ratio_theirs_over_ours"] = round(theirs["peak_growth_bytes"]
                                                        / max(1, ours_result["peak_growth_bytes"]), 2)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
