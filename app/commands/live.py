"""``workbench probe`` and ``workbench steer``: ask the model a question live, on any SAE of the workspace.

``probe``: which of the SAE's features fire on each token of a text (``interp.features.probe``);
``steer``: default vs steered / clamped / ablated continuations of a prompt from the same seed, the
next-token logit changes and the KL from the default (``interp.features.interventions``), and with
``--sweep`` a dose-response table. This module loads the SAE and its model, and prints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from app.commands.errors import split_csv, user_errors
from interp.store.analysis_folder import AnalysisFolder
from interp.store.errors import InputError
from interp.store.names import is_release_spec
from interp.store.run_folder import SAE_CONFIG

SAE_HELP = f"An SAE folder runs/<run_id>/sae_<i> (SAELens {SAE_CONFIG} + weights) or saelens:<release>/<sae_id>."
MODEL_HELP = "Model spec; default: the model of the cache the SAE was trained on."


def _open(sae: Path, model: str | None, analyses: Path | None, device: str):
    """The SAE (with its hook and dashboard labels) and its model."""
    from interp.features.dictionary import load_dictionary
    from interp.features.probe import recorded_model_spec, stored_labels
    from interp.models.loading import load_model

    dictionary = load_dictionary(sae, device=device)
    if dictionary.hook_name is None:
        raise InputError(f"{sae} names no hook (metadata.hook_name in its {SAE_CONFIG}); it cannot be placed in the "
                         "model")
    if analyses is None:  # a release SAE has no workspace of its own: the current one's
        analyses = Path("analyses") if is_release_spec(sae) else sae.resolve().parents[2] / "analyses"
    labels = stored_labels(AnalysisFolder.of_sae(analyses, sae).path, dictionary.d_sae)
    spec = model or recorded_model_spec(sae)
    return load_model(spec, device=device), dictionary, labels


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"cannot read a number from {what} '{text}'") from None
    if not math.isfinite(value):
        raise InputError(f"{what} is {value}; give a finite number")
    return value


MAX_FILE_BYTES = 64 * 2**20  # a text file is read up to this size; the probe tokenises far less (see probe)


def read_text_file(path: Path) -> tuple[str, list[str]]:
    """A UTF-8 text file ('-': standard input) read up to ``MAX_FILE_BYTES``, with a note when cut; a binary or
    non-UTF-8 file is refused with a one-line message."""
    import codecs
    import sys

    if str(path) == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    else:
        if path.is_dir():
            raise InputError(f"--file {path} is a folder; give a text file")
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    notes = []
    if len(data) > MAX_FILE_BYTES:
        notes.append(f"{path} is over {MAX_FILE_BYTES // 2**20} MiB; read its first {MAX_FILE_BYTES // 2**20} MiB")
        data = data[:MAX_FILE_BYTES]
    if b"\x00" in data:
        raise InputError(f"{path} is not a text file (it has NUL bytes); give a UTF-8 text file")
    try:  # not final: a multi-byte character cut by the size limit is dropped, not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=len(data) < MAX_FILE_BYTES)
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                         "save it as UTF-8") from None
    return text, notes


def probe_command(
    text: str = typer.Argument(None, help="The text to probe (quote it); or give --file."),
    sae: Path = typer.Option(..., help=SAE_HELP),
    file: Path = typer.Option(None, "--file", help="Read the text from this UTF-8 file ('-': standard input), "
                              "for a text too long for the command line."),
    top_k: int = typer.Option(5, help="Features listed per token."),
    model: str = typer.Option(None, help=MODEL_HELP),
    analyses: Path = typer.Option(None, help="Analyses root with the SAE's dashboards (labels); default: "
                                  "<workspace>/analyses beside runs/ (a release SAE: ./analyses)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (tokens, top features, windows, notes)."),
    device: str = typer.Option("cpu", help="Device."),
) -> None:
    """Which features fire on each token of TEXT: activation, share of the token's total, label, logit effect."""
    from interp.features.probe import probe

    with user_errors():
        if top_k < 1:
            raise InputError(f"--top-k must be at least 1; got {top_k}")
        if (text is None) == (file is None):
            raise InputError("give the text to probe as the argument or with --file PATH, not both"
                             if file is not None else "give a text to probe (quote it) or --file PATH")
        text, file_notes = read_text_file(file) if file is not None else (text, [])
        loaded, dictionary, labels = _open(sae, model, analyses, device)
        result = probe(loaded, {"sae": dictionary}, text, labels={"sae": labels})
        result.notes[:0] = file_notes
    table = result.top_features("sae", k=top_k)
    if as_json:
        typer.echo(json.dumps({"tokens": result.tokens, "token_ids": result.token_ids, "windows": result.windows,
                               "notes": result.notes, "hook": dictionary.hook_name,
                               "top_features": table.to_dict(orient="records")}, default=float))
        return
    for note in result.notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    windows = f" in {len(result.windows)} overlapping windows" if len(result.windows) > 1 else ""
    typer.echo(f"{len(result.tokens):,} tokens{windows}; top {top_k} features of {sae} at {dictionary.hook_name} "
               "(activation, share of the token's total, direct effect on the next token's logit)")
    by_position = dict(list(table.groupby("position")))
    for position, token in enumerate(result.tokens):
        rows = by_position.get(position, table.iloc[:0])
        cells = [f"{r.feature}" + (f" [{r.label}]" if r.label else "") + f" {r.activation:.2f} {r.share:.0%} "
                 f"{r.logit_effect:+.2f}" for r in rows.itertuples()]
        typer.echo(f"{position:5d} {token!r:>14}  " + (" | ".join(cells) or "(no feature fires)"))


METHODS = ("add", "clamp", "ablate")


def steer_command(
    prompt: str = typer.Argument(..., help="The prompt to continue (quote it)."),
    sae: Path = typer.Option(..., help=SAE_HELP),
    feature: list[int] = typer.Option(..., help="Feature id; repeat for several features."),
    coef: str = typer.Option("8", help="add: the coefficient c of c·d_i; clamp: the value v; ablate: unused."),
    method: str = typer.Option("add", help="add (steer), clamp or ablate."),
    positions: str = typer.Option("", help="Token positions to edit (0 = BOS), comma-separated; default: all."),
    tokens: int = typer.Option(32, help="Tokens to generate."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (0: greedy)."),
    seed: int = typer.Option(0, help="Seed of the draws both continuations share."),
    sweep: str = typer.Option("", help="Also a dose-response table over these values, comma-separated."),
    model: str = typer.Option(None, help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    device: str = typer.Option("cpu", help="Device."),
) -> None:
    """Default vs steered continuation of PROMPT from the same seed, logit changes, KL per position."""
    from interp.features.interventions import Intervention, dose_response, generate

    with user_errors():
        if method not in METHODS:
            raise InputError(f"unknown --method '{method}'; use one of {', '.join(METHODS)}")
        value = 0.0 if method == "ablate" else _number(coef, "--coef")
        where = tuple(int(_number(p, "--positions")) for p in split_csv(positions)) or None
        loaded, dictionary, _ = _open(sae, model, None, device)
        edits = [Intervention(dictionary, dictionary.hook_name, f, method, value, where) for f in feature]
        out = generate(loaded, prompt, edits, max_new_tokens=tokens, temperature=temperature, seed=seed)
        curve = None
        if sweep:
            values = [_number(v, "--sweep") for v in split_csv(sweep)]
            curve = dose_response(loaded, prompt, edits[0], values)
    changes = out.logit_changes
    if as_json:
        typer.echo(json.dumps({"default": out.default_text, "steered": out.steered_text, "kl": out.kl.tolist(),
                               "logit_changes": changes.to_dict(orient="records"), "seed": out.seed,
                               "dose_response": None if curve is None else curve.to_dict(orient="records")},
                              default=float))
        return
    typer.echo(f"prompt:  {prompt}")
    typer.echo(f"default: {out.default_text}")
    typer.echo(f"{method}:{' ' * (8 - len(method))}{out.steered_text}")
    typer.echo(f"KL from the default along the default text: mean {out.kl.mean():.4f}, max {out.kl.max():.4f} nats")
    up = changes[changes.direction == "up"].head(5)
    down = changes[changes.direction == "down"].head(5)
    typer.echo("next-token logits up:   " + ", ".join(f"{t!r} {c:+.2f}" for t, c in zip(up.token, up.change)))
    typer.echo("next-token logits down: " + ", ".join(f"{t!r} {c:+.2f}" for t, c in zip(down.token, down.change)))
    if curve is not None:
        typer.echo(f"dose-response (target {curve.target_token.iloc[0]!r}):")
        typer.echo(curve[["value", "probability", "activation", "kl"]].to_string(index=False))


def register(app: typer.Typer) -> None:
    app.command("probe")(probe_command)
    app.command("steer")(steer_command)
