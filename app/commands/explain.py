"""``workbench analyze explain``: every feature of an SAE explained and scored, offline (an LLM optional).

The step is ``interp.pipeline.explain``; this module parses options and prints a summary per SAE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.commands.errors import user_errors
from interp.store.errors import InputError
from interp.store.run_folder import SAE_CONFIG


def explain_command(
    sae: Annotated[Path, typer.Argument(help=f"An SAE folder ({SAE_CONFIG}) or a run folder with sae_* members.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Analyses root holding the SAE's dashboards (run `workbench analyze "
            "features` first); explanations go beside them."
        ),
    ] = Path("analyses"),
    cache: Annotated[
        Path | None, typer.Option(help="Activation cache; default: the one recorded in the run's config.")
    ] = None,
    hook: Annotated[str | None, typer.Option(help="Hook name; default: the one the dashboards used.")] = None,
    model: Annotated[str | None, typer.Option(help="Model spec for token texts; default: the cache's model.")] = None,
    chunk: Annotated[int, typer.Option(help="Features per resumable chunk.")] = 256,
    force: Annotated[bool, typer.Option(help="Start over instead of resuming or reusing a finished run.")] = False,
    device: Annotated[str, typer.Option(help="Device for the example pass.")] = "cpu",
    llm_url: Annotated[
        str | None,
        typer.Option(
            help="Also explain and score with an LLM: an OpenAI-compatible API "
            "root, e.g. http://127.0.0.1:8080/v1 (llama.cpp, vLLM, ollama). Off by "
            "default."
        ),
    ] = None,
    llm_model: Annotated[str, typer.Option(help="Model name the LLM endpoint serves.")] = "default",
    llm_key_env: Annotated[str, typer.Option(help="Environment variable holding the LLM API key.")] = "OPENAI_API_KEY",
    llm_timeout: Annotated[float, typer.Option(help="Seconds to wait for one LLM answer.")] = 60.0,
) -> None:
    """Explanations (the best token rule per feature) with detection, fuzzing and simulation scores on
    held-out windows, each beside a random-explanation baseline."""
    from interp.pipeline.explain import analyze_explain, summary

    with user_errors():
        if chunk < 1:
            raise InputError(f"--chunk must be at least 1, got {chunk}")
        llm = None
        if llm_url:
            from interp.explain.llm import LLMConfig, LLMExplainer

            llm = LLMExplainer(LLMConfig(llm_url, llm_model, llm_key_env, llm_timeout))
        for folder in analyze_explain(
            sae,
            out,
            cache_dir=cache,
            hook=hook,
            model_spec=model,
            chunk_features=chunk,
            force=force,
            device=device,
            llm=llm,
            progress=True,
        ):
            typer.echo(f"explanations: {folder.path} ({summary(folder)})")
        for problem in dict.fromkeys(llm.problems if llm else []):
            typer.secho(f"warning: {problem}", fg=typer.colors.YELLOW, err=True)


def demo_explain_step(workspace: Path) -> str:
    """Demo stage: offline explanations and scores of the demo pairs (``interp.pipeline.demo``)."""
    from interp.pipeline.demo import demo_explanations
    from interp.pipeline.explain import summary

    return "explanations: " + "; ".join(f"{folder.id} ({summary(folder)})" for folder in demo_explanations(workspace))
