"""Reproduce the bundled demo model: a BPE tokenizer and a 2-layer transformer on Shakespeare.

Run ``python -m interp.models.demo.train_demo_model`` (``--threads 1``, the default; runs are deterministic,
but the committed weights' phases 3 and 6 drew random-word names from an unordered vocabulary listing,
since sorted, and phase 8's run drew its asides before its templates, so a rerun gives a model of the same
kind, not the same bits; measured on a busy 2-core machine: phase 1 about 26 min, phase 2 about 22 min,
phase 3 about 20 min, phase 6 about 10 min, phase 7 about 20 min, phase 8 about 20 min, phase 9 about 29 min).

Phase 1 (2000 steps) is language modelling on the corpus with repeated random spans mixed in.
That alone did not form an induction head (its spans had a fixed length, and learned positions
let the model wait for a positional shortcut instead). Phase 2 (1500 steps) adds, to 8 corpus
windows per step, 48 short rows of BOS + random prefix + span + span over a 64-token alphabet,
with span length and prefix varied per row and the loss taken on the second copy only. The model
formed a previous-token head and induction heads, but for that alphabet only: on ordinary words
the second copy of a repeated span was predicted no better than the first.

Phase 3 (``general_phase.PHASE_3``, 1350 steps of a 4000-step schedule) trains on corpus windows
of every work but the held-out one, induction rows whose tokens are uniform over the vocabulary,
common words or a repeated slice of real text, and IOI rows. Induction became general (second- vs
first-copy loss ratio on span 40: 0.013 uniform ids, 0.009 common words, 0.23 a held-out passage)
at a cost in held-out language-modelling loss (4.31 -> 4.70 nats; a bigram model: 5.18). Phase 6 keeps
it general (0.015, 0.013, 0.18).

Phase 3's IOI rows tied each template to one name order (``ioi_prompts``' ``order="alternate"``),
and the model learned "this template: the first (or second) name": 100 % on those templates, chance
once the order is drawn at random. Phase 6 (1000 steps, ``general_phase.PHASE_6``) draws the order at
random: the model then forms an IOI mechanism (training names 100 %, held-out names on the training
templates 88 %), and held-out language-modelling loss recovers to 4.60. Held-out templates stay at
chance: the repeated name was found by its distance from the end.

Phases 7-9 (``general_phase.PHASE_7`` .. ``PHASE_9``) train on templates assembled from pieces with
random-word names (7), then with an aside of random common words after the repeated name (8), then
also with a random opener before the first names (9). Measured at 512 prompts per template: held-out
names on the training templates 99.6 %, training names on held-out templates 99.95 %, held-out names on
held-out templates 91.9 % (one template 75.6 %), on two final-test templates written before phase 9 and
scored once 94.9 and 98.6 %; induction ratios 0.002 / 0.002 / 0.10; held-out LM loss 4.53.

Experiments not in the weights (``--extra-phases``, run after the committed phases; measured when run
right after phase 3, before phase 6 existed): templates assembled from pieces (phase 4, ~60 % on held-out templates)
and the same
without random-word names (phase 5, ~70 % on held-out names, memorising the training names). ``general_phase.py``
records what each showed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from interp.models.data import iter_texts, pack_token_stream
from interp.models.demo.general_phase import COMMITTED_PHASES, EXTRA_PHASES, PHASE_3, train_general_phase
from interp.models.loading import demo_tokenizer
from interp.store.io import write_json, write_safetensors
from interp.store.names import DEMO_MODEL_NAME

WEIGHTS_DIR = Path(__file__).parent / "weights"
SPECIAL_TOKENS = ["<|bos|>", "<|endoftext|>", "<|pad|>"]

MODEL_CONFIG = dict(
    n_layers=2,
    d_model=128,
    n_heads=4,
    d_head=32,
    d_mlp=512,
    d_vocab=4096,
    n_ctx=128,
    act_fn="gelu",
    normalization_type="LN",
    positional_embedding_type="standard",
    model_name=DEMO_MODEL_NAME,
    tokenizer_name=None,
    default_prepend_bos=True,
)


def build_tokenizer(vocab_size: int, out_path: Path):
    """Train a byte-level BPE tokenizer on the bundled corpus with the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(iter_texts("demo"), trainer=trainer)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_path))
    save_hf_tokenizer(out_path)
    return tokenizer


def save_hf_tokenizer(tokenizer_json: Path) -> None:
    """Save the Hugging Face wrapper files beside ``tokenizer.json`` so ``AutoTokenizer`` loads it."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        bos_token=SPECIAL_TOKENS[0],
        eos_token=SPECIAL_TOKENS[1],
        pad_token=SPECIAL_TOKENS[2],
        add_bos_token=True,
        model_max_length=MODEL_CONFIG["n_ctx"],
    )
    wrapped.save_pretrained(str(tokenizer_json.parent))


def corpus_windows(tokenizer, context_size: int) -> torch.Tensor:
    """All corpus windows (the corpus is small: ~1.3M tokens) as ``[n, ctx]``."""
    bos = tokenizer.token_to_id("<|bos|>")
    token_lists = (tokenizer.encode(text).ids for text in iter_texts("demo"))
    return torch.stack(list(pack_token_stream(token_lists, context_size, bos)))


def repeated_random_batch(
    n: int, context_size: int, vocab: int, bos: int, n_special: int, generator: torch.Generator
) -> torch.Tensor:
    """``[n, ctx]`` rows of BOS + a random span + the same span again (induction data)."""
    half = (context_size - 1) // 2
    span = torch.randint(n_special, vocab, (n, half), generator=generator)
    rows = torch.cat([torch.full((n, 1), bos), span, span], dim=1)
    if rows.shape[1] < context_size:
        pad = torch.randint(n_special, vocab, (n, context_size - rows.shape[1]), generator=generator)
        rows = torch.cat([rows, pad], dim=1)
    return rows


def induction_rows(
    n: int, context_size: int, alphabet: tuple[int, int], bos: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, ctx]`` rows of BOS + random prefix + span + span over a small alphabet, and a mask of
    the positions whose next token is copyable (the second copy), where the loss is taken.

    Span length and prefix vary per row, so no fixed positional offset solves the task: only a
    previous-token head composed with an induction head does.
    """
    low, high = alphabet
    rows = torch.randint(low, high, (n, context_size), generator=generator)
    rows[:, 0] = bos
    mask = torch.zeros((n, context_size - 1), dtype=torch.bool)
    for row in range(n):
        half = int(torch.randint(8, (context_size - 1) // 2 + 1, (1,), generator=generator))
        prefix = int(torch.randint(0, context_size - 1 - 2 * half + 1, (1,), generator=generator))
        start = 1 + prefix
        rows[row, start + half : start + 2 * half] = rows[row, start : start + half]
        mask[row, start + half - 1 : start + 2 * half - 1] = True  # predicting tokens of the second copy
    return rows, mask


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy, optionally only where ``mask`` ([batch, ctx-1]) is set."""
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none"
    ).view(tokens.shape[0], -1)
    return losses.mean() if mask is None else losses[mask].mean()


def optimizer_step(model, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Backward, clip the gradient norm at 1, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(steps: int, batch_size: int, lr: float, seed: int, induction_fraction: float):
    """Phase 1: language modelling with repeated random spans mixed in."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(MODEL_CONFIG["d_vocab"], WEIGHTS_DIR / "tokenizer.json")
    windows = corpus_windows(tokenizer, MODEL_CONFIG["n_ctx"])
    bos = tokenizer.token_to_id("<|bos|>")
    print(f"corpus: {windows.shape[0]} windows of {MODEL_CONFIG['n_ctx']} tokens")

    cfg = HookedTransformerConfig(**MODEL_CONFIG, seed=seed, device="cpu")
    model = HookedTransformer(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    generator = torch.Generator().manual_seed(seed)
    n_induction = int(batch_size * induction_fraction)
    start = time.time()
    bar = tqdm(range(steps), desc="demo model", unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=100)
        rows = torch.randint(0, windows.shape[0], (batch_size - n_induction,), generator=generator)
        induction = repeated_random_batch(n_induction, cfg.n_ctx, cfg.d_vocab, bos, len(SPECIAL_TOKENS), generator)
        tokens = torch.cat([windows[rows], induction])
        loss = model(tokens, return_type="loss")
        optimizer_step(model, optimizer, loss)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    print(f"trained {steps} steps in {time.time() - start:.0f}s")
    return model, windows, bos


def train_induction(
    model,
    windows: torch.Tensor,
    bos: int,
    steps: int,
    text_rows: int,
    lr: float,
    seed: int,
    alphabet: tuple[int, int],
    n_induction: int,
    induction_context: int,
) -> None:
    """Phase 2: each step, ``text_rows`` corpus windows plus ``n_induction`` short induction rows
    (loss on the second copy only): many cheap induction examples per step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    generator = torch.Generator().manual_seed(seed + 1)
    bar = tqdm(range(steps), desc="demo model, induction phase", unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=50)
        rows = torch.randint(0, windows.shape[0], (text_rows,), generator=generator)
        text = windows[rows]
        induction, mask = induction_rows(n_induction, induction_context, alphabet, bos, generator)
        loss = lm_loss(model(text), text) + lm_loss(model(induction), induction, mask)
        optimizer_step(model, optimizer, loss)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")


def save_model(model, out_dir: Path, history: list[dict]) -> None:
    """Weights, config, and ``circuit.json``: the named heads with their scores and the checks that
    phase 3 made of the model (repeat-loss ratios, held-out language modelling, IOI)."""
    from interp.circuits.attention import head_scores_on_repeated_tokens
    from interp.circuits.ioi_circuit import ioi_head_table, ioi_roles
    from interp.circuits.prompts import demo_ioi_prompts
    from interp.models.demo.general_phase import bigram_held_out_loss, ioi_generalisation

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    write_safetensors(out_dir / "model.safetensors", state)
    write_json(out_dir / "config.json", MODEL_CONFIG, sort_keys=False)
    scores = head_scores_on_repeated_tokens(model, n_prompts=32, half_length=40, seed=1)  # whole vocabulary
    prev, induction = scores["previous_token"][0], scores["induction"][1]
    ioi_table = ioi_head_table(model, demo_ioi_prompts(model, 64, seed=3, template=0))  # held-out names
    final, first = history[-1], history[0]
    circuit = {
        "previous_token_head": [0, int(prev.argmax())],
        "induction_head": [1, int(induction.argmax())],
        "previous_token_scores_layer0": [round(float(v), 4) for v in prev],
        "induction_scores_layer1": [round(float(v), 4) for v in induction],
        "ioi": {
            **ioi_roles(ioi_table),
            "name_mover_dla": [round(float(v), 4) for v in ioi_table[ioi_table.layer == 1].dla_logit_diff],
        },
        "checks": {k: v for k, v in final.items() if k not in ("step", "seconds")},
        "ioi_accuracy_per_template": ioi_generalisation(model, n_per_template=512),
        "language_model": {
            "held_out_loss": final["held_out_lm_loss"],
            "before_phase_3_held_out_loss": first["held_out_lm_loss"],
            "bigram_held_out_loss": round(bigram_held_out_loss(model.tokenizer, MODEL_CONFIG["n_ctx"]), 4),
        },
    }
    write_json(out_dir / "circuit.json", circuit, sort_keys=False)
    print(json.dumps(circuit))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--induction-fraction", type=float, default=0.375)
    parser.add_argument("--induction-steps", type=int, default=1500, help="phase 2 steps")
    parser.add_argument("--induction-lr", type=float, default=1e-3)
    parser.add_argument("--alphabet", type=int, default=64, help="phase 2 random tokens: ids 3 .. 3+N")
    parser.add_argument("--text-rows", type=int, default=8, help="phase 2 corpus windows per step")
    parser.add_argument("--induction-rows", type=int, default=48, help="phase 2 induction rows per step")
    parser.add_argument("--induction-context", type=int, default=64, help="phase 2 induction row length")
    parser.add_argument(
        "--phase1-weights",
        type=Path,
        default=None,
        help="skip phase 1 and start phase 2 from these weights (a phase-1 model.safetensors)",
    )
    parser.add_argument(
        "--phase2-weights",
        type=Path,
        default=None,
        help="skip phases 1-2 and start phase 3 from these weights (a phase-2 model.safetensors)",
    )
    parser.add_argument(
        "--phase3-weights",
        type=Path,
        default=None,
        help="skip phases 1-3 and run phases 6-9 from these weights (a phase-3 model.safetensors)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("demo-model-work"),
        help="phase 3 checkpoints (a killed run resumes from here)",
    )
    parser.add_argument(
        "--extra-phases",
        nargs="*",
        default=[],
        choices=sorted(EXTRA_PHASES),
        help="experiments run after the committed phases (not in the weights; see general_phase.py)",
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared 2-core machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    alphabet = (len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + args.alphabet)
    if args.phase3_weights is not None or args.phase2_weights is not None:
        model = load_weights(args.phase3_weights or args.phase2_weights)
    else:
        if args.phase1_weights is None:
            model, windows, bos = train(args.steps, args.batch_size, args.lr, args.seed, args.induction_fraction)
        else:
            model, windows, bos = load_weights(args.phase1_weights), *load_corpus_windows()
        train_induction(
            model,
            windows,
            bos,
            args.induction_steps,
            args.text_rows,
            args.induction_lr,
            args.seed,
            alphabet,
            args.induction_rows,
            args.induction_context,
        )
    model.set_tokenizer(demo_tokenizer())
    history = []
    for phase in COMMITTED_PHASES:
        if phase is PHASE_3 and args.phase3_weights:
            continue
        history += train_general_phase(model, phase, args.work_dir)
    for phase in args.extra_phases:
        history += train_general_phase(model, EXTRA_PHASES[phase], args.work_dir)
    save_model(model, args.out, history)


def load_weights(weights: Path):
    """The model with saved weights (of an earlier phase), to run the later phases alone."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(**MODEL_CONFIG, device="cpu"))
    model.load_state_dict(load_file(str(weights)))
    return model


def load_corpus_windows():
    """All corpus windows and the BOS id, as phase 2 reads them."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(WEIGHTS_DIR / "tokenizer.json"))
    return corpus_windows(tokenizer, MODEL_CONFIG["n_ctx"]), tokenizer.token_to_id("<|bos|>")


if __name__ == "__main__":
    main()
