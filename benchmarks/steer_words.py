"""Does steering a feature make the model say the word it promotes? The demo report of issue 23.

On a workspace's SAE (default: the demo's ``runs/demo-mfr/sae_0``): take the features in order of firing
frequency, keep the first ``--features`` whose top promoted logit (``W_dec @ W_U``, the dashboards' logits
table, rank 0) is a word (a word-initial token: a leading space, then two or more letters), and for each one
continue ``--prompts`` fixed prompts (windows of the bundled corpus) by ``--tokens`` tokens, default and
steered with ``+c · d_i`` at every position, from the same seed (coupled draws). A feature counts when more
steered continuations contain the word (case-insensitive, whole word) than default ones. The coefficient is
a multiple of the feature's own largest stored activation (``--scales``), fixed before looking at results.

    python benchmarks/steer_words.py --workspace DEMO_WORKSPACE   # JSON: the share per scale, and per feature
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch


def word_of(token: str) -> str | None:
    """The word a token starts, or None: a leading space, then letters only, two or more."""
    return token[1:] if token.startswith(" ") and len(token) > 2 and token[1:].isalpha() else None


def fixed_prompts(model, n: int, length: int, seed: int) -> torch.Tensor:
    """``n`` prompts of ``length`` tokens (BOS first), windows of the bundled corpus in a seeded order."""
    from interp.models.data import token_windows

    windows = token_windows("demo", model.tokenizer, length, seed=seed, max_windows=n)
    return torch.stack(list(windows))


def contains(texts: list[str], word: str) -> int:
    pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
    return sum(bool(pattern.search(text)) for text in texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--sae", default="demo-mfr/sae_0", help="<run_id>/sae_<i> inside the workspace")
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--scales", default="1,2,4", help="coefficients as multiples of the feature's max activation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from interp.features.dictionary import load_dictionary
    from interp.features.interventions import sample, steer
    from interp.features.probe import recorded_model_spec
    from interp.models.loading import load_model
    from interp.store.analysis_folder import AnalysisFolder

    sae_folder = args.workspace / "runs" / args.sae
    folder = AnalysisFolder(args.workspace / "analyses" / args.sae)
    model = load_model(recorded_model_spec(sae_folder, args.workspace))
    dictionary = load_dictionary(sae_folder)
    features = folder.read_table("features").sort_values(["frequency", "feature"], ascending=[False, True])
    top = folder.read_table("logits").query("sign == 'positive' and rank == 0").set_index("feature")
    chosen = [(int(f), word_of(top.token[f]), float(m)) for f, m in zip(features.feature, features.max_activation)
              if f in top.index and word_of(top.token[f])][:args.features]
    prompts = fixed_prompts(model, args.prompts, args.prompt_length, args.seed)
    decode = model.tokenizer.decode
    start = time.perf_counter()
    default, _ = sample(model, prompts, [[]], args.tokens, temperature=1.0, seed=args.seed)
    default_texts = [decode(row) for row in default.tolist()]
    scales = [float(s) for s in args.scales.split(",")]
    rows = []
    for feature, word, max_act in chosen:
        row = {"feature": feature, "word": word, "max_activation": max_act,
               "default": contains(default_texts, word)}
        for scale in scales:
            edit = steer(dictionary, dictionary.hook_name, feature, scale * max_act)
            new, _ = sample(model, prompts, [[edit]], args.tokens, temperature=1.0, seed=args.seed)
            row[f"steered_x{scale:g}"] = contains([decode(r) for r in new.tolist()], word)
        rows.append(row)
    summary = {f"x{s:g}": {"share_more_often": sum(r[f"steered_x{s:g}"] > r["default"] for r in rows) / len(rows),
                           "mean_steered_rate": sum(r[f"steered_x{s:g}"] for r in rows) / len(rows) / args.prompts}
               for s in scales}
    print(json.dumps({"sae": args.sae, "n_features": len(rows), "n_prompts": args.prompts, "tokens": args.tokens,
                      "mean_default_rate": sum(r["default"] for r in rows) / len(rows) / args.prompts,
                      "by_scale": summary, "seconds": round(time.perf_counter() - start, 1), "features": rows},
                     indent=1))


if __name__ == "__main__":
    main()
