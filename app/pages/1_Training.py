"""Training: launch a run from a form (a subprocess), follow its metrics live, stop and resume any run.

The form builds a ``TrainConfig`` (validated as the CLI's would be) and writes it as the run's config through
its owner; the job then trains that run folder (``workbench train --resume-from runs/<id>``): no command
line is assembled from the form, and none is read back.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.commands.units import parse_tokens
from app.ui import data
from app.ui.evaluation import eval_figures, eval_source
from app.ui.theme import missing, page, plot
from app.ui.workspace import (
    COMMANDS,
    UnsafePathError,
    contained,
    inside,
    list_caches,
    list_runs,
    model_spec,
    run_state,
    safe_path,
    workspace_root,
)
from interp.figures.training import metric_curve_figure, runs_overlay_figure
from interp.store.cache_manifest import MANIFEST, read_manifest
from interp.store.errors import InputError
from interp.store.locks import writing
from interp.store.names import check_name
from interp.store.run_folder import RunFileError, RunFolder
from sae_training.run_status import (
    NotTrainerError,
    checkpoint_step,
    launch_state,
    running_pid,
    stop_training,
    total_steps,
)

page("Training")  # the title is on screen before the form's imports below load torch (seconds on a cold server)
root = workspace_root()

from app.commands.train import architecture_values, fitted_defaults  # noqa: E402
from sae_training.architectures import ARCHITECTURES, architecture_options  # noqa: E402
from sae_training.config import TrainConfig  # noqa: E402


def launch(args: list[str], run: Path) -> None:
    """Start ``workbench train ARGS`` as the run's job (its own session), output appended to the run's log."""
    RunFolder(run).job().start("app.cli", ["train", *args], cwd=root)


def option_widget(column, spec):
    """A form field for one architecture option (key = the option's name); returns its value as CLI text."""
    label = spec.name.replace("_", " ")
    if spec.choices:
        value = column.selectbox(label, list(spec.choices), index=list(spec.choices).index(spec.default),
                                 key=spec.name, help=spec.help)
    elif spec.type is int:
        value = column.number_input(label, 0, 1 << 20, int(spec.default), key=spec.name, help=spec.help)
    elif spec.type is float:
        value = column.number_input(label, 0.0, 1e6, float(spec.default), key=spec.name, help=spec.help,
                                    format="%.6g")
    elif spec.type is tuple:
        value = column.text_input(label, ",".join(map(str, spec.default)), key=spec.name, help=spec.help)
    else:
        value = column.text_input(label, str(spec.default), key=spec.name, help=spec.help)
    return str(value)


def check_launch(cache_path: str, hook: str, run_id: str, tokens: str) -> Path:
    """The cache folder, after refusing anything that would fail or write outside the workspace."""
    cache = safe_path(root, cache_path)
    check_name(run_id, "run id")
    if not (cache / MANIFEST).exists():
        raise FileNotFoundError(f"'{cache_path}' is not an activation cache (no {MANIFEST})")
    hooks = read_manifest(inside(root, cache)).hooks
    if hook not in hooks:
        raise InputError(f"hook '{hook}' is not in this cache; it holds {', '.join(hooks)}")
    if RunFolder(root / "runs" / run_id).exists():
        raise FileExistsError(f"run '{run_id}' exists already: pick another id, or select it below to resume it")
    parse_tokens(tokens)
    return cache


def check_resume(run: Path) -> None:
    """Refuse to resume a run whose config trains on a cache (or model folder) outside the workspace."""
    inside(root, RunFolder(run).config_path)
    config = RunFolder(run).config()  # checked: a damaged config is refused, not launched
    if config.get("cache"):
        cache = inside(root, config["cache"])  # relative paths are the workspace's (the trainer's cwd)
        if not (cache / MANIFEST).exists():
            raise FileNotFoundError(f"the run's cache {config['cache']} is not an activation cache in the workspace")
    if config.get("model"):
        model_spec(root, config["model"])


def launch_config(cache: Path, hook: str, arch: str, d_sae: int, ensemble: int, mfr: float, tokens: str,
                  batch_size: int, lr: float, options: dict[str, str]) -> TrainConfig:
    """The form as a ``TrainConfig`` (every value checked by it, options parsed as the CLI parses its flags)."""
    return TrainConfig(cache=str(cache.relative_to(root)), hook=hook, architecture=arch,
                       options=architecture_values(arch, options), d_sae=int(d_sae), n_members=int(ensemble),
                       mfr_coefficient=float(mfr) if ensemble > 1 else 0.0, n_tokens=parse_tokens(tokens),
                       batch_size=int(batch_size), lr=float(lr))


def start_run(config: TrainConfig, run_id: str) -> Path:
    """Write ``config`` as the new run's ``config.json`` (under the run's writer lock, refused if the run exists)
    and start the job that trains it; the cache path is the workspace's (the job's cwd), so a copy resumes."""
    folder = RunFolder(root / "runs" / run_id)
    with writing(folder.path, "run"):
        if folder.exists():
            raise FileExistsError(f"run '{run_id}' exists already: pick another id, or select it below to resume it")
        folder.write_config(config.to_dict())
    launch(["--resume-from", str(folder.path.relative_to(root))], folder.path)
    return folder.path


def form_defaults(cache_id: str | None) -> dict:
    """The form's cache, hook and d_sae for a cache: the CLI's defaults (``fitted_defaults``: its hook, of several
    the middle residual stream, and 16 x that hook's width), so the form follows the cache's model."""
    fallback = {"cache_path": "", "hook": TrainConfig.default("hook"), "d_sae": TrainConfig.default("d_sae")}
    if cache_id is None:
        return fallback
    try:
        hook, d_sae = fitted_defaults(root / "cached_activations" / cache_id, None, None, None)
    except (InputError, OSError):  # several hooks, none a residual stream: the user names one
        hook, d_sae = fallback["hook"], fallback["d_sae"]
    return {"cache_path": f"cached_activations/{cache_id}", "hook": hook, "d_sae": d_sae}


caches = [cache for cache in list_caches(root) if cache.usable]
with st.expander("Launch a run", expanded=not list_runs(root)):
    if not caches:
        missing("Training needs an activation cache.", COMMANDS["cache"])
    else:
        chosen = st.selectbox("Cache", [c.cache_id for c in caches], key="cache_choice",
                              on_change=lambda: st.session_state.update(form_defaults(st.session_state.cache_choice)),
                              help="The form's cache, hook and d_sae follow it: its hook (of several, the middle "
                                   "residual stream) and 16 x that hook's width.")
        manifest = read_manifest(root / "cached_activations" / chosen)
        st.caption(f"Model `{manifest.model}`, {manifest.n_tokens:,} tokens in windows of "
                   f"{manifest.config.get('context_size', '?')} (the training's context: the cache's).")
    for name, value in form_defaults(caches[0].cache_id if caches else None).items():
        st.session_state.setdefault(name, value)
    arch = st.selectbox("Architecture", list(ARCHITECTURES), index=list(ARCHITECTURES).index("topk"), key="arch",
                        help="Its options appear in the form below (from the architecture registry).")
    with st.form("launch"):
        c1, c2, c3 = st.columns(3)
        cache_path = c1.text_input("Cache (inside the workspace)", key="cache_path")
        hook = c2.text_input("Hook", key="hook")
        run_id = c3.text_input("Run id", "run-1", key="run_id")
        d_sae = c1.number_input("d_sae", 16, 1 << 20, key="d_sae")
        ensemble = c2.number_input("Ensemble size", 1, 16, 2, key="ensemble")
        mfr = c3.number_input("MFR λ (ensembles only)", 0.0, 100.0, 1.0, key="mfr")
        tokens = c1.text_input("Tokens", "1M", key="tokens")
        batch_size = c2.number_input("Batch size (tokens)", 16, 1 << 16, TrainConfig.default("batch_size"),
                                     key="batch_size")
        lr = c3.number_input("Learning rate", 1e-6, 1.0, TrainConfig.default("lr"), key="lr", format="%.6g")
        st.caption(f"Options of {arch}")
        columns = st.columns(3)
        options = {spec.name: option_widget(columns[i % 3], spec) for i, spec in enumerate(architecture_options(arch))}
        submitted = st.form_submit_button("Launch")
    if submitted:
        try:
            cache = check_launch(cache_path, hook, run_id, tokens)
            config = launch_config(cache, hook, arch, d_sae, ensemble, mfr, tokens, batch_size, lr, options)
            start_run(config, run_id)
        except (UnsafePathError, FileNotFoundError, FileExistsError, ValueError) as error:
            st.error(f"Refused: {error}")
        else:
            st.session_state["run"] = run_id
            st.success(
                f"Launched the training of run `{run_id}` ({config.n_steps:,} steps of {config.batch_size:,} "
                f"tokens on {config.hook})"
            )

runs = list_runs(root)
run_ids = [r.run_id for r in runs]
launched_now = st.session_state.get("run")
if (
    launched_now
    and launched_now not in run_ids
    and (root / "runs" / launched_now).is_dir()
    and contained(root, root / "runs" / launched_now)
):
    run_ids.append(launched_now)  # started a moment ago: config.json not written yet
if not run_ids:
    missing("No SAE run in this workspace yet.", COMMANDS["demo"])
    st.stop()
linked_run = st.query_params.get("run")
if linked_run in run_ids and linked_run != st.session_state.get("_linked_run"):  # a link (?run=…) sets the box once
    st.session_state["_linked_run"] = st.session_state["run"] = linked_run
run_id = st.selectbox("Run", run_ids, key="run")
st.query_params["run"] = run_id
run = root / "runs" / run_id


def status(run: Path) -> tuple[str, int | None]:
    """The run's state (``running``, ``finished``, ``stopped at step N of M``: ``workspace.run_state``), or
    ``starting`` / ``failed`` for a job this page launched; with the pid Stop would signal."""
    pid = running_pid(run)
    if pid:
        return "running", pid
    launched, pid = launch_state(run)
    return (launched, pid) if launched else (run_state(run, RunFolder(run).evaluated), None)


def log_tail(run: Path, lines: int = 12) -> str:
    job = RunFolder(run).job()
    return job.log_tail(lines) if contained(root, job.log_path) else ""


LIVE_STATES = ("running", "starting")


def follow(live: bool) -> None:
    """The run's state and metrics.jsonl (cached on the file's mtime); re-read every two seconds while the run is
    ``live`` (a fragment), and the whole page once when it stops, so a finished run's page settles."""
    state, pid = status(run)
    if live and state not in LIVE_STATES:
        st.rerun()
    frame = data.metrics(run)
    try:
        done, total = checkpoint_step(run), total_steps(run)
    except InputError:  # a damaged config.json: the state line names it, the page goes on
        done, total = checkpoint_step(run), None
    c1, c2 = st.columns([3, 1])
    where = (
        f"checkpoint at step {done:,} of {total:,}"
        if total
        else "no config yet"
        if not RunFolder(run).exists()
        else f"checkpoint at step {done:,}"
    )
    c1.markdown(f"**{run_id}**: {state}{f' (pid {pid})' if pid else ''}; {len(frame)} logged steps; {where}")
    if pid and c2.button("Stop", key="stop", help="SIGTERM: the trainer checkpoints the current step and exits"):
        try:
            stop_training(run, pid)  # never a pid merely written in a file
        except NotTrainerError as error:
            st.error(f"Refused: {error}")
        else:
            st.rerun()
    if state.startswith("stopped") and c2.button("Resume", key="resume", help="workbench train --resume-from this run"):
        try:
            check_resume(run)
        except (InputError, OSError, ValueError) as error:
            st.error(f"Refused: {error}")
        else:
            launch(["--resume-from", str(run.relative_to(root))], run)
            st.rerun()
    if state == "failed":
        st.error("The training process ended without a checkpoint. The end of its log:")
        st.code(log_tail(run) or "(empty log)")
    elif log_tail(run):
        with st.expander(f"Log ({RunFolder(run).log_path.name})"):
            st.code(log_tail(run))
    if frame.empty:
        st.info("No metrics logged yet.")
        return
    names = [
        ("loss", "loss"),
        ("fvu", "FVU"),
        ("l0", "L0"),
        ("dead_fraction", "dead fraction"),
        ("mfr_penalty", "MFR penalty"),
        ("mmcs", "MMCS"),
    ]
    names = [(col, title) for col, title in names if col in frame]
    try:
        evaluation = RunFolder(run).evaluation() if contained(root, RunFolder(run).evaluation_path) else {}
    except RunFileError as damaged:  # named once, the rest of the page still renders
        st.warning(str(damaged))
        evaluation = {}
    if evaluation.get("members"):  # the figures every page shows: the final evaluation
        st.markdown("**Final evaluation**")
        st.dataframe(
            pd.DataFrame([{"member": i, **eval_figures(m)} for i, m in enumerate(evaluation["members"])]),
            hide_index=True,
            key="evaluation",
        )
        st.caption("From " + eval_source(run_id, evaluation["members"]) + ". The curves below are training batches.")
    st.markdown("**Last logged training step**" if evaluation.get("members") else "**Last logged step**")
    for column, (col, title) in zip(st.columns(len(names)), names):
        logged = frame[col].dropna()  # MMCS of an ensemble without MFR is logged every mmcs_log_every steps
        column.metric(title, f"{logged.iloc[-1]:.4g}" if len(logged) else "-")
    grid = st.columns(3)
    for i, (col, title) in enumerate(names):
        fig = metric_curve_figure(frame, col, title)
        with grid[i % 3]:
            plot(fig, key=f"curve_{col}")


live = status(run)[0] in LIVE_STATES
st.fragment(run_every=2.0 if live else None)(follow)(live)


OVERLAY = {"MMCS (members' mean max cosine)": "mmcs", "loss": "loss", "FVU": "fvu", "L0": "l0",
           "dead fraction": "dead_fraction", "MFR penalty": "mfr_penalty"}


def overlay(runs) -> None:
    """Chosen runs' curves of one metric on one chart (default: the ensembles, e.g. the MFR pair vs the plain pair)."""
    ensembles = [r.run_id for r in runs if (r.n_members or 0) > 1]
    ids = [r.run_id for r in runs]
    chosen = st.multiselect("Runs", ids, default=ensembles if len(ensembles) > 1 else ids[:2], key="overlay_runs")
    label = st.radio("Metric", list(OVERLAY), horizontal=True, key="overlay_metric")
    column = OVERLAY[label]
    if not chosen:
        st.info("Choose runs to overlay.")
        return
    fig = runs_overlay_figure({r: data.metrics(root / "runs" / r) for r in chosen}, column, f"{label} by run")
    plot(fig, key="overlay")
    st.caption("Training batches as logged (members averaged). An MFR run's loss includes its MFR penalty; MMCS is "
               "logged only for ensembles.")


if len(runs) > 1:
    st.divider()
    st.subheader("Overlay runs")
    overlay(runs)

