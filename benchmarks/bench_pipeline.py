"""The whole pipeline at GPT-2-small shape, each stage against its compute bound; no download.

Builds a local Hugging Face GPT-2 checkpoint with random weights (12 layers, d_model 768, vocabulary
50,257, ``save_pretrained`` into a temporary folder) and a byte-level BPE of the same size trained on
the bundled corpus (padded with filler tokens where the corpus cannot fill it), then runs the library's
steps on it: ``build_cache`` at two layer-6 hooks, ``train_saes`` (a TopK pair with MFR),
``analyze_features`` (dashboards + ensemble matching), ``analyze_geometry`` and ``analyze_compare``.

Progress bars go to stderr; stdout holds one JSON line per stage: wall seconds, tokens/s, peak RSS of the
stage (sampled) and of the process so far, the stage's compute bound in FLOPs, the achieved GFLOP/s and its fraction
of a peak
measured first in the same run (a large ``torch.matmul`` at the same thread count and device).

    python benchmarks/bench_pipeline.py                                    # full size (not yet run here)
    python benchmarks/bench_pipeline.py --tokens 16384 --d-sae 4096 --threads 1
    python benchmarks/bench_pipeline.py --small                            # d_model 64: a one-minute smoke run
    python benchmarks/bench_pipeline.py --device cuda
    python benchmarks/bench_pipeline.py --workdir bench-workspace-pipeline   # resumable: rerun after a kill

With ``--workdir`` the checkpoint, cache, run and analyses live in that folder and every finished stage
appends its line to ``<workdir>/stages.jsonl``; a rerun with the same settings prints those lines again
(``"resumed": true``) and continues with the first unfinished stage (the cache resumes its shards and
training its last checkpoint; an interrupted analysis stage starts over).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens.utilities import get_act_name

CONTEXT = 128
BOS = "<|endoftext|>"


@dataclass(frozen=True)
class Shape:
    """The model and dictionary sizes of one run."""

    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    vocab: int = 50_257
    n_ctx: int = 1024

    @property
    def block_params(self) -> int:
        """Matmul weights of one block: attention 4 d^2, MLP 8 d^2."""
        return 12 * self.d_model**2


GPT2_SMALL = Shape()
SMALL = Shape(n_layer=12, d_model=64, n_head=4, vocab=4096, n_ctx=256)


# --- the checkpoint -------------------------------------------------------------------------------


def train_tokenizer(vocab: int):
    """A byte-level BPE of exactly ``vocab`` entries trained on the bundled corpus (fillers pad the rest)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from interp.models.data import iter_texts

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[BOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(iter_texts("demo"), trainer=trainer)
    learned = tokenizer.get_vocab_size()
    tokenizer.add_tokens([f"<|filler_{i}|>" for i in range(vocab - learned)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=BOS, unk_token=BOS, model_max_length=CONTEXT
    )
    assert len(wrapped) == vocab, (len(wrapped), vocab)
    return wrapped, learned


def write_checkpoint(folder: Path, shape: Shape) -> dict:
    """A random-weight GPT-2 of ``shape`` and its tokenizer, saved with ``save_pretrained`` into ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer, learned = train_tokenizer(shape.vocab)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=shape.n_layer,
        n_embd=shape.d_model,
        n_head=shape.n_head,
        vocab_size=shape.vocab,
        n_positions=shape.n_ctx,
        n_ctx=shape.n_ctx,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "bpe_learned": learned,
        "bpe_fillers": shape.vocab - learned,
    }


# --- measuring ------------------------------------------------------------------------------------


def process_peak_rss_mb() -> float:
    """The process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> tuple[float, float]:
    """The process's resident set and its anonymous part (Linux ``RssAnon``: what the process allocated,
    without memory-mapped file pages such as the cache's shards, which the kernel may drop), in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kib = lambda name: float(fields.get(name, "0 kB").split()[0])  # noqa: E731
    return kib("VmRSS") / 1024, kib("RssAnon") / 1024


@contextmanager
def sampled_peak_rss(interval: float = 0.05):
    """Yield a dict whose ``mb`` and ``anon_mb`` are the largest RSS and anonymous RSS seen (sampled every
    ``interval`` s) while the block ran."""
    seen, done = {"mb": 0.0, "anon_mb": 0.0}, threading.Event()

    def take() -> None:
        rss, anon = rss_mb()
        seen["mb"], seen["anon_mb"] = max(seen["mb"], rss), max(seen["anon_mb"], anon)

    def sample() -> None:
        while not done.is_set():
            take()
            done.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
        take()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak_gflops(device: str, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 GFLOP/s of an ``n x n`` by ``n x n`` ``torch.matmul``: the bound's peak."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        tic = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best / 1e9


def report(
    stage: str, seconds: float, tokens: int | None, flops: float | None, peak: float | None, rss: dict, **extra
) -> dict:
    """One stage's JSON line (printed and returned)."""
    row = {
        "stage": stage,
        "wall_s": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if tokens else None,
        "stage_peak_rss_mb": round(rss["mb"]),
        "stage_peak_anon_mb": round(rss["anon_mb"]),
        "process_peak_rss_mb": round(process_peak_rss_mb()),
        "bound_gflop": round(flops / 1e9, 2) if flops else None,
        "achieved_gflop_s": round(flops / seconds / 1e9, 2) if flops else None,
        "fraction_of_peak": round(flops / seconds / 1e9 / peak, 4) if flops and peak else None,
        **extra,
    }
    print(json.dumps(row), flush=True)
    return row


PROFILE: set[str] = set()  # stages to run under cProfile (--profile)


def timed(fn, stage: str = ""):
    """``(result, seconds, {"mb", "anon_mb"} peak RSS)`` of ``fn()``; under cProfile (top 20 by own time to
    stderr) when ``stage`` is in ``PROFILE``."""
    import cProfile
    import pstats

    profiler = cProfile.Profile() if stage in PROFILE else None
    with sampled_peak_rss() as rss:
        tic = time.perf_counter()
        result = profiler.runcall(fn) if profiler else fn()
        seconds = time.perf_counter() - tic
    if profiler:
        print(f"--- cProfile of stage {stage} ---", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)
    return result, seconds, rss


MATCHING = {"seconds": 0.0, "calls": 0}  # time spent in assignments (MFR's and the analyses'), per stage


@contextmanager
def matching_timer():
    """Count the seconds spent in assignments (``interp.features.matching.hungarian`` wherever it is bound, and the
    candidate-graph matching above ``EXACT_MAX``; not the matmuls) while the block runs; yields the counter, reset."""
    import interp.features.approx_matching as approx_matching
    import interp.features.matching as matching
    import sae_training.metrics as metrics
    import sae_training.mfr as mfr

    MATCHING.update(seconds=0.0, calls=0)
    originals = {(module, "hungarian"): module.hungarian for module in (matching, mfr, metrics)}
    originals[(approx_matching, "match_by_candidates")] = approx_matching.match_by_candidates

    def wrap(fn):
        def timed_call(*args, **kwargs):
            tic = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                MATCHING["seconds"] += time.perf_counter() - tic
                MATCHING["calls"] += 1

        return timed_call

    for (module, name), fn in originals.items():
        setattr(module, name, wrap(fn))
    try:
        yield MATCHING
    finally:
        for (module, name), fn in originals.items():
            setattr(module, name, fn)


# --- compute bounds ---------------------------------------------------------------------------------


def cache_flops(shape: Shape, layer: int, tokens: int) -> float:
    """Forward FLOPs through block ``layer`` (the cache stops there): 2 x matmul params x tokens, plus the
    attention scores and mixing (2 x 2 x ctx x d per token and layer, the full square as computed)."""
    blocks = layer + 1
    return tokens * blocks * (2 * shape.block_params + 4 * CONTEXT * shape.d_model)


def train_flops(tokens: int, d_in: int, d_sae: int, members: int) -> float:
    """SAE matmuls of training: 6 x tokens x d_in x d_sae per member (fwd 2 + bwd 4, the dense encoder;
    a TopK decoder touches only k latents). MFR's per-step matching is not in the bound."""
    return 6 * tokens * d_in * d_sae * members


def dashboard_flops(tokens: int, d_in: int, d_sae: int, members: int, vocab: int) -> float:
    """Encoder over the cache (2 x tokens x d_in x d_sae) plus the logit effects W_dec @ W_U
    (2 x d_sae x d_in x vocab), per member."""
    return members * (2 * tokens * d_in * d_sae + 2 * d_sae * d_in * vocab)


def gram_flops(d_in: int, d_sae: int, pairs: int) -> float:
    """One ``d_sae x d_sae`` decoder cosine matrix per pair: 2 x d_sae^2 x d_in (matching's and neighbours'
    matmul; the assignment itself is not a matmul and not in the bound)."""
    return pairs * 2 * d_sae**2 * d_in


def final_metrics(run_dir: Path) -> dict:
    """The last logged line's loss, FVU and MMCS of a run (what a change to the matching could move)."""
    from interp.store.run_folder import RunFolder

    rows = RunFolder(run_dir).metrics_rows()
    last = rows[-1] if rows else {}
    return {f"final_{key}": round(last[key], 5) for key in ("loss", "fvu", "mmcs") if key in last}


# --- the pipeline -----------------------------------------------------------------------------------

RESULT_KEYS = (
    "tokens",
    "train_tokens",
    "d_sae",
    "k",
    "mfr",
    "batch_size",
    "cache_batch",
    "layer",
    "device",
    "checkpoint",
    "shard_tokens",
    "buffer_tokens",
    "mfr_match_every",
    "no_umap",
    "small",
)


class StageLog:
    """Finished stages' lines in ``<workdir>/stages.jsonl`` (none without a workdir): what a rerun skips."""

    def __init__(self, workdir: Path | None, args: argparse.Namespace):
        from interp.store.errors import InputError

        self.path = workdir / "stages.jsonl" if workdir else None
        self.settings = {key: str(getattr(args, key)) for key in RESULT_KEYS}
        self.rows: dict[str, dict] = {}
        if self.path is None or not self.path.exists():
            return
        lines = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill: that stage reruns
                print(f"warning: {self.path} line {number} is not JSON; ignoring it", file=sys.stderr)
        if lines and (not isinstance(lines[0], dict) or lines[0].get("settings") != self.settings):
            raise InputError(
                f"{workdir} holds a benchmark run with other settings ({lines[0].get('settings')}); "
                "rerun with those, or use another --workdir"
            )
        self.rows = {row["stage"]: row for row in lines[1:] if isinstance(row, dict) and "stage" in row}

    def done(self, stage: str) -> bool:
        if stage in self.rows:
            print(json.dumps({**self.rows[stage], "resumed": True}), flush=True)
            return True
        return False

    def record(self, row: dict) -> dict:
        if self.path is not None:
            if not self.path.exists():
                self.path.write_text(json.dumps({"settings": self.settings}) + "\n")
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
        return row


def run(args: argparse.Namespace) -> list[dict]:
    from interp.cache.writer import CacheConfig, build_cache
    from interp.features.dashboards import DashboardConfig
    from interp.models.loading import load_model
    from interp.pipeline import analyze_compare, analyze_features, analyze_geometry
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    shape = SMALL if args.small else GPT2_SMALL
    device = args.device
    hooks = (get_act_name("resid_post", args.layer), get_act_name("mlp_out", args.layer))
    members, rows = 2, []
    peak = matmul_peak_gflops(device)
    print(
        json.dumps(
            {
                "stage": "peak",
                "device": device,
                "threads": torch.get_num_threads(),
                "matmul_fp32_gflop_s": round(peak, 1),
                "tokens": args.tokens,
                "d_sae": args.d_sae,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "shape": vars(shape),
            }
        ),
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pipeline-")))
        else:
            root = args.workdir
            root.mkdir(parents=True, exist_ok=True)
        log = StageLog(args.workdir, args)
        checkpoint = args.checkpoint or root / "gpt2-random"
        if args.checkpoint is None and not log.done("checkpoint"):
            info, seconds, rss = timed(lambda: write_checkpoint(checkpoint, shape))
            rows.append(log.record(report("checkpoint", seconds, None, None, peak, rss, **info)))
        with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints "Moving model to device"
            model, seconds, rss = timed(lambda: load_model(str(checkpoint), device=device))
        rows.append(report("load_model", seconds, None, None, peak, rss))

        cache_config = CacheConfig(
            model=str(checkpoint),
            data="demo",
            hooks=hooks,
            n_tokens=args.tokens,
            context_size=CONTEXT,
            batch_size=args.cache_batch,
            shard_tokens=args.shard_tokens,
        )
        cache = root / "cached_activations" / "bench"
        if not log.done("cache"):
            cache, seconds, rss = timed(
                lambda: build_cache(
                    cache_config,
                    root=root / "cached_activations",
                    cache_id="bench",
                    device=device,
                    progress=True,
                    model=model,
                ),
                "cache",
            )
            rows.append(
                log.record(
                    report(
                        "cache",
                        seconds,
                        args.tokens,
                        cache_flops(shape, args.layer, args.tokens),
                        peak,
                        rss,
                        hooks=list(hooks),
                    )
                )
            )

        d_in, train_tokens = model.cfg.d_model, args.train_tokens or args.tokens
        run_dir = root / "runs" / "pair"
        config = TrainConfig(
            cache=str(cache),
            hook=hooks[0],
            architecture="topk",
            d_sae=args.d_sae,
            k=args.k,
            n_members=members,
            mfr_coefficient=args.mfr,
            n_tokens=train_tokens,
            batch_size=args.batch_size,
            eval_ce_batches=0,
            eval_batches=2,
            device=device,
            log_every=10**9,
            checkpoint_every=8 if args.workdir else 10**9,
            buffer_tokens=args.buffer_tokens,
            mfr_match_every=args.mfr_match_every,
        )
        if not log.done("train"):
            from interp.store.run_folder import RunFolder

            resume = args.workdir is not None and RunFolder(run_dir).exists()
            with matching_timer() as matching:
                run_, seconds, rss = timed(lambda: train_saes(config, run_dir, resume=resume, progress=True), "train")
            rows.append(
                log.record(
                    report(
                        "train",
                        seconds,
                        train_tokens,
                        train_flops(train_tokens, d_in, args.d_sae, members),
                        peak,
                        rss,
                        mfr_coefficient=args.mfr,
                        mfr_match_every=config.mfr_match_every,
                        matching_s=round(matching["seconds"], 4),
                        matchings=matching["calls"],
                        matching_share=round(matching["seconds"] / seconds, 4),
                        resumed_training=resume,
                        **final_metrics(run_dir),
                    )
                )
            )
        if args.until == "train":
            return rows

        analyses = root / "analyses"
        # on a GPU the dense co-occurrence (one matmul per chunk, d_sae^2 floats: 2.4 GB at 24k) stays on the device;
        # the default switches to sparse counts on the host above 16,384 latents, which a CPU needs for memory
        dashboard_config = DashboardConfig(dense_cooccurrence_max=65_536) if device.startswith("cuda") else None
        if not log.done("dashboards"):
            with matching_timer() as matching:
                _, seconds, rss = timed(
                    lambda: analyze_features(
                        run_dir, analyses, cache_dir=cache, model_spec=model, config=dashboard_config, device=device
                    ),
                    "dashboards",
                )
            rows.append(
                log.record(
                    report(
                        "dashboards",
                        seconds,
                        members * args.tokens,
                        dashboard_flops(args.tokens, d_in, args.d_sae, members, shape.vocab),
                        peak,
                        rss,
                        matching_s=round(matching["seconds"], 4),
                        note="tokens_per_s counts both SAEs' passes; includes the pair's matching",
                    )
                )
            )
        if args.until == "dashboards":
            return rows

        if not log.done("geometry"):
            _, seconds, rss = timed(lambda: analyze_geometry(run_dir, analyses, with_umap=not args.no_umap), "geometry")
            rows.append(
                log.record(
                    report(
                        "geometry",
                        seconds,
                        None,
                        gram_flops(d_in, args.d_sae, members),
                        peak,
                        rss,
                        umap=not args.no_umap,
                    )
                )
            )

        if not log.done("compare"):
            saes = sorted(p for p in run_dir.glob("sae_*") if p.is_dir())
            comparison, seconds, rss = timed(
                lambda: analyze_compare(saes[0], saes[1], analyses, device=device), "compare"
            )
            rows.append(
                log.record(
                    report(
                        "compare",
                        seconds,
                        None,
                        gram_flops(d_in, args.d_sae, 1),
                        peak,
                        rss,
                        mmcs_ab=round(float(comparison.mmcs_ab), 4),
                        mmcs_ba=round(float(comparison.mmcs_ba), 4),
                    )
                )
            )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=262_144, help="tokens cached and dashboarded")
    parser.add_argument("--train-tokens", type=int, default=None, help="tokens the pair trains on (default --tokens)")
    parser.add_argument("--d-sae", type=int, default=24_576)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--mfr", type=float, default=1.0, help="MFR coefficient")
    parser.add_argument("--batch-size", type=int, default=4096, help="SAE training batch (tokens)")
    parser.add_argument("--cache-batch", type=int, default=32, help="model forward batch (windows)")
    parser.add_argument("--layer", type=int, default=6, help="the hooks' block")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="an existing Hugging Face checkpoint folder instead of the random GPT-2",
    )
    parser.add_argument("--shard-tokens", type=int, default=65_536, help="cache shard size (tokens)")
    parser.add_argument("--buffer-tokens", type=int, default=262_144, help="training shuffle buffer (tokens)")
    parser.add_argument(
        "--mfr-match-every", type=int, default=1, help="steps between MFR's re-matchings (1: every step, as the paper)"
    )
    parser.add_argument("--until", choices=("train", "dashboards"), default=None, help="stop after this stage")
    parser.add_argument("--no-umap", action="store_true")
    parser.add_argument(
        "--profile",
        nargs="*",
        default=[],
        metavar="STAGE",
        help="run these stages (cache train dashboards geometry compare) under cProfile",
    )
    parser.add_argument("--small", action="store_true", help="d_model 64, vocabulary 4096: a smoke run")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep every stage's files here and resume a killed run (default: a temporary folder)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from interp.store.errors import InputError

    args = parse_args(argv)
    PROFILE.update(args.profile)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
