"""``workbench cache``: run a model over a text spec and store activations at hooks."""

from __future__ import annotations

from pathlib import Path

import typer

from app.commands.errors import split_csv, user_errors
from interp.store.cache_config import CacheConfig

DEFAULT = CacheConfig()  # the one place each cache setting's default is declared


def cache(
    model: str = typer.Option(
        DEFAULT.model, help="'demo', a TransformerLens name, or a local HF checkpoint directory."
    ),
    data: str = typer.Option(DEFAULT.data, help="'demo', a .txt/.jsonl/.parquet file or folder, or a HF dataset name."),
    hooks: str = typer.Option(
        None,
        help="Comma-separated TransformerLens hook names; default: the middle "
        "layer's residual stream, blocks.<n_layers // 2>.hook_resid_post.",
    ),
    tokens: int = typer.Option(DEFAULT.n_tokens, help="Number of tokens to cache (rounded up to whole windows)."),
    context_size: int = typer.Option(
        None, help="Tokens per window, BOS included; default: the model's context, at most 1024."
    ),
    batch_size: int = typer.Option(DEFAULT.batch_size, help="Windows per forward pass."),
    shard_tokens: int = typer.Option(DEFAULT.shard_tokens, help="Tokens per shard file."),
    dtype: str = typer.Option(
        DEFAULT.dtype,
        help="Storage dtype: float32, float16 or bfloat16; the model runs at it "
        "too unless --model-dtype says otherwise.",
    ),
    model_dtype: str = typer.Option(None, help="The model's dtype (float32, float16, bfloat16); default: --dtype."),
    seed: int = typer.Option(DEFAULT.seed, help="Seed of the document order."),
    cache_id: str = typer.Option(None, help="Folder name; default: model name + config hash."),
    root: Path = typer.Option(Path("cached_activations"), help="Where caches live."),
    device: str = typer.Option("auto", help="cpu, cuda, or auto."),
) -> None:
    """Cache activations (resumable: rerun the same command after an interruption).

    Under ``torchrun --nproc-per-node N workbench cache ...`` each process caches every N-th shard
    (on its own GPU when there are several) and rank 0 writes the one manifest.
    """
    import os

    from interp.cache.writer import build_cache, cache_memory_estimate
    from interp.models.loading import model_shape

    if device == "auto" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    with user_errors():
        if hooks is None or context_size is None:  # defaults that fit the model, from its config alone
            shape = model_shape(model)
            hooks = shape.default_hook if hooks is None else hooks
            context_size = shape.default_context if context_size is None else context_size
        config = CacheConfig(
            model=model,
            data=data,
            hooks=split_csv(hooks),
            n_tokens=tokens,
            context_size=context_size,
            batch_size=batch_size,
            shard_tokens=shard_tokens,
            dtype=dtype,
            seed=seed,
            model_dtype=model_dtype,
        )
        estimate = cache_memory_estimate(config)
        if estimate is not None:
            typer.echo(f"memory estimate: {estimate.describe()}", err=True)
        directory = build_cache(
            config,
            root=root,
            cache_id=cache_id,
            device=device,
            report=lambda note: typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True),
        )
    typer.echo(f"cache complete: {directory}")


def register(app: typer.Typer) -> None:
    app.command("cache")(cache)
