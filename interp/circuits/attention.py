"""Attention basics: patterns, head scores, direct logit attribution, logit lens, composition scores.

Everything here reads weights or one cached forward pass; the input checks (``check_tokens``,
``check_head``) are shared by the other circuit analyses (decomposition, patching, feature circuits).
"""

from __future__ import annotations

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import FactoredMatrix
from transformer_lens.utilities import get_act_name

from interp.store.errors import InputError


class CircuitInputError(InputError):
    """Input that a circuit analysis cannot use (too long, out of range, unknown hook)."""


def check_tokens(model, tokens: Tensor) -> Int[Tensor, "batch pos"]:
    """Tokens as a ``[batch, pos]`` long tensor that fits the model's context and vocabulary."""
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise CircuitInputError(f"tokens must be [batch, pos]; got shape {tuple(tokens.shape)}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise CircuitInputError(
            f"prompt of {tokens.shape[1]} tokens is longer than the model's context of {model.cfg.n_ctx}; "
            "shorten or split the prompts"
        )
    if tokens.numel() and (int(tokens.max()) >= model.cfg.d_vocab or int(tokens.min()) < 0):
        raise CircuitInputError(
            f"token ids must lie in [0, {model.cfg.d_vocab}); got {int(tokens.min())}..{int(tokens.max())}"
        )
    return tokens.long().to(model.cfg.device)


def check_head(model, layer: int, head: int) -> None:
    """Clear error for a (layer, head) the model does not have."""
    if not 0 <= layer < model.cfg.n_layers:
        raise CircuitInputError(f"layer {layer} out of range: the model has layers 0..{model.cfg.n_layers - 1}")
    if not 0 <= head < model.cfg.n_heads:
        raise CircuitInputError(f"head {head} out of range: the model has heads 0..{model.cfg.n_heads - 1}")


def prompt_tokens(model, prompt: str) -> Int[Tensor, "1 pos"]:
    """A typed prompt as ``[1, pos]`` tokens (BOS first), with a clear error if it is empty or too long."""
    if not prompt.strip():
        raise CircuitInputError("the prompt is empty; type some text")
    if model.tokenizer is None:
        raise CircuitInputError("this model has no tokenizer; pass token ids instead of text")
    return check_tokens(model, model.to_tokens(prompt, truncate=False))


def top_next_tokens(model, tokens: Int[Tensor, "1 pos"], k: int = 5) -> tuple[Float[Tensor, "layer 1 head q k"], list]:
    """Every layer's attention pattern and the ``k`` most likely next tokens after the last position."""
    names = {get_act_name("pattern", layer) for layer in range(model.cfg.n_layers)}
    with torch.no_grad():
        logits, cache = model.run_with_cache(check_tokens(model, tokens), names_filter=lambda name: name in names)
    probs = logits[0, -1].softmax(-1)
    values, ids = probs.topk(k)
    top = [(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, ids)]
    return torch.stack([cache[get_act_name("pattern", layer)] for layer in range(model.cfg.n_layers)]), top


def repeated_random_tokens(
    n_prompts: int,
    half_length: int,
    vocab_low: int,
    vocab_high: int,
    bos_id: int,
    seed: int = 0,
) -> Int[Tensor, "batch 1+2*half"]:
    """BOS + a random span + the same span: the standard induction prompt set."""
    generator = torch.Generator().manual_seed(seed)
    span = torch.randint(vocab_low, vocab_high, (n_prompts, half_length), generator=generator)
    return torch.cat([torch.full((n_prompts, 1), bos_id), span, span], dim=1)


def attention_patterns(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer batch head q k"]:
    """Every layer's attention pattern, stacked."""
    tokens = check_tokens(model, tokens)
    names = {get_act_name("pattern", layer) for layer in range(model.cfg.n_layers)}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return torch.stack([cache[get_act_name("pattern", layer)] for layer in range(model.cfg.n_layers)])


def previous_token_score(pattern: Float[Tensor, "batch head q k"]) -> Float[Tensor, "head"]:
    """Mean attention from each position to the position just before it."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


def induction_score(pattern: Float[Tensor, "batch head q k"], half_length: int) -> Float[Tensor, "head"]:
    """On BOS + span + span: mean attention from the second copy to the token after the first copy.

    With the span starting at position 1, token at q = 1 + half + i attends to key 2 + i,
    i.e. the diagonal at offset ``-(half_length - 1)``, whose entries from the third on are
    the second copy's queries.
    """
    diagonal = pattern.diagonal(offset=-(half_length - 1), dim1=-2, dim2=-1)
    return diagonal[..., 2:].mean(dim=(0, -1))


def duplicate_token_score(pattern: Float[Tensor, "batch head q k"], half_length: int) -> Float[Tensor, "head"]:
    """On BOS + span + span: mean attention from the second copy to the same token in the first."""
    diagonal = pattern.diagonal(offset=-half_length, dim1=-2, dim2=-1)
    return diagonal[..., 1:].mean(dim=(0, -1))


def head_scores_on_repeated_tokens(
    model,
    n_prompts: int = 32,
    half_length: int | None = None,
    seed: int = 0,
    vocab_range: tuple[int, int] | None = None,
) -> dict[str, Float[Tensor, "layer head"]]:
    """Previous-token, induction and duplicate-token scores of every head on repeated tokens.

    ``vocab_range`` (low, high) draws the random tokens from ids [low, high); default: the whole
    vocabulary but its special tokens (``default_vocab_range``).
    """
    if half_length is None:
        half_length = (model.cfg.n_ctx - 1) // 2
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else 0
    low, high = vocab_range if vocab_range is not None else default_vocab_range(model)
    tokens = repeated_random_tokens(n_prompts, half_length, low, high, bos, seed)
    patterns = attention_patterns(model, tokens)
    return {
        "previous_token": torch.stack([previous_token_score(p) for p in patterns]),
        "induction": torch.stack([induction_score(p, half_length) for p in patterns]),
        "duplicate_token": torch.stack([duplicate_token_score(p, half_length) for p in patterns]),
    }


def detected_heads(scores: dict[str, Float[Tensor, "layer head"]]) -> dict[str, list[int]]:
    """The top previous-token head (below the last layer: an induction head reads it later) and the top induction
    head of ``head_scores_on_repeated_tokens``, as ``{role: [layer, head]}``."""
    n_heads = scores["induction"].shape[1]
    previous = divmod(int(scores["previous_token"][:-1].flatten().argmax()), n_heads)
    induction = divmod(int(scores["induction"].flatten().argmax()), n_heads)
    return {"previous_token": list(previous), "induction": list(induction)}


def default_vocab_range(model) -> tuple[int, int]:
    """Token ids for random prompts: the whole vocabulary except the special tokens at either end
    (the demo's BOS/EOS/PAD are ids 0-2, GPT-2's end-of-text is its last id)."""
    special = set(getattr(model.tokenizer, "all_special_ids", None) or []) if model.tokenizer is not None else {0, 1, 2}
    low, high = 0, model.cfg.d_vocab
    while low in special:
        low += 1
    while high - 1 in special:
        high -= 1
    return low, high


def head_scores_frame(scores: dict[str, Float[Tensor, "layer head"]]) -> pd.DataFrame:
    """One row per head: ``layer, head`` and one column per score."""
    n_layers, n_heads = next(iter(scores.values())).shape
    rows = {"layer": [l for l in range(n_layers) for _ in range(n_heads)], "head": list(range(n_heads)) * n_layers}
    rows.update({name: value.flatten().tolist() for name, value in scores.items()})
    return pd.DataFrame(rows)


# ---- direct logit attribution and logit lens ------------------------------------------------


def _final_ln_scale(model, cache) -> Float[Tensor, "batch pos 1"] | float:
    if model.cfg.normalization_type in ("LN", "LNPre", "RMS", "RMSPre"):
        return cache["ln_final.hook_scale"]
    return 1.0


def _unembed_directions(model, targets: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """Residual directions whose dot product with the normalised residual is the target's logit."""
    directions = model.W_U.T[targets]
    w = getattr(getattr(model, "ln_final", None), "w", None)
    return directions * w if w is not None else directions


def _center(x: Tensor, model) -> Tensor:
    return x - x.mean(-1, keepdim=True) if model.cfg.normalization_type in ("LN", "LNPre") else x


def direct_logit_attribution(
    model, tokens: Int[Tensor, "batch pos"], targets: Int[Tensor, "batch pos"] | None = None
) -> Float[Tensor, "layer head batch pos"]:
    """Each head's direct contribution to the logit of ``targets`` (default: the next token).

    The final layer norm's scale is frozen at its clean value (the usual linearisation), so the
    heads' terms plus the other components' terms add up to the target logit minus its bias.
    """
    tokens = check_tokens(model, tokens)
    if targets is None:
        targets = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)
    names = {get_act_name("z", l) for l in range(model.cfg.n_layers)} | {"ln_final.hook_scale"}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        results = torch.stack(
            [
                einops.einsum(cache[get_act_name("z", l)], model.blocks[l].attn.W_O, "b p h dh, h dh d -> h b p d")
                for l in range(model.cfg.n_layers)
            ]
        )
        results = _center(results, model) / _final_ln_scale(model, cache)
        return einops.einsum(results, _unembed_directions(model, targets), "l h b p d, b p d -> l h b p")


def dla_frame(dla: Float[Tensor, "layer head batch pos"]) -> pd.DataFrame:
    """Long table ``layer, head, pos, dla`` (mean over prompts)."""
    mean = dla.mean(dim=2)
    n_layers, n_heads, n_pos = mean.shape
    index = torch.cartesian_prod(torch.arange(n_layers), torch.arange(n_heads), torch.arange(n_pos))
    return pd.DataFrame({"layer": index[:, 0], "head": index[:, 1], "pos": index[:, 2], "dla": mean.flatten().tolist()})


def logit_lens(
    model, tokens: Int[Tensor, "batch pos"], targets: Int[Tensor, "batch pos"] | None = None
) -> Float[Tensor, "layer+1 batch pos"]:
    """Log-probability of the target token read off the residual stream before each layer and at the end."""
    tokens = check_tokens(model, tokens)
    if targets is None:
        targets = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)
    names = [get_act_name("resid_pre", l) for l in range(model.cfg.n_layers)]
    names.append(get_act_name("resid_post", model.cfg.n_layers - 1))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        final_ln = getattr(model, "ln_final", torch.nn.Identity())
        log_probs = [model.unembed(final_ln(cache[name])).log_softmax(-1) for name in names]
    return torch.stack([lp.gather(-1, targets[..., None])[..., 0] for lp in log_probs])


def observable_head_feature(
    model, observable: Float[Tensor, "vocab"], layer: int, head: int
) -> Float[Tensor, "d_model"]:
    """Observable propagation (Dunefsky & Cohan): the pull-back ``W_V W_O W_U n`` of a logit functional
    ``n`` through one head's OV circuit, i.e. the input direction whose value the head carries to ``nᵀ logits``
    (layer norms ignored except for scale)."""
    check_head(model, layer, head)
    if observable.shape != (model.cfg.d_vocab,):
        raise CircuitInputError(
            f"an observable is a [d_vocab={model.cfg.d_vocab}] vector; got {tuple(observable.shape)}"
        )
    attn = model.blocks[layer].attn
    with torch.no_grad():
        return attn.W_V[head] @ (attn.W_O[head] @ (model.W_U @ observable.to(model.W_U)))


def coupling_coefficient(y1: Float[Tensor, "d"], y2: Float[Tensor, "d"]) -> float:
    """``C(y1 -> y2) = y1·y2 / |y1|²``: expected y2-score of an input whose y1-score is 1."""
    return float(y1 @ y2 / (y1 @ y1))


# ---- composition scores ---------------------------------------------------------------------


def _ln_in_weight(model, layer: int) -> Tensor:
    w = getattr(model.blocks[layer].ln1, "w", None)
    return w if w is not None else torch.ones(model.cfg.d_model, device=model.cfg.device)


def folded_qk(model, layer: int) -> FactoredMatrix:
    """``[head, d_model, d_model]`` QK circuits with the input layer norm's weight folded in."""
    w = _ln_in_weight(model, layer)[None, :, None]
    return FactoredMatrix(model.blocks[layer].attn.W_Q * w, (model.blocks[layer].attn.W_K * w).transpose(-1, -2))


def folded_ov(model, layer: int) -> FactoredMatrix:
    """``[head, d_model, d_model]`` OV circuits: LN weight folded on the read side, writes centred."""
    w = _ln_in_weight(model, layer)[None, :, None]
    W_O = _center(model.blocks[layer].attn.W_O, model)
    return FactoredMatrix(model.blocks[layer].attn.W_V * w, W_O)


def composition_scores(model) -> dict[str, Float[Tensor, "layer_a head_a layer_b head_b"]]:
    """Q-, K- and V-composition of every earlier head A into every later head B (Elhage et al.).

    ``score = |M_B-side · W_OV^A|_F / (|M_B-side|_F |W_OV^A|_F)``; pairs with ``layer_b <= layer_a``
    are 0. Computed on factored matrices, never the dense ``d_model x d_model`` products.
    """
    from transformer_lens.utilities import composition_scores as tl_scores

    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    out = {mode: torch.zeros(n_layers, n_heads, n_layers, n_heads) for mode in "QKV"}
    with torch.no_grad():
        for layer_a in range(n_layers - 1):
            ov_a = folded_ov(model, layer_a)
            for layer_b in range(layer_a + 1, n_layers):
                qk_b, ov_b = folded_qk(model, layer_b), folded_ov(model, layer_b)
                out["Q"][layer_a, :, layer_b] = tl_scores(ov_a, qk_b).cpu()
                out["K"][layer_a, :, layer_b] = tl_scores(ov_a, qk_b.T).cpu()
                out["V"][layer_a, :, layer_b] = tl_scores(ov_a, ov_b).cpu()
    return out


def composition_baseline(d_model: int, d_head: int, n_samples: int = 64, seed: int = 0) -> float:
    """Mean composition score of random Gaussian low-rank circuits: the chance level to compare against."""
    from transformer_lens.utilities import composition_scores as tl_scores

    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(n_samples, *shape, generator=g)  # noqa: E731
    left = FactoredMatrix(draw(d_model, d_head), draw(d_head, d_model))
    right = FactoredMatrix(draw(d_model, d_head), draw(d_head, d_model))
    return float(tl_scores(left, right, broadcast_dims=False).mean())


def composition_frame(scores: dict[str, Tensor]) -> pd.DataFrame:
    """Long table ``layer_a, head_a, layer_b, head_b, q, k, v`` over pairs with layer_b > layer_a."""
    n_layers, n_heads = scores["K"].shape[:2]
    rows = []
    for la in range(n_layers):
        for lb in range(la + 1, n_layers):
            for ha in range(n_heads):
                for hb in range(n_heads):
                    rows.append(
                        {
                            "layer_a": la,
                            "head_a": ha,
                            "layer_b": lb,
                            "head_b": hb,
                            **{m.lower(): float(scores[m][la, ha, lb, hb]) for m in "QKV"},
                        }
                    )
    return pd.DataFrame(rows)
