"""The end of a finished run: one SAELens folder per member (``sae_<i>/``, ``export_members``) and the final
evaluation (``eval.json``, ``write_evaluation``, which also exports, adding each member's feature density)."""

from __future__ import annotations

from pathlib import Path

import torch

from interp.cache.store import CacheFolder
from interp.features.transcoder import transcoder_ce_loss_recovered
from interp.models.data import batched_windows, token_windows
from interp.models.loading import load_model
from interp.store.run_folder import RunFolder
from sae_training.config import TrainConfig
from sae_training.data import open_store
from sae_training.metrics import ce_loss_recovered, evaluate_ensemble, member_mmcs
from sae_training.saelens_io import save_member
from sae_training.transcoder import evaluate_transcoders, save_transcoder


def _model_and_data(config: TrainConfig, model) -> tuple[object | None, str | None, str]:
    """The model spec and text spec behind the activations (from the config or the cache manifest)."""
    if config.model is not None:
        return model, config.model, config.data
    if config.cache is not None:
        manifest = CacheFolder(config.cache, verify=False).config
        return model, manifest.get("model"), manifest.get("data", config.data)
    return model, None, config.data


def _ce_scores(run, model, data: str, n_batches: int) -> list[dict]:
    windows = token_windows(data, model.tokenizer, run.config.context_size, seed=12345, max_windows=8 * n_batches)
    tokens = [batch.to(model.cfg.device) for batch in batched_windows(windows, 8)][:n_batches]
    results = []
    for i in range(run.config.n_members):
        member = run.member(i)
        if run.config.target_hook is not None:  # the MLP's output replaced by the transcoder's prediction
            scores = [transcoder_ce_loss_recovered(model, [member], t) for t in tokens]
        else:
            scores = [ce_loss_recovered(model, run.config.hook, t, lambda x: member.decode(member.encode(x)))  # noqa: B023
                      for t in tokens]
        results.append({key: sum(s[key] for s in scores) / len(scores) for key in scores[0]})
    return results


def export_members(run, model=None, density: torch.Tensor | None = None) -> list[Path]:
    """Save every member of ``run`` as a SAELens folder ``sae_<i>/``; ``density`` (per member, from
    an evaluation) adds each one's ``sparsity.safetensors``. Returns the folders."""
    config: TrainConfig = run.config
    _, model_name, _ = _model_and_data(config, model)
    folder = RunFolder(run.directory)
    if config.target_hook is not None:
        return [save_transcoder(folder.member_path(i), run.member(i), model_name=model_name,
                                context_size=config.context_size, density=None if density is None else density[i],
                                extra_metadata={"ensemble_member": i, "trained_architecture": config.architecture})
                for i in range(config.n_members)]
    return [save_member(folder.member_path(i), run.sae, i, scale=run.scale, hook_name=config.hook,
                        model_name=model_name, context_size=config.context_size,
                        density=None if density is None else density[i])
            for i in range(config.n_members)]


def write_evaluation(run, activations: torch.Tensor | None = None, model=None) -> dict:
    """Evaluate every member on held-out batches, save ``sae_<i>/`` and ``eval.json``; return the dict."""
    config: TrainConfig = run.config
    store = open_store(config, seed=config.seed + 104729, activations=activations, model=model)
    batches = (next(store) for _ in range(max(1, config.eval_batches)))
    evaluate = evaluate_transcoders if config.target_hook is not None else evaluate_ensemble
    members, density = evaluate(run.sae, batches, run.scale)
    model, model_name, data = _model_and_data(config, model)
    if config.eval_ce_batches > 0 and model_name is not None and activations is None:
        try:
            if model is None:
                model = load_model(model_name, device=config.device)
            for member, ce in zip(members, _ce_scores(run, model, data, config.eval_ce_batches)):
                member.update(ce)
        except Exception as error:  # noqa: BLE001 - recorded in eval.json, never silently dropped
            for member in members:
                member["ce_loss_recovered"] = None
                member["ce_error"] = f"{type(error).__name__}: {error}"
    export_members(run, model, density)
    result = {"step": run.step, "tokens": run.step * config.batch_size, "members": members}
    if config.n_members > 1:
        matrix = member_mmcs(run.sae.W_dec.detach().cpu())
        off = matrix[~torch.eye(config.n_members, dtype=torch.bool)]
        result["mmcs_between_members"] = matrix.tolist()
        result["mmcs"] = float(off.mean())
    RunFolder(run.directory).write_evaluation(result)
    return result
