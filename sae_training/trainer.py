"""``train_saes(config)``: train an ensemble of K SAEs (optionally under MFR) and write the run folder.

``runs/<run_id>/``: ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``sae_<i>/`` (SAELens
format, one per member) and ``eval.json``. A checkpoint holds everything the next step depends on,
so ``resume=True`` continues exactly: the metric curve equals that of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp.models.loading import load_model
from interp.store import locks
from interp.store.names import check_name
from interp.store.run_folder import RunFolder
from sae_training import distributed as dist_utils
from sae_training.architectures import EnsembleSAE, build_sae
from sae_training.checkpoint import load_latest, save_checkpoint
from sae_training.config import ConfigError, TrainConfig, check_checkpoint_config, check_same_run
from sae_training.data import find_bad_shard, geometric_median, input_scale, open_store, take_rows
from sae_training.evaluate import export_members, write_evaluation
from sae_training.memory import check_memory
from sae_training.metrics import reconstruction_metrics
from sae_training.mfr import mfr_penalty, pairwise_matched_cosine
from sae_training.optim import make_optimizer
from sae_training.saelens_io import MemberDictionary
from sae_training.transcoder import EnsembleTranscoder, build_transcoder


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite data or loss); the last good checkpoint is kept."""


@dataclass
class Run:
    """A finished (or stopped) run: its folder, config, ensemble and input scale."""

    directory: Path
    config: TrainConfig
    sae: EnsembleSAE
    scale: float
    step: int
    evaluation: dict | None = None
    train_seconds: float = 0.0  # wall time of this call's training steps (data + step), excluding set-up and I/O

    def member(self, i: int):
        """Member ``i`` as a ``Dictionary`` on raw activations (a transcoder: an ``interp`` ``Transcoder``)."""
        if isinstance(self.sae, EnsembleTranscoder):
            return self.sae.member(i, self.scale, self.config.hook, self.config.target_hook)
        return MemberDictionary(self.sae, i, self.scale)

    def metrics(self) -> list[dict]:
        return read_metrics(self.directory)


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded optimizer-state tensor its parameter's strides.

    Checkpoints store tensors contiguous (safetensors has no strides), but ``W_enc`` is a transposed
    layout; fused Adam walks param, grad and moments as raw memory, so a contiguous ``exp_avg``
    beside a transposed ``W_enc`` would pair the wrong elements and silently corrupt the resume.
    """
    for param, slots in optimizer.state.items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                slots[name] = torch.empty_strided(param.shape, param.stride(), dtype=value.dtype,
                                                  device=value.device).copy_(value)


@contextlib.contextmanager
def _stop_on_sigterm(enabled: bool):
    """While training, SIGTERM sets a flag: the loop checkpoints after the current step and returns."""
    flag = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_metrics(directory: Path | str) -> list[dict]:
    """A run folder's logged steps (``RunFolder.metrics_rows``)."""
    return RunFolder(directory).metrics_rows()


def lr_factor(step: int, n_steps: int, warmup: int, decay: int) -> float:
    """Linear warm-up from 1/warmup, constant, linear decay to 0 over the last ``decay`` steps (0-based step)."""
    factor = 1.0
    if warmup > 0 and step < warmup:
        factor = (step + 1) / warmup
    if decay > 0 and step >= n_steps - decay:
        factor = min(factor, (n_steps - step) / decay)
    return factor


def clip_per_member(parameters: list[torch.nn.Parameter], max_norm: float) -> None:
    """Gradient-norm clipping per member (the paper's SAEs have separate optimisers)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    # sum over all but the member axis without flatten (a transposed W_enc gradient would be copied)
    norms = torch.stack([g.pow(2).sum(tuple(range(1, g.dim()))) for g in grads]).sum(0).sqrt()
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.view(-1, *([1] * (g.dim() - 1))))


def default_run_dir(config: TrainConfig, runs_root: Path | str = "runs") -> Path:
    tag = f"{config.architecture}-k{config.n_members}" + ("-mfr" if config.mfr_coefficient > 0 else "")
    return Path(runs_root) / f"{tag}-{config.config_hash()}"


def _check_dir(config: TrainConfig, run_dir: Path, resume: bool) -> dict | None:
    """The checkpoint to resume from (checked to match ``config``), or None for a new run; writes nothing."""
    folder = RunFolder(run_dir)
    if resume:
        if not folder.exists():
            raise ConfigError(f"nothing to resume at {run_dir}: {folder.config_path.name} is missing")
        check_same_run(TrainConfig.load(folder.config_path), config)
        state = load_latest(folder.checkpoints_path)
        if state is not None:
            check_checkpoint_config(state, config, run_dir)
        return state
    if folder.checkpoints_path.exists() and any(folder.checkpoints_path.iterdir()):
        raise ConfigError(f"{run_dir} already holds a run; pass resume=True (--resume) or choose another run id")
    return None


def _create_dir(config: TrainConfig, run_dir: Path) -> None:
    folder = RunFolder(run_dir)
    folder.write_config(config.to_dict())
    folder.write_metrics([])


def _initialise(config: TrainConfig, sae: EnsembleSAE, stats_store) -> float:
    """Input scale and ``b_dec`` from a sample that the training stream never sees first."""
    sample = take_rows(stats_store, min(16_384, max(config.batch_size, 4096)))
    scale = input_scale(sample) if config.normalize_activations == "expected_average_only_in" else 1.0
    outputs = sae.target_part(sample) if isinstance(sae, EnsembleTranscoder) else sample  # what b_dec offsets
    center = {"geometric_median": lambda s: geometric_median(s), "mean": lambda s: s.mean(0),
              "zeros": lambda s: torch.zeros(s.shape[1])}[config.b_dec_init](outputs * scale)
    scale_t = dist_utils.broadcast_(torch.tensor([scale], dtype=torch.float64))
    center = dist_utils.broadcast_(center.float().contiguous())
    if isinstance(sae.b_dec, torch.nn.Parameter):  # a tied SAE (mfr_tied) has no decoder bias
        with torch.no_grad():
            sae.b_dec.copy_(center.to(sae.b_dec.device).expand_as(sae.b_dec))
    return float(scale_t)


@dataclass
class TrainState:
    """Everything one step reads and changes: the ensemble, its optimiser, the dead-latent counters, the input
    scale and MFR's latest assignment. A checkpoint saves it whole (``payload``) and ``restore`` puts it back."""

    sae: EnsembleSAE
    optimizer: torch.optim.Optimizer
    steps_since_fired: torch.Tensor  # [K, d_sae] steps since each latent last fired
    scale: float = 1.0
    assignments: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def payload(self, step: int, config: TrainConfig, data_position: int) -> dict:
        return {
            "step": step, "model": self.sae.state_dict(), "optimizer": self.optimizer.state_dict(),
            "steps_since_fired": self.steps_since_fired.cpu(), "scale": self.scale, "rng": torch.get_rng_state(),
            "data_position": data_position, "config_hash": config.config_hash(),
            "config_json": json.dumps(config.resume_key(), sort_keys=True),
            "assignments": None if self.assignments is None else torch.stack(
                [torch.stack(p) for p in self.assignments]).cpu(),
        }

    def restore(self, state: dict) -> None:
        self.sae.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        match_state_layout(self.optimizer)
        self.steps_since_fired.copy_(state["steps_since_fired"])
        self.scale = float(state["scale"])
        torch.set_rng_state(state["rng"])
        if state.get("assignments") is not None:
            self.assignments = [(r, c) for r, c in state["assignments"].to(self.steps_since_fired.device)]


@dataclass
class StepOutput:
    """What one step computed, for the finiteness check, the backward pass and the log line."""

    x: torch.Tensor  # the scaled batch [batch, d_in]
    parts: object  # the architecture's LossParts
    loss: torch.Tensor
    penalty: torch.Tensor
    mmcs: torch.Tensor  # [pairs] under MFR, empty otherwise
    dead: torch.Tensor  # [K, d_sae] bool
    lr: float
    sparsity: float


def forward_step(state: TrainState, config: TrainConfig, x: torch.Tensor, step: int, use_autocast: bool) -> StepOutput:
    """Learning rate, dead mask, loss (re-initialising collapsed members as the MFR code does) and MFR penalty."""
    lr = config.lr * lr_factor(step, config.n_steps, config.lr_warmup_steps, config.lr_decay_steps)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    sae, x = state.sae, x * state.scale
    dead = state.steps_since_fired >= config.dead_window
    sparsity = sae.sparsity_at(step)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
    with autocast:
        parts = sae.loss(x, sparsity, dead, config.mse_reduction)
        reset = sae.reinitialise(parts)
        if reset:  # as the MFR code: fresh weights and optimiser for those members, batch recomputed
            state.optimizer.reset_members(reset)
            parts = sae.loss(x, sparsity, dead, config.mse_reduction)
        loss = parts.total
        penalty, mmcs = loss.new_zeros(()), loss.new_zeros(0)
        if config.mfr_coefficient > 0:
            rematch = state.assignments is None or step % config.mfr_match_every == 0
            penalty, mmcs, state.assignments = mfr_penalty(sae.W_dec, config.mfr_coefficient, step + 1,
                                                           config.mfr_warmup_steps,
                                                           None if rematch else state.assignments)
            loss = loss + penalty
    return StepOutput(x, parts, loss, penalty, mmcs, dead, lr, sparsity)


def check_finite(out: StepOutput, raw_x: torch.Tensor, step: int, config: TrainConfig, data_position: int,
                 checkpoints: Path) -> None:
    """The one host sync of a step: a non-finite loss stops training, naming the bad shard or the lr."""
    if bool(torch.isfinite(out.loss)):
        return
    if not bool(torch.isfinite(raw_x).all()):  # NaN/inf in x always reaches the loss
        raise TrainingError(f"non-finite activations in the batch of step {step + 1} "
                            f"(from {find_bad_shard(config)}); the last good checkpoint is kept")
    raise TrainingError(f"the loss became {float(out.loss)} at step {step + 1} (data position {data_position}); "
                        f"lower the lr or check the data. The last good checkpoint in {checkpoints} is kept")


def backward_step(state: TrainState, config: TrainConfig, out: StepOutput) -> None:
    """Gradients (averaged over ranks, clipped per member), the optimiser step, the architecture's projection,
    and the dead-latent counters (a latent fired on any rank counts as fired)."""
    state.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    dist_utils.average_gradients(state.sae.parameters())
    if config.grad_clip > 0:
        clip_per_member(list(state.sae.parameters()), config.grad_clip)
    state.optimizer.step()
    state.sae.after_step()
    fired = dist_utils.all_reduce_(out.parts.fired().to(torch.int32), "max").bool()
    state.steps_since_fired = torch.where(fired, 0, state.steps_since_fired + 1)


def log_line(config: TrainConfig, step: int, out: StepOutput, mmcs: torch.Tensor) -> dict:
    """One ``metrics.jsonl`` row: loss, lr and the reconstruction metrics, per member under an ensemble."""
    target = out.x if out.parts.target is None else out.parts.target  # a transcoder predicts another hook
    per = reconstruction_metrics(target, out.parts.x_hat.detach().float(), out.parts.f.detach())
    per["dead_fraction"] = out.dead.float().mean(-1).cpu()
    per["aux_loss"] = out.parts.aux.detach()
    line = {"step": step, "tokens": step * config.batch_size, "loss": float(out.loss.detach()), "lr": out.lr,
            "sparsity_coefficient": out.sparsity}
    line.update({name: float(value.mean()) for name, value in per.items()})
    if config.n_members > 1:
        line["mfr_penalty"] = float(out.penalty.detach())
        if mmcs.numel():  # without MFR it is computed only every ``mmcs_log_every`` steps
            line["mmcs"] = float(mmcs.detach().mean())
        line["members"] = [{name: float(value[i]) for name, value in per.items()} for i in range(config.n_members)]
    return line


def due(done: int, every: int, last: int) -> bool:
    return done % every == 0 or done == last


class StepLogger:
    """Appends a metrics row every ``log_every`` steps (and the last), mirrors it to wandb, updates the bar."""

    def __init__(self, config: TrainConfig, folder: RunFolder, enabled: bool, progress: bool, start: int):
        self.config, self.folder, self.enabled = config, folder, enabled
        self.bar = tqdm(total=config.n_steps, initial=start, disable=not (progress and enabled), unit="step")
        self.tic, self.tic_step = time.perf_counter(), start
        self.wandb_run = None
        if config.wandb_project and enabled:
            try:
                import wandb  # optional: only runs that name a project need it
            except ImportError as error:
                raise ConfigError("wandb_project is set but wandb is not installed: `pip install wandb`") from error
            self.wandb_run = wandb.init(project=config.wandb_project, config=config.to_dict(), name=folder.path.name)

    def after_step(self, done: int, state: TrainState, out: StepOutput) -> None:
        config = self.config
        if self.enabled and due(done, config.log_every, config.n_steps):
            mmcs = out.mmcs
            if config.n_members > 1 and mmcs.numel() == 0 and due(done, config.mmcs_log_every, config.n_steps):
                with torch.no_grad():
                    mmcs, _ = pairwise_matched_cosine(state.sae.W_dec.detach())
            line = log_line(config, done, out, mmcs)
            self.folder.append_metrics(line)
            if self.wandb_run is not None:
                self.wandb_run.log(line, step=done)
            elapsed = time.perf_counter() - self.tic
            self.bar.set_postfix(loss=f"{line['loss']:.4g}", l0=f"{line['l0']:.1f}",
                                 tok_s=f"{(done - self.tic_step) * config.batch_size / max(elapsed, 1e-9):.3g}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _prepare(config: TrainConfig, run_dir: Path, resume: bool, activations, model):
    """Check the folder, open the data stream at the resume step, build (or restore) the training state."""
    rank, world_size = dist_utils.init_from_env(config.device)
    is_main = rank == 0
    folder = RunFolder(run_dir)
    checkpoint = _check_dir(config, run_dir, resume)
    if config.model is not None and model is None and activations is None:
        model = load_model(config.model, device=config.device)
    device = torch.device(config.device)
    start = checkpoint["step"] if checkpoint else 0
    store = open_store(config, seed=config.seed, start_batch=start, rank=rank, world_size=world_size,
                       activations=activations, model=model)
    d_in = store.d_in // 2 if config.target_hook else store.d_in  # a transcoder's rows are [input | target]
    if config.d_in is not None and config.d_in != d_in:
        raise ConfigError(f"config d_in={config.d_in} but the activations at {config.hook} have width "
                          f"{d_in}; fix --d-in or pick the right hook")
    torch.manual_seed(config.seed)
    check_memory(config, d_in)  # before anything is written or allocated
    if is_main and not resume:
        _create_dir(config, run_dir)
    dist_utils.barrier()
    sae = (build_transcoder(config, store.d_in, config.seed) if config.target_hook
           else build_sae(config.architecture, config.shape(store.d_in), config.options, seed=config.seed)).to(device)
    state = TrainState(sae, make_optimizer(sae, config),
                       torch.zeros(config.n_members, config.d_sae, dtype=torch.long, device=device))
    if checkpoint:
        state.restore(checkpoint)
        if is_main:
            folder.write_metrics([m for m in folder.metrics_rows() if m["step"] <= start])
    else:
        if resume and is_main:
            folder.write_metrics([])
        # in-memory / live data: every rank sees the same global sample, as one process would
        by_shard = config.cache is not None
        stats = open_store(config, seed=config.seed + 7919, rank=rank if by_shard else 0,
                           world_size=world_size if by_shard else 1, activations=activations, model=model)
        state.scale = _initialise(config, sae, stats)
        del stats  # its shuffle buffer (up to buffer_tokens x d_in floats) is not needed again
    return folder, store, state, start, is_main, world_size, model


def train_saes(config: TrainConfig, run_dir: Path | str | None = None, *, resume: bool = False,
               progress: bool = True, stop_at_step: int | None = None, activations: torch.Tensor | None = None,
               model=None, evaluate: bool = True) -> Run:
    """Train ``config.n_members`` SAEs together; write the run folder; return the ``Run``.

    ``activations`` (an in-memory ``[rows, d_in]`` tensor) replaces the cache / live model;
    ``stop_at_step`` stops early after checkpointing (for tests and time-boxed jobs). A finished run always
    leaves its SAELens folders ``sae_<i>/``; ``evaluate=False`` skips only ``eval.json`` (and the members'
    ``sparsity.safetensors``, which comes from the evaluation). The main process holds the run folder's
    writer lock throughout (taken before anything is read or written): a second trainer of the same folder
    is refused at once.
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    check_name(run_dir.name, "run id")  # a name, never '.', '..' or a hidden folder
    main = (dist_utils.world()[0] if dist_utils.world()[1] > 1 else int(os.environ.get("RANK", "0"))) == 0
    with locks.writing(run_dir, "run") if main else contextlib.nullcontext():
        return _train_saes(config, run_dir, resume=resume, progress=progress, stop_at_step=stop_at_step,
                           activations=activations, model=model, evaluate=evaluate)


def _train_saes(config: TrainConfig, run_dir: Path, *, resume: bool, progress: bool, stop_at_step: int | None,
                activations: torch.Tensor | None, model, evaluate: bool) -> Run:
    if config.cache is None and config.model is None and activations is None:
        raise ConfigError("no training data: set `cache` or `model` in the config, or pass `activations`")
    folder, store, state, start, is_main, world_size, model = _prepare(config, run_dir, resume, activations, model)
    device = state.steps_since_fired.device
    end = min(config.n_steps, stop_at_step) if stop_at_step is not None else config.n_steps
    use_autocast = config.autocast and device.type == "cuda"
    logger = StepLogger(config, folder, is_main, progress, start)
    train_seconds = 0.0  # data + steps only (no set-up, logging or checkpoints): what tokens/s is measured on
    state.sae.train()
    alive = contextlib.ExitStack()  # running.json, until the evaluation is written too
    alive.enter_context(folder.running(is_main))
    sigterm = contextlib.ExitStack()  # the Stop handler, for the training loop only
    stop_requested = sigterm.enter_context(_stop_on_sigterm(world_size == 1))
    try:
        for step in range(start, end):
            step_tic = time.perf_counter()
            raw_x = next(store).to(device, non_blocking=True)
            out = forward_step(state, config, raw_x, step, use_autocast)
            check_finite(out, raw_x, step, config, store.position, folder.checkpoints_path)
            backward_step(state, config, out)
            train_seconds += time.perf_counter() - step_tic
            done = step + 1
            logger.after_step(done, state, out)
            stopping = stop_requested.is_set()
            if is_main and (due(done, config.checkpoint_every, end) or stopping):
                save_checkpoint(folder.checkpoints_path, done, state.payload(done, config, store.position))
            if stopping:  # SIGTERM (the app's Stop button): checkpointed above, resumable exactly
                end = done
                break
    except BaseException:
        alive.close()
        raise
    finally:
        sigterm.close()
        logger.close()
    del store  # the training shuffle buffer, before the evaluation opens its own
    with alive:
        run = Run(run_dir, config, state.sae, state.scale, end, train_seconds=train_seconds)
        if end == config.n_steps and is_main:  # a finished run always leaves its SAELens folders
            if evaluate:
                run.evaluation = write_evaluation(run, activations=activations, model=model)
            else:
                export_members(run, model=model)
    dist_utils.barrier()
    return run
