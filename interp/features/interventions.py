"""Steer, clamp and ablate SAE features at their hook: one primitive, TransformerLens hooks, generation.

The primitive (``edit_activations``) moves the hook's activation ``x`` along decoder rows ``d_i``:
*add* ``x' = x + c d_i``; *clamp* to ``v``: ``x' = x + (v - f_i(x)) d_i``, so the SAE's reconstruction
error stays in ``x'`` and clamping to the current value is the identity; *ablate* is clamping to 0.
Each row of a batch gets its own list of edits (row 0 of ``generate`` none, row 1 the user's), so the
default and the edited runs share one forward pass, and a dose-response sweep is one batch.
``generate`` samples both continuations with the same uniform draws (inverse CDF from one seeded
generator), so they differ only where the edit changed the distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.features.dictionary import Dictionary, DictionaryError
from interp.models.layout import use_decode_layout
from interp.store.errors import InputError

KINDS = ("add", "clamp", "ablate")
# |coefficient| above this is refused: past it float32 logits of a real model saturate and the answer says
# nothing a smaller value would not; well inside it no finite input can make the residual overflow
MAX_COEFFICIENT = 1e4


class InterventionError(InputError):
    """An intervention that cannot be applied (unknown kind, feature out of range, bad value or positions)."""


@dataclass(frozen=True, eq=False)
class Intervention:
    """Edit feature ``feature`` of ``dictionary`` at hook ``hook``: ``kind`` add (``value`` = coefficient c),
    clamp (``value`` = v) or ablate; at ``positions`` of the model's input (0 = BOS) or, None, everywhere."""

    dictionary: Dictionary
    hook: str
    feature: int
    kind: str = "add"
    value: float = 0.0
    positions: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InterventionError(f"unknown intervention '{self.kind}'; use one of {', '.join(KINDS)}")
        check_feature(self.dictionary, self.feature)
        value = float(self.value)
        if not math.isfinite(value):
            raise InterventionError(f"the {'coefficient' if self.kind == 'add' else 'value'} is {value}; "
                                    "give a finite number")
        if abs(value) > MAX_COEFFICIENT:
            raise InterventionError(f"the {'coefficient' if self.kind == 'add' else 'value'} {value:g} is too large "
                                    f"(at most {MAX_COEFFICIENT:g} in size); use a smaller one")
        if self.kind == "ablate" and value != 0.0:
            raise InterventionError("ablate sets the feature to 0; use clamp to set another value")
        if self.positions is not None and (not self.positions or min(self.positions) < 0):
            raise InterventionError(f"positions must be non-negative token indices (0 = BOS); got {self.positions}")


def check_feature(dictionary: Dictionary, feature: int) -> None:
    if not 0 <= int(feature) < dictionary.d_sae:
        raise DictionaryError(f"feature {feature} is out of range: this SAE has {dictionary.d_sae} features "
                              f"(0 to {dictionary.d_sae - 1})")


def steer(dictionary: Dictionary, hook: str, feature: int, coefficient: float, positions=None) -> Intervention:
    return Intervention(dictionary, hook, int(feature), "add", coefficient, positions)


def clamp(dictionary: Dictionary, hook: str, feature: int, value: float, positions=None) -> Intervention:
    return Intervention(dictionary, hook, int(feature), "clamp", value, positions)


def ablate(dictionary: Dictionary, hook: str, feature: int, positions=None) -> Intervention:
    return Intervention(dictionary, hook, int(feature), "ablate", 0.0, positions)


def _position_mask(positions: tuple[int, ...] | None, offset: int, n: int, device) -> Tensor:
    if positions is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    absolute = torch.arange(offset, offset + n, device=device)
    return torch.isin(absolute, torch.tensor(positions, device=device))


def edit_activations(x: Float[Tensor, "batch pos *d"], rows: Sequence[Sequence[Intervention]],
                     offset: int = 0) -> Float[Tensor, "batch pos *d"]:
    """``x`` with each row's edits applied (one list of edits for all rows, or one per row); ``offset``:
    the absolute position of ``x``'s first position (generation with a key-value cache)."""
    if not any(rows):
        return x
    batch, n = x.shape[:2]
    if len(rows) not in (1, batch):
        raise InterventionError(f"{len(rows)} rows of interventions for a batch of {batch}")
    flat = x.reshape(batch, n, -1)
    groups: dict[int, tuple[Dictionary, list]] = {}
    for b, row in enumerate(rows):
        clamped = [(iv.feature, iv.positions) for iv in row if iv.kind != "add"]
        if len(set(clamped)) < len(clamped):
            raise InterventionError("a feature is clamped twice at the same positions; give each once")
        for iv in row:
            groups.setdefault(id(iv.dictionary), (iv.dictionary, []))[1].append((b, iv))
    for dictionary, items in groups.values():
        if dictionary.d_in != flat.shape[-1]:
            raise DictionaryError(f"the dictionary expects d_in={dictionary.d_in} but hook '{items[0][1].hook}' "
                                  f"has width {flat.shape[-1]}; use an SAE trained on that hook")
        features = sorted({iv.feature for _, iv in items})
        column = {f: j for j, f in enumerate(features)}
        coef = torch.zeros(batch, n, len(features), dtype=flat.dtype, device=flat.device)
        codes = None
        if any(iv.kind != "add" for _, iv in items):
            with torch.no_grad():
                codes = dictionary.encode(flat.reshape(batch * n, -1)).reshape(batch, n, -1)[..., features]
        for b, iv in items:
            rows_of = slice(None) if len(rows) == 1 else slice(b, b + 1)
            mask = _position_mask(iv.positions, offset, n, flat.device)
            j = column[iv.feature]
            if iv.kind == "add":
                coef[rows_of, mask, j] += iv.value
            else:
                coef[rows_of, mask, j] += iv.value - codes[rows_of][:, mask, j].to(flat.dtype)
        flat = flat + coef @ dictionary.W_dec[features].detach().to(flat.dtype)
    return flat.reshape(x.shape)


def edit_hooks(rows: Sequence[Sequence[Intervention]],
               offset: Callable[[], int] = lambda: 0) -> list[tuple[str, Callable]]:
    """TransformerLens forward hooks applying ``rows`` at every hook they name."""
    names = sorted({iv.hook for row in rows for iv in row})

    def hook_for(name: str) -> Callable:
        mine = [[iv for iv in row if iv.hook == name] for row in rows]
        return lambda activation, hook: edit_activations(activation, mine, offset())

    return [(name, hook_for(name)) for name in names]


def check_sites(model, interventions: Sequence[Intervention]) -> None:
    """Every intervention's hook exists in ``model`` and has its dictionary's width (a one-token forward)."""
    names = sorted({iv.hook for iv in interventions})
    unknown = [name for name in names if name not in model.hook_dict]
    if unknown:
        raise DictionaryError(f"the model has no hook '{unknown[0]}' (the SAE's hook); use an SAE trained on "
                              "this model")
    widths = {}
    hooks = [(name, lambda act, hook: widths.__setitem__(hook.name, act.reshape(*act.shape[:2], -1).shape[-1]))
             for name in names]
    with torch.no_grad():
        blocks_only = all(name.startswith(("blocks.", "hook_")) for name in names)  # skip the costly unembedding
        model.run_with_hooks(torch.zeros((1, 1), dtype=torch.long, device=model.cfg.device), fwd_hooks=hooks,
                             return_type=None, stop_at_layer=model.cfg.n_layers if blocks_only else None)
    for iv in interventions:
        if iv.dictionary.d_in != widths[iv.hook]:
            raise DictionaryError(f"the SAE expects width {iv.dictionary.d_in} but hook '{iv.hook}' of this model "
                                  f"has width {widths[iv.hook]}; use an SAE trained on this model at that hook")


def _finite(logits: Tensor) -> Tensor:
    if not torch.isfinite(logits).all():
        raise InterventionError("the intervention made the model's logits non-finite; use a smaller coefficient")
    return logits


def _unembed(model, resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos vocab"]:
    """Logits from the last block's residual, with ``W_U`` as stored: TransformerLens' ``Unembed`` copies
    ``W_U``'s transpose on every call, which at GPT-2's vocabulary was 60 % of a 32-token generation."""
    if getattr(model, "ln_final", None) is not None:
        resid = model.ln_final(resid)
    logits = resid @ model.W_U + model.b_U
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0)
    return _finite(cap * torch.tanh(logits / cap) if cap and cap > 0 else logits)


def intervened_logits(model, tokens: Int[Tensor, "batch pos"], rows: Sequence[Sequence[Intervention]]
                      ) -> Float[Tensor, "batch pos vocab"]:
    """The model's logits with ``rows`` applied (one row of edits for every prompt, or one per prompt)."""
    with torch.no_grad(), model.hooks(fwd_hooks=edit_hooks(rows)):
        return _unembed(model, model(tokens.to(model.cfg.device), stop_at_layer=model.cfg.n_layers))


def _pick(logits: Float[Tensor, "batch vocab"], temperature: float, u: Tensor) -> Int[Tensor, " batch"]:
    """Sample each row by inverse CDF at the same uniform ``u``; greedy at temperature 0."""
    if temperature == 0:
        return logits.argmax(-1)
    cdf = (logits.double() / temperature).softmax(-1).cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1:]).to(cdf.dtype)).clamp_max(logits.shape[-1] - 1).squeeze(-1)


def _last_logits(model, step: Int[Tensor, "batch pos"], cache) -> Float[Tensor, "batch vocab"]:
    """The next-token logits after ``step`` (one key-value cached forward); only the last position is
    unembedded."""
    resid = model(step, past_kv_cache=cache, attention_mask=torch.ones_like(step), stop_at_layer=model.cfg.n_layers)
    return _unembed(model, resid[:, -1:])[:, 0]


def sample(model, tokens: Int[Tensor, "batch pos"], rows: Sequence[Sequence[Intervention]], max_new_tokens: int,
           temperature: float = 1.0, seed: int = 0) -> tuple[Int[Tensor, "batch new"], Float[Tensor, "batch vocab"]]:
    """Continue every row of ``tokens`` with its edits (key-value cache, so each step runs only the new
    position; coupled draws); returns the new tokens and the logits after the prompt. The model's attention
    weights are re-stored once for decoding (``use_decode_layout``: same values, bit-identical outputs)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    use_decode_layout(model)
    device = model.cfg.device
    tokens = tokens.to(device)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, tokens.shape[0])
    position = [0]
    out, first = [], None
    with torch.no_grad(), model.hooks(fwd_hooks=edit_hooks(rows, lambda: position[0])):
        step_input = tokens
        for _ in range(max_new_tokens):
            logits = _last_logits(model, step_input, cache)
            first = logits if first is None else first
            position[0] += step_input.shape[1]
            u = torch.rand((1, 1), generator=generator, dtype=torch.float64).to(device)
            step_input = _pick(logits, temperature, u)[:, None]
            out.append(step_input)
    return torch.cat(out, 1), first


def kl_divergence(p_logits: Float[Tensor, "... vocab"], q_logits: Float[Tensor, "... vocab"]) -> Float[Tensor, " ..."]:
    """``KL(p || q)`` in nats from logits, in float64 (so an exact identity gives exactly 0)."""
    log_p, log_q = p_logits.double().log_softmax(-1), q_logits.double().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)


def logit_changes(default: Float[Tensor, " vocab"], edited: Float[Tensor, " vocab"], decode,
                  k: int = 10) -> pd.DataFrame:
    """The ``k`` tokens whose next-token logit rose most and the ``k`` that fell most."""
    change = (edited - default).float()
    up, down = change.topk(k), (-change).topk(k)
    ids = torch.cat([up.indices, down.indices])
    p, q = default.float().softmax(-1), edited.float().softmax(-1)
    return pd.DataFrame({"token_id": ids.cpu().numpy(), "token": [decode(int(t)) for t in ids],
                         "change": change[ids].cpu().numpy(), "default_logit": default[ids].float().cpu().numpy(),
                         "steered_logit": edited[ids].float().cpu().numpy(), "default_prob": p[ids].cpu().numpy(),
                         "steered_prob": q[ids].cpu().numpy(), "direction": ["up"] * k + ["down"] * k})


@dataclass
class Generation:
    """Default and intervened continuations of one prompt from the same seed, and how the edit moved the model."""

    prompt_ids: list[int]
    default_ids: list[int]
    steered_ids: list[int]
    default_text: str
    steered_text: str
    kl: np.ndarray  # KL(default || steered) of the next-token distribution at each position of prompt + default text
    logit_changes: pd.DataFrame  # next token after the prompt
    seed: int
    temperature: float


def prompt_tokens(model, prompt: str | Sequence[int] | Tensor, extra: int = 0) -> Int[Tensor, "1 pos"]:
    """BOS + the prompt's tokens (text or ids without BOS), refused when empty or longer than the context."""
    if isinstance(prompt, str):
        if not any(c.isprintable() and not c.isspace() for c in prompt):
            raise InputError("the prompt is empty (or only whitespace or non-printing characters); type some words")
        if model.tokenizer is None:
            raise InputError("this model has no tokenizer; pass token ids instead of text")
        ids = model.tokenizer.encode(prompt, add_special_tokens=False)
        bos = model.tokenizer.bos_token_id
    else:
        ids = [int(t) for t in torch.as_tensor(prompt).flatten().tolist()]
        bos = model.tokenizer.bos_token_id if model.tokenizer is not None else 0
    if not ids:
        raise InputError("the prompt has no tokens; type some words")
    if len(ids) + 1 + extra > model.cfg.n_ctx:
        raise InputError(f"the prompt has {len(ids) + 1} tokens (BOS included) and {extra} new ones were asked for: "
                         f"more than the model's context of {model.cfg.n_ctx}; shorten the prompt or ask for fewer "
                         "tokens")
    return torch.tensor([[bos, *ids]], dtype=torch.long)


def _decoder(model):
    return (lambda t: model.tokenizer.decode([t])) if model.tokenizer is not None else (lambda t: f"<{t}>")


def generate(model, prompt: str | Sequence[int] | Tensor, interventions: Sequence[Intervention],
             max_new_tokens: int = 32, temperature: float = 1.0, seed: int = 0, top_k: int = 10) -> Generation:
    """Default and intervened continuations of ``prompt`` (one batch of two, same draws), the next-token
    logit changes after the prompt, and the KL from the default distribution along the default text."""
    if not 1 <= int(max_new_tokens):
        raise InputError(f"max_new_tokens must be at least 1; got {max_new_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InputError(f"temperature must be a finite number >= 0; got {temperature}")
    check_sites(model, interventions)
    tokens = prompt_tokens(model, prompt, int(max_new_tokens))
    rows = [[], list(interventions)]
    new, first = sample(model, tokens.repeat(2, 1), rows, int(max_new_tokens), temperature, seed)
    default_full = torch.cat([tokens.to(new.device), new[:1]], 1)
    logits = intervened_logits(model, default_full.repeat(2, 1), rows)
    decode = _decoder(model)
    text = (lambda ids: model.tokenizer.decode(ids)) if model.tokenizer is not None else (
        lambda ids: " ".join(decode(t) for t in ids))
    default_ids, steered_ids = new[0].tolist(), new[1].tolist()
    return Generation(tokens[0].tolist(), default_ids, steered_ids, text(default_ids), text(steered_ids),
                      kl_divergence(logits[0], logits[1]).cpu().numpy(),
                      logit_changes(first[0], first[1], decode, top_k), int(seed), float(temperature))


TARGET_CANDIDATES = 50  # the default dose-response target is the first readable one of this many top promoted


def readable_token(ids: Sequence[int], decode) -> int:
    """The first of ``ids`` that decodes to visible text (not a lone byte of a multi-byte character, which
    decodes to U+FFFD); the first of all when none does."""
    return next((t for t in ids if decode(t).strip() and "\ufffd" not in decode(t)), ids[0])


def dose_response(model, prompt: str | Sequence[int] | Tensor, intervention: Intervention, values: Sequence[float],
                  target: int | None = None) -> pd.DataFrame:
    """For each value of ``intervention`` (one batch): the target token's next-token probability after the
    prompt (default: the feature's top promoted readable token when the SAE writes the residual, else the
    default argmax), the feature's own mean activation at its hook after the edit, and the KL from the default
    next-token distribution."""
    check_sites(model, [intervention])
    tokens = prompt_tokens(model, prompt)
    rows = [[]] + [[replace(intervention, value=float(v))] for v in values]
    dictionary, feature = intervention.dictionary, intervention.feature
    seen = {}

    def capture(activation, hook):
        with torch.no_grad():
            codes = dictionary.encode(activation.reshape(-1, dictionary.d_in))
        codes = codes.reshape(activation.shape[0], -1, dictionary.d_sae)
        seen["activation"] = codes[..., feature].float().mean(-1)

    with torch.no_grad(), model.hooks(fwd_hooks=[*edit_hooks(rows), (intervention.hook, capture)]):
        logits = _finite(model(tokens.repeat(len(rows), 1).to(model.cfg.device)))[:, -1]
    if target is None:
        target = int(logits[0].argmax())
        if dictionary.d_in == model.cfg.d_model:
            order = (dictionary.W_dec[feature].detach().to(model.W_U.dtype) @ model.W_U).argsort(descending=True)
            target = readable_token(order[:TARGET_CANDIDATES].tolist(), _decoder(model))
    probs = logits.float().softmax(-1)[:, target]
    return pd.DataFrame({"value": [float(v) for v in values], "probability": probs[1:].cpu().numpy(),
                         "default_probability": float(probs[0]), "activation": seen["activation"][1:].cpu().numpy(),
                         "kl": kl_divergence(logits[:1], logits[1:]).cpu().numpy(), "target": target,
                         "target_token": _decoder(model)(target), "kind": intervention.kind})
