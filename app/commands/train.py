"""``workbench train``: train an SAE ensemble (optionally under MFR) from a cache or a live model;
``workbench bench synthetic``: the planted-feature benchmark, MFR against no MFR, JSON out."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import typer

from app.commands.errors import removed_on_failure, user_errors
from app.commands.units import parse_tokens
from interp.store.errors import InputError
from interp.store.jobs import STOPPED_EXIT
from interp.store.run_folder import CONFIG

COMMON = (
    "cache",
    "model",
    "hook",
    "target_hook",
    "skip_connection",
    "arch",
    "d_sae",
    "ensemble",
    "mfr",
    "mfr_warmup",
    "tokens",
    "batch_size",
    "lr",
    "grad_clip",
    "run_id",
    "runs",
    "resume",
    "resume_from",
    "checkpoint_every",
    "device",
    "wandb_project",
)


def _architecture_flags() -> dict[str, tuple[object, dict[str, object]]]:
    """Every architecture option of the registry as one flag: name -> (spec, {architecture: its default})."""
    from sae_training.architectures import ARCHITECTURES, architecture_options

    flags: dict[str, tuple[object, dict[str, object]]] = {}
    for name in ARCHITECTURES:
        for spec in architecture_options(name):
            flags.setdefault(spec.name, (spec, {}))[1][name] = spec.default
    return flags


def architecture_values(arch: str, given: dict[str, str | None]) -> dict:
    """The chosen architecture's options from the flags given; a flag of another architecture is refused."""
    from sae_training.architectures import architecture_options
    from sae_training.architectures.options import parse_option

    specs = {spec.name: spec for spec in architecture_options(arch)}
    foreign = [name for name, text in given.items() if text is not None and name not in specs]
    if foreign:
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        valid = ", ".join(spec.flag for spec in specs.values()) or "none"
        raise InputError(f"{flags} does not apply to --arch {arch}; its options are: {valid}")
    return {name: parse_option(specs[name], text, arch) for name, text in given.items() if text is not None}


def fitted_defaults(cache: Path | None, model: str | None, hook: str | None, d_sae: int | None) -> tuple[str, int]:
    """``--hook`` and ``--d-sae`` when not given: the cache's hook (or the model's middle residual stream)
    and 16 x its width, so the defaults follow the model rather than the demo's numbers."""
    from interp.cache.store import CacheFolder
    from interp.models.loading import model_shape

    if cache is None:
        shape = model_shape(model or "demo")
        return hook or shape.default_hook, d_sae or 16 * shape.d_model
    store = CacheFolder(cache, verify=False, allow_incomplete=True)
    if hook is None:
        resid = sorted(
            (int(m.group(1)), h) for h in store.hooks if (m := re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", h))
        )
        if len(store.hooks) > 1 and not resid:
            raise InputError(f"{cache} holds several hooks ({', '.join(store.hooks)}); pass --hook")
        hook = store.hooks[0] if len(store.hooks) == 1 else resid[len(resid) // 2][1]  # the middle residual stream
    if hook not in store.hooks:
        raise InputError(f"{cache} holds no hook '{hook}'; its hooks: {', '.join(store.hooks)}")
    return hook, d_sae or 16 * store.d(hook)


def tokens_text(n: int) -> str:
    """10_000_000 -> '10M' (the form ``parse_tokens`` reads back)."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def train(**values) -> None:
    """Train SAEs; writes runs/<run_id>/ (config.json, metrics.jsonl, checkpoints/, sae_<i>/, eval.json).
    Architecture options (--k, --l1-coefficient, ...) apply to the architectures named in their help."""
    from interp.store.names import check_name
    from interp.store.run_folder import RunFolder
    from sae_training.config import TrainConfig
    from sae_training.trainer import TrainingError, default_run_dir, train_saes

    v = {name: values[name] for name in COMMON}
    with user_errors(TrainingError):
        if v["resume_from"] is not None:
            resume_from = RunFolder(v["resume_from"])
            if not resume_from.exists():
                raise FileNotFoundError(
                    f"{resume_from.path} holds no {resume_from.config_path.name}: not a run folder to resume"
                )
            config, run_dir, resume = TrainConfig.load(resume_from.config_path), resume_from.path.resolve(), True
        else:
            options = architecture_values(v["arch"], {name: values[name] for name in values if name not in COMMON})
            n_tokens = parse_tokens(v["tokens"])  # before the cache is opened: a bad count is the error to report
            if v["run_id"] is not None:
                check_name(v["run_id"], "run id")  # before anything is read or computed
            v["hook"], v["d_sae"] = fitted_defaults(v["cache"], v["model"], v["hook"], v["d_sae"])
            config = TrainConfig(
                cache=str(v["cache"]) if v["cache"] else None,
                model=v["model"],
                hook=v["hook"],
                target_hook=v["target_hook"],
                skip_connection=v["skip_connection"],
                architecture=v["arch"],
                options=options,
                d_sae=v["d_sae"],
                n_members=v["ensemble"],
                mfr_coefficient=v["mfr"],
                mfr_warmup_steps=v["mfr_warmup"],
                n_tokens=n_tokens,
                batch_size=v["batch_size"],
                lr=v["lr"],
                grad_clip=v["grad_clip"],
                checkpoint_every=v["checkpoint_every"],
                device=v["device"],
                wandb_project=v["wandb_project"],
            )
            run_id = v["run_id"]
            run_dir = (
                v["runs"] / check_name(run_id, "run id") if run_id is not None else default_run_dir(config, v["runs"])
            )
            resume = v["resume"]
        with removed_on_failure(run_dir, keep=lambda folder: any(RunFolder(folder).checkpoints_path.glob("*"))):
            run = train_saes(config, run_dir, resume=resume)
        if run.step < config.n_steps:
            typer.echo(
                f"stopped at step {run.step} of {config.n_steps} (checkpointed); continue with "
                f"`workbench train --resume-from {run.directory}`"
            )
            raise typer.Exit(code=STOPPED_EXIT)  # a job records it as stopped, not finished
        trained = config.n_steps * config.batch_size
        rounded = (
            f"; trained {trained:,} tokens ({config.n_steps:,} whole batches of {config.batch_size:,}): "
            f"--tokens {config.n_tokens:,} is not a multiple of the batch size"
            if trained != config.n_tokens
            else ""
        )
        typer.echo(f"run written to {run.directory}{rounded}")
        if run.evaluation:
            for i, member in enumerate(run.evaluation["members"]):
                typer.echo(
                    f"  sae_{i}: fvu {member['fvu']:.4f}  l0 {member['l0']:.1f}  dead {member['dead_fraction']:.3f}"
                )


def _train_signature() -> inspect.Signature:
    """``train``'s parameters for typer: the common options, then one flag per architecture option."""
    from sae_training.architectures import ARCHITECTURES
    from sae_training.config import TrainConfig

    default = TrainConfig.default
    common = {
        "cache": (Path, typer.Option(None, help="Activation cache directory (cached_activations/<id>).")),
        "model": (str, typer.Option(None, help="Train on live activations of this model spec instead of a cache.")),
        "hook": (
            str,
            typer.Option(
                None,
                help="TransformerLens hook name; default: the cache's hook (of several, "
                "the middle of its residual streams), or with --model its middle "
                "layer's residual stream, blocks.<n_layers // 2>.hook_resid_post.",
            ),
        ),
        "target_hook": (
            str,
            typer.Option(
                None,
                help="Train transcoders: predict this hook (an MLP's output, "
                "blocks.L.hook_mlp_out) from --hook (blocks.L.ln2.hook_normalized).",
            ),
        ),
        "skip_connection": (bool, typer.Option(False, help="Transcoders: add an affine skip W_skip x.")),
        "arch": (str, typer.Option(default("architecture"), help=" | ".join(ARCHITECTURES))),
        "d_sae": (int, typer.Option(None, "--d-sae", help="Latents per SAE; default: 16 x the hook's width.")),
        "ensemble": (int, typer.Option(default("n_members"), help="Number of SAEs trained together (K).")),
        "mfr": (
            float,
            typer.Option(default("mfr_coefficient"), help="MFR coefficient lambda (needs --ensemble >= 2)."),
        ),
        "mfr_warmup": (int, typer.Option(default("mfr_warmup_steps"), help="MFR cosine warm-up steps.")),
        "tokens": (str, typer.Option(tokens_text(default("n_tokens")), help="Training tokens, e.g. 10M.")),
        "batch_size": (int, typer.Option(default("batch_size"))),
        "lr": (float, typer.Option(default("lr"))),
        "grad_clip": (float, typer.Option(default("grad_clip"), help="Per-member gradient-norm clipping (0: none).")),
        "run_id": (str, typer.Option(None, help="Run folder name under --runs (default: derived from the config).")),
        "runs": (Path, typer.Option(Path("runs"), help="Where runs are written.")),
        "resume": (bool, typer.Option(False, help="Continue the run in --run-id from its last checkpoint.")),
        "resume_from": (
            Path,
            typer.Option(
                None, help=f"Continue the run in this folder with its saved {CONFIG} (other options are ignored)."
            ),
        ),
        "checkpoint_every": (int, typer.Option(default("checkpoint_every"))),
        "device": (str, typer.Option(default("device"))),
        "wandb_project": (str, typer.Option(None, help="Log to Weights & Biases (needs wandb installed).")),
    }
    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in common.items()
    ]
    for name, (spec, archs) in _architecture_flags().items():
        defaults = set(map(str, archs.values()))
        default = (
            f"default {defaults.pop()}"
            if len(defaults) == 1
            else "defaults " + ", ".join(f"{a}: {d}" for a, d in archs.items())
        )
        text = f"For {', '.join(archs)}: {spec.help} ({default})"
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=str,
                default=typer.Option(None, spec.flag, help=text, show_default=False),
            )
        )
    return inspect.Signature(params)


train.__signature__ = _train_signature()


def bench_synthetic(
    seeds: int = typer.Option(3, help="Seeds per setting."),
    steps: int = typer.Option(300, help="Training steps per run (equal compute with and without MFR)."),
    mfr: float = typer.Option(3.0, help="MFR coefficient (the paper's synthetic config uses 3)."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Planted features (PAPERS.md §1.5): SAEs with and without MFR, MMCS to truth, recovery, FVU, L0."""
    from sae_training.synthetic import SyntheticBenchmark, run_benchmark

    with user_errors():
        result = run_benchmark(SyntheticBenchmark(n_seeds=seeds, steps=steps, mfr_coefficient=mfr))
        text = json.dumps(result, indent=2)
        typer.echo(text)
        if out:
            out.write_text(text)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("train")(train)
    bench_app.command("synthetic")(bench_synthetic)
