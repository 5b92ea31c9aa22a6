"""Evaluation of an ensemble: MSE, FVU, L0, dead/dense fractions, feature density, CE loss recovered,
cross-member matching (MMCS) and similarity to ground-truth features. Pure functions over tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.features.matching import cosine_matrix, hungarian, match_features
from sae_training.architectures import EnsembleSAE

DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens counts as dense


def reconstruction_metrics(x: Float[Tensor, "batch d_in"], x_hat: Float[Tensor, "K batch d_in"],
                           f: Float[Tensor, "K batch d_sae"]) -> dict[str, Float[Tensor, " K"]]:
    """Per member: MSE (sum over d_in, mean over tokens), FVU = residual / total variance, L0."""
    error = (x_hat - x.unsqueeze(0)).pow(2).sum(-1)
    variance = (x - x.mean(0)).pow(2).sum()
    return {"mse": error.mean(-1), "fvu": error.sum(-1) / variance, "l0": (f != 0).sum(-1).float().mean(-1)}


def density_histogram(density: Float[Tensor, " d_sae"], bins: int = 20,
                      low: float = -8.0) -> dict[str, list[float]]:
    """Histogram of log10 feature density; latents that never fired land in the lowest bin."""
    log_density = torch.log10(density.clamp_min(10 ** low))
    counts = torch.histc(log_density, bins=bins, min=low, max=0.0)
    edges = torch.linspace(low, 0.0, bins + 1)
    return {"log10_density_edges": edges.tolist(), "counts": counts.tolist()}


@torch.no_grad()
def evaluate_ensemble(sae: EnsembleSAE, batches: Iterable[Float[Tensor, "batch d_in"]],
                      scale: float = 1.0) -> tuple[list[dict], Float[Tensor, "K d_sae"]]:
    """Metrics per member over ``batches`` (raw activations; ``scale`` is the training normalisation).

    Returns the per-member dictionaries and the feature densities ``[K, d_sae]``.
    """
    was_training = sae.training
    sae.eval()
    K = sae.n_members
    error = torch.zeros(K)
    tokens, l0_sum = 0, torch.zeros(K)
    x_sum, x_sq = None, 0.0
    fired = torch.zeros(K, sae.d_sae)
    for x in batches:
        x = x.to(sae.W_enc.device, torch.float32)
        f = sae.encode(x * scale)
        x_hat = sae.decode(f) / scale
        error += (x_hat - x).pow(2).sum((-1, -2)).cpu()
        l0_sum += (f != 0).sum((-1, -2)).float().cpu()
        fired += (f != 0).sum(1).float().cpu()
        tokens += x.shape[0]
        x_sum = x.sum(0).cpu() if x_sum is None else x_sum + x.sum(0).cpu()
        x_sq += x.pow(2).sum().item()
    sae.train(was_training)
    if tokens == 0:
        raise ValueError("evaluation got no batches")
    total_variance = x_sq - (x_sum.pow(2).sum() / tokens).item()
    density = fired / tokens
    members = []
    for i in range(K):
        members.append({
            "mse": float(error[i] / tokens),
            "fvu": float(error[i] / total_variance),
            "l0": float(l0_sum[i] / tokens),
            "dead_fraction": float((density[i] == 0).float().mean()),
            "dense_fraction": float((density[i] > DENSE_THRESHOLD).float().mean()),
            "density_histogram": density_histogram(density[i]),
            "eval_tokens": tokens,
        })
    return members, density


def member_mmcs(W_dec: Float[Tensor, "K d_sae d_in"]) -> Float[Tensor, "K K"]:
    """Matrix of Hungarian-matched mean cosine similarity between members' decoder directions (above
    ``EXACT_MAX`` latents the candidate graph, without the full cosine matrix)."""
    K = W_dec.shape[0]
    out = torch.eye(K)
    for a in range(K):
        for b in range(a + 1, K):
            out[a, b] = out[b, a] = float(match_features(W_dec[a], W_dec[b]).cos.mean())
    return out


def ground_truth_similarity(W_dec: Float[Tensor, "d_sae d_in"], features: Float[Tensor, "n_true d_in"],
                            threshold: float = 0.9) -> dict[str, float]:
    """MMCS to the true features (Hungarian, as the MFR paper; and the mean over true features of the best
    latent's cosine) and the fraction of true features whose best-matching latent has cosine above ``threshold``."""
    similarity = cosine_matrix(features.float(), W_dec.detach().float())
    rows, cols = hungarian(similarity)
    best = similarity.max(dim=1).values
    return {"mmcs_true": float(similarity[rows, cols].mean()), "mmcs_true_max": float(best.mean()),
            "recovered_fraction": float((best > threshold).float().mean())}


@torch.no_grad()
def ce_loss_recovered(model, hook: str, tokens: Int[Tensor, "batch seq"],
                      reconstruct: Callable[[Tensor], Tensor]) -> dict[str, float]:
    """``(CE_zero − CE_sae) / (CE_zero − CE_clean)``: the SAE's reconstruction spliced in at ``hook``
    (BOS position left clean, as training excludes it), against clean and zero-ablation."""

    def splice(activation: Tensor, hook=None) -> Tensor:
        flat = activation[:, 1:].reshape(-1, activation.shape[-1])
        out = activation.clone()
        out[:, 1:] = reconstruct(flat.float()).reshape(out[:, 1:].shape).to(activation.dtype)
        return out

    def zero(activation: Tensor, hook=None) -> Tensor:
        out = activation.clone()
        out[:, 1:] = 0.0
        return out

    clean = float(model(tokens, return_type="loss"))
    with_sae = float(model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook, splice)]))
    ablated = float(model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook, zero)]))
    denominator = ablated - clean
    recovered = (ablated - with_sae) / denominator if abs(denominator) > 1e-12 else float("nan")
    return {"ce_clean": clean, "ce_sae": with_sae, "ce_zero_ablation": ablated, "ce_loss_recovered": recovered}
