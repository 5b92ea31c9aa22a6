"""Core metrics as SAEBench's ``evals/core`` defines them: reconstruction (explained variance, MSE, cosine),
shrinkage (‖x̂‖/‖x‖), sparsity (L0, L1), model behaviour with the SAE spliced in (CE loss score, KL score),
feature density (dead, dense, histogram) and weight statistics (max encoder / decoder cosine).

Where we differ from SAEBench 0.6.0, on purpose:
- ``explained_variance`` is ``1 - E‖x - x̂‖² / Σ_d Var(x_d)`` (= 1 - FVU). SAEBench's "correct" formula
  subtracts ``(mean_d E[x_d²])²`` instead of ``Σ_d (E x_d)²`` (it squares the per-dimension second
  moment); we keep the textbook one and also report SAEBench's ``explained_variance_legacy`` (per-batch).
- ``mse`` is ``E_t Σ_d (x - x̂)²`` (the workbench's ``eval.json``); SAEBench divides each token's error by
  the batch's token count.
- BOS is excluded from reconstruction statistics and kept clean when the SAE is spliced in (SAEBench's
  ``exclude_special_tokens_from_reconstruction``), since our SAEs never see BOS in training; zero ablation
  zeroes every position, as SAEBench's hook does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.features.dictionary import Dictionary
from interp.store.errors import InputError

DENSE = 0.1  # a latent firing on more than 10 % of tokens is dense (SAEBench's freq_over_10_percent)


def encoder_matrix(dictionary: Dictionary) -> Float[Tensor, "d_sae d_in"] | None:
    """Encoder rows ``[d_sae, d_in]`` when the dictionary has a linear encoder (SAELens' ``W_enc [d_in, d_sae]``)."""
    W = getattr(dictionary, "W_enc", None)
    if W is None:
        W = getattr(getattr(dictionary, "sae", None), "W_enc", None)
    if W is None:
        return None
    W = W.detach().float()
    return W.T if W.shape == (dictionary.d_in, dictionary.d_sae) else W


def encoder_bias(dictionary: Dictionary) -> Float[Tensor, " d_sae"]:
    sae = getattr(dictionary, "sae", dictionary)
    b = getattr(sae, "b_enc", None)
    if b is None:
        b = getattr(sae, "b_mag", None)
    return torch.zeros(dictionary.d_sae) if b is None else b.detach().float().cpu()


def max_other_cosine(W: Float[Tensor, "n d"], chunk: int = 1024) -> Float[Tensor, " n"]:
    """For each row, the largest cosine with any other row (in chunks: never the full ``n x n`` matrix)."""
    unit = F.normalize(W.float(), dim=-1)
    out = torch.empty(len(unit))
    for start in range(0, len(unit), chunk):
        sims = unit[start:start + chunk] @ unit.T
        rows = torch.arange(len(sims))
        sims[rows, rows + start] = -float("inf")
        out[start:start + chunk] = sims.max(dim=1).values.cpu()
    return out


def density_histogram(density: Float[Tensor, " d_sae"], bins: int = 20, low: float = -8.0) -> dict[str, list[float]]:
    """Histogram of log10 feature density; latents that never fired land in the lowest bin."""
    log_density = torch.log10(density.float().clamp_min(10 ** low))
    counts = torch.histc(log_density, bins=bins, min=low, max=0.0)
    return {"log10_density_edges": torch.linspace(low, 0.0, bins + 1).tolist(), "counts": counts.tolist()}


@torch.no_grad()
def reconstruction_stats(dictionary: Dictionary, batches: Iterable[tuple[Float[Tensor, "n d_in"], Int[Tensor, " n"]]]
                         ) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Streamed over ``(activations, sequence ids)`` batches (BOS rows already dropped): scalar metrics and
    per-latent ``feature_density`` and ``consistent_activation_heuristic`` (tokens per firing sequence)."""
    n, sums = 0, dict.fromkeys(("l0", "l1", "resid", "cos", "l2_in", "l2_out", "ratio", "xhat_sq", "x_dot", "legacy",
                                "x_sq"), 0.0)
    x_sum = fired = seqs_fired = None
    for x, sequence in batches:
        x = x.float()
        f = dictionary.encode(x).float()
        x_hat = dictionary.decode(f).float()
        if fired is None:
            x_sum, fired, seqs_fired = torch.zeros(x.shape[1]), torch.zeros(f.shape[1]), torch.zeros(f.shape[1])
        resid = (x - x_hat).pow(2).sum(-1)
        l2_in, l2_out = x.norm(dim=-1), x_hat.norm(dim=-1)
        sums["l0"] += float((f != 0).sum())
        sums["l1"] += float(f.sum())
        sums["resid"] += float(resid.sum())
        sums["cos"] += float(F.cosine_similarity(x, x_hat, dim=-1).sum())
        sums["l2_in"] += float(l2_in.sum())
        sums["l2_out"] += float(l2_out.sum())
        sums["ratio"] += float((l2_out / torch.where(l2_in.abs() < 1e-4, 1.0, l2_in)).sum())
        sums["xhat_sq"] += float(l2_out.pow(2).sum())
        sums["x_dot"] += float((x * x_hat).sum())
        sums["legacy"] += float((1 - resid / (x - x.mean(0)).pow(2).sum(-1).clamp_min(1e-12)).sum())
        sums["x_sq"] += float(x.pow(2).sum())
        x_sum += x.sum(0).cpu()
        active = (f > 0).cpu()
        fired += active.sum(0)
        _, inverse = torch.unique(sequence.cpu(), return_inverse=True)
        per_seq = torch.zeros(int(inverse.max()) + 1, f.shape[1]).index_add_(0, inverse, active.float())
        seqs_fired += (per_seq > 0).sum(0)
        n += len(x)
    if n == 0:
        raise InputError("core evaluation got no activations; check the cache or raise --tokens")
    total_variance = sums["x_sq"] / n - float((x_sum / n).pow(2).sum())
    stats = {"n_tokens": n, "l0": sums["l0"] / n, "l1": sums["l1"] / n, "mse": sums["resid"] / n,
             "explained_variance": 1 - (sums["resid"] / n) / total_variance,
             "fvu": (sums["resid"] / n) / total_variance,
             "explained_variance_legacy": sums["legacy"] / n, "cossim": sums["cos"] / n,
             "l2_norm_in": sums["l2_in"] / n, "l2_norm_out": sums["l2_out"] / n, "l2_ratio": sums["ratio"] / n,
             "relative_reconstruction_bias": sums["xhat_sq"] / sums["x_dot"]}
    return stats, {"feature_density": fired / n, "consistent_activation_heuristic": fired / seqs_fired.clamp_min(1)}


def density_metrics(density: Float[Tensor, " d_sae"]) -> dict[str, float]:
    """SAEBench's frequency metrics plus the workbench's dead and dense fractions."""
    total = float(density.sum())
    return {"freq_over_1_percent": float((density > 0.01).float().mean()),
            "freq_over_10_percent": float((density > DENSE).float().mean()),
            "normalized_freq_over_1_percent": float(density[density > 0.01].sum()) / total if total > 0 else 0.0,
            "normalized_freq_over_10_percent": float(density[density > DENSE].sum()) / total if total > 0 else 0.0,
            "frac_alive": float((density > 0).float().mean()), "dead_fraction": float((density == 0).float().mean()),
            "dense_fraction": float((density > DENSE).float().mean())}


def _kl(clean: Tensor, other: Tensor) -> Tensor:
    return (clean.softmax(-1) * (clean.log_softmax(-1) - other.log_softmax(-1))).sum(-1)


def _splice_hook(dictionary: Dictionary):
    """A hook that replaces the activation by the SAE's reconstruction at every position but BOS."""

    def splice(act: Tensor, hook=None) -> Tensor:
        out = act.clone()
        flat = act[:, 1:].reshape(-1, act.shape[-1]).float()
        out[:, 1:] = dictionary.decode(dictionary.encode(flat)).reshape(out[:, 1:].shape).to(act.dtype)
        return out

    return splice


def _zero(act: Tensor, hook=None) -> Tensor:
    return torch.zeros_like(act)


CE_KEYS = ("ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation", "kl_div_with_sae",
           "kl_div_with_ablation")


def _scores(totals: dict[str, float], n_loss: int, n_kl: int) -> dict[str, float]:
    out = {key: value / (n_loss if key.startswith("ce") else n_kl) for key, value in totals.items()}
    ce_gap = out["ce_loss_with_ablation"] - out["ce_loss_without_sae"]
    out["ce_loss_score"] = (out["ce_loss_with_ablation"] - out["ce_loss_with_sae"]) / ce_gap if abs(ce_gap) > 1e-12 \
        else float("nan")
    kl_zero = out["kl_div_with_ablation"]
    out["kl_div_score"] = (kl_zero - out["kl_div_with_sae"]) / kl_zero if kl_zero > 1e-12 else float("nan")
    out["n_tokens"] = n_kl
    return out


@torch.no_grad()
def downstream_stats_many(model, hook: str, dictionaries: dict[str, Dictionary],
                          token_batches: Iterable[Int[Tensor, "batch seq"]]) -> dict[str, dict[str, float]]:
    """``downstream_stats`` for several dictionaries of one hook: the clean and zero-ablated runs of each batch
    are made once and shared (one batch of logits in memory at a time)."""
    totals = {name: dict.fromkeys(CE_KEYS, 0.0) for name in dictionaries}
    n_loss = n_kl = 0
    for tokens in token_batches:
        clean_logits, clean_loss = model(tokens, return_type="both", loss_per_token=True)
        zero_logits, zero_loss = model.run_with_hooks(tokens, return_type="both", loss_per_token=True,
                                                      fwd_hooks=[(hook, _zero)])
        kl_zero = float(_kl(clean_logits, zero_logits).sum())
        del zero_logits
        for name, dictionary in dictionaries.items():
            sae_logits, sae_loss = model.run_with_hooks(tokens, return_type="both", loss_per_token=True,
                                                        fwd_hooks=[(hook, _splice_hook(dictionary))])
            t = totals[name]
            t["ce_loss_without_sae"] += float(clean_loss.sum())
            t["ce_loss_with_sae"] += float(sae_loss.sum())
            t["ce_loss_with_ablation"] += float(zero_loss.sum())
            t["kl_div_with_sae"] += float(_kl(clean_logits, sae_logits).sum())
            t["kl_div_with_ablation"] += kl_zero
        n_loss += clean_loss.numel()
        n_kl += clean_logits.shape[0] * clean_logits.shape[1]
    if n_loss == 0:
        raise InputError("CE evaluation got no token batches; raise --ce-batches or check the data spec")
    return {name: _scores(t, n_loss, n_kl) for name, t in totals.items()}


def downstream_stats(model, hook: str, dictionary: Dictionary, token_batches: Iterable[Int[Tensor, "batch seq"]]
                     ) -> dict[str, float]:
    """CE loss and KL divergence (to the clean run) with the SAE spliced in at ``hook`` (BOS kept clean) and
    with the hook zero-ablated; SAEBench's scores ``ce_loss_score`` and ``kl_div_score``."""
    return downstream_stats_many(model, hook, {"sae": dictionary}, token_batches)["sae"]


def weight_stats(dictionary: Dictionary) -> dict[str, Tensor]:
    """Per latent: encoder bias and norm, encoder-decoder cosine, max cosine to another latent's decoder and
    encoder (NaN where the dictionary has no linear encoder)."""
    W_dec = dictionary.W_dec.detach().float().cpu()
    W_enc = encoder_matrix(dictionary)
    nan = torch.full((dictionary.d_sae,), float("nan"))
    out = {"encoder_bias": encoder_bias(dictionary), "max_decoder_cosine_sim": max_other_cosine(W_dec)}
    if W_enc is None:
        return out | {"encoder_norm": nan, "encoder_decoder_cosine_sim": nan, "max_encoder_cosine_sim": nan}
    W_enc = W_enc.cpu()
    return out | {"encoder_norm": W_enc.norm(dim=-1), "encoder_decoder_cosine_sim": F.cosine_similarity(W_enc, W_dec),
                  "max_encoder_cosine_sim": max_other_cosine(W_enc)}


def core_output_parts(recon: dict[str, float], per_latent: dict[str, Tensor], weights: dict[str, Tensor],
                      downstream: dict[str, float] | None) -> tuple[dict[str, dict], list[dict], dict]:
    """SAEBench's core categories, its per-feature details and the unstructured extras (density histogram)."""
    density = per_latent["feature_density"]
    nan = float("nan")
    down = downstream or {}
    misc = density_metrics(density) | {
        "average_max_encoder_cosine_sim": float(weights["max_encoder_cosine_sim"].mean()),
        "average_max_decoder_cosine_sim": float(weights["max_decoder_cosine_sim"].mean())}
    metrics = {
        "model_behavior_preservation": {k: down.get(k, nan) for k in ("kl_div_score", "kl_div_with_ablation",
                                                                       "kl_div_with_sae")},
        "model_performance_preservation": {k: down.get(k, nan) for k in (
            "ce_loss_score", "ce_loss_with_ablation", "ce_loss_with_sae", "ce_loss_without_sae")},
        "reconstruction_quality": {k: recon[k] for k in ("explained_variance", "explained_variance_legacy", "mse",
                                                         "cossim", "fvu")},
        "shrinkage": {k: recon[k] for k in ("l2_norm_in", "l2_norm_out", "l2_ratio", "relative_reconstruction_bias")},
        "sparsity": {"l0": recon["l0"], "l1": recon["l1"]},
        "token_stats": {"total_tokens_eval_reconstruction": int(down.get("n_tokens", 0)),
                        "total_tokens_eval_sparsity_variance": int(recon["n_tokens"])},
        "misc_metrics": misc,
    }
    columns = {"feature_density": density,
               "consistent_activation_heuristic": per_latent["consistent_activation_heuristic"],
               **weights}
    lists = {k: v.tolist() for k, v in columns.items()}
    details = [{"index": i, **{k: lists[k][i] for k in lists}} for i in range(len(density))]
    return metrics, details, {"density_histogram": density_histogram(density)}
