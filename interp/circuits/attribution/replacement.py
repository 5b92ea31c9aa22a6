"""The local replacement model of one prompt (Ameisen et al. 2025): attention patterns and normalisation
scales frozen at their values on the prompt, each MLP's output written as transcoder features + ``b_dec`` +
an error term (+ the transcoder's linear skip of its input). The model is then linear in the token vectors
and the MLP outputs, so direct effects are gradients.

``clean_state`` runs the model once and records what the replacement needs; ``frozen_forward`` runs the
frozen model on given token vectors and MLP outputs (batched), returning each layer's transcoder input and
the unembedding's input, from which targets are read.

As circuit-tracer: a token node is the token's embedding ``W_E[t]`` (the position embedding is a constant of
the prompt, like a bias), and the first position (BOS) has neither features nor error nodes: everything there
is the same for every prompt, so its MLP outputs are constants too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from interp.features.transcoder import Transcoder
from interp.store.errors import InputError


@dataclass
class CleanState:
    """The prompt's clean forward pass, as the replacement model needs it (batch dimension dropped)."""

    tokens: Int[Tensor, " pos"]
    transcoders: dict[int, Transcoder]
    input_hooks: list[str]  # per layer: where its transcoder reads (the MLP's input for a layer without one)
    output_hooks: list[str]  # per layer: the MLP's output hook
    inputs: list[Float[Tensor, "pos d"]]  # per layer, the transcoder input
    mlp_outs: list[Float[Tensor, "pos d"]]
    frozen: dict[str, Tensor]  # attention patterns and normalisation scales by hook name
    token_vectors: Float[Tensor, "pos d"]  # token embeddings W_E[t] (the position embedding is a constant)
    unembed_input: Float[Tensor, "pos d"]
    logits: Float[Tensor, " vocab"]  # at the last position
    features: list[tuple[Tensor, Tensor, Tensor]]  # per layer: (positions, feature ids, activations)
    rest: list[Float[Tensor, "pos d"]]  # per layer: MLP output minus the skip term (features + b_dec + error)
    zero_bos: bool = True  # position 0 has no feature and no error node (its MLP outputs are constants)

    @property
    def n_layers(self) -> int:
        return len(self.inputs)

    def errors(self, layer: int) -> Float[Tensor, "pos d"]:
        """What the layer's transcoder misses: ``rest − (Σ features + b_dec)``; the whole MLP output without one;
        0 at position 0 with ``zero_bos`` (there it is part of the constant, as circuit-tracer's)."""
        transcoder = self.transcoders.get(layer)
        if transcoder is None:
            error = self.rest[layer].clone()
        else:
            positions, ids, values = self.features[layer]
            reconstruction = transcoder.b_dec.expand_as(self.rest[layer]).clone()
            reconstruction.index_add_(0, positions, values[:, None] * transcoder.W_dec[ids])
            error = self.rest[layer] - reconstruction
        if self.zero_bos:
            error[0] = 0
        return error

    def constant_rest(self, layer: int) -> Float[Tensor, "pos d"]:
        """The layer's MLP output (minus skip) with every node at zero: ``b_dec``, and the whole of it at BOS."""
        transcoder = self.transcoders.get(layer)
        rest = (transcoder.b_dec.expand_as(self.rest[layer]).clone() if transcoder is not None
                else torch.zeros_like(self.rest[layer]))
        if self.zero_bos:
            rest[0] = self.rest[layer][0]
        return rest


def default_input_hook(model, layer: int) -> str:
    if model.cfg.normalization_type:
        return get_act_name("normalized", layer, "ln2")
    return get_act_name("resid_mid", layer)


def check_transcoders(model, transcoders) -> tuple[dict[int, Transcoder], list[str]]:
    """Transcoders by layer (a list or dict), checked against the model: hooks exist and belong to the layer,
    widths fit. Returns them and a note for each layer without one (its MLP becomes error nodes)."""
    items = dict(enumerate(transcoders)) if isinstance(transcoders, (list, tuple)) else dict(transcoders)
    items = {layer: tc for layer, tc in items.items() if tc is not None}
    if not items:
        raise InputError("no transcoders given: train some (`workbench train --target-hook ...`) or pass their folders")
    hooks = set(model.hook_dict)
    for layer, tc in items.items():
        if not 0 <= layer < model.cfg.n_layers:
            raise InputError(f"a transcoder for layer {layer}, but the model has layers 0..{model.cfg.n_layers - 1}")
        for name in (tc.hook_in, tc.hook_out):
            if name not in hooks or not name.startswith(f"blocks.{layer}."):
                raise InputError(f"layer {layer}'s transcoder hook '{name}' is not a hook of that layer of the model; "
                                 f"use one trained on blocks.{layer} (e.g. {default_input_hook(model, layer)} -> "
                                 f"blocks.{layer}.hook_mlp_out)")
        if tc.d_in != model.cfg.d_model or tc.d_out != model.cfg.d_model:
            raise InputError(f"layer {layer}'s transcoder maps {tc.d_in} -> {tc.d_out} but the model's d_model is "
                             f"{model.cfg.d_model}; use transcoders trained on this model")
        if not tc.hook_out.endswith("hook_mlp_out"):
            raise InputError(f"layer {layer}'s transcoder writes to '{tc.hook_out}'; attribution replaces MLPs, so "
                             "its output hook must be blocks.<L>.hook_mlp_out")
    notes = [f"layer {layer} has no transcoder: its MLP output is kept whole as error nodes"
             for layer in range(model.cfg.n_layers) if layer not in items]
    return items, notes


def _frozen_names(model) -> list[str]:
    return [name for name in model.hook_dict if name.endswith(("attn.hook_pattern", "hook_scale"))]


@torch.no_grad()
def clean_state(model, tokens: Int[Tensor, " pos"], transcoders: dict[int, Transcoder],
                zero_bos: bool = True) -> CleanState:
    """One clean forward pass; active features per layer (with ``zero_bos``, as circuit-tracer: no feature and no
    error at position 0, whose outsized activations are the same on every prompt and so are constants)."""
    n_layers = model.cfg.n_layers
    input_hooks = [
        transcoders[l].hook_in if l in transcoders else default_input_hook(model, l) for l in range(n_layers)
    ]
    output_hooks = [get_act_name("mlp_out", l) for l in range(n_layers)]
    names = set(input_hooks) | set(output_hooks) | set(_frozen_names(model)) | {"hook_embed", "hook_pos_embed"}
    record: dict[str, Tensor] = {}
    hooks = [
        (name, lambda act, hook: record.__setitem__(hook.name, act.detach()[0].clone()))
        for name in names
        if name in model.hook_dict
    ]
    captured = {}
    handle = model.unembed.register_forward_pre_hook(lambda module, args: captured.__setitem__("u", args[0].detach()))
    try:
        logits = model.run_with_hooks(tokens[None], fwd_hooks=hooks)
    finally:
        handle.remove()
    token_vectors = record["hook_embed"]
    inputs = [record[name].float() for name in input_hooks]
    mlp_outs = [record[name].float() for name in output_hooks]
    features, rest = [], []
    for layer in range(n_layers):
        tc = transcoders.get(layer)
        if tc is None:
            features.append((torch.zeros(0, dtype=torch.long),) * 2 + (torch.zeros(0),))
            rest.append(mlp_outs[layer])
            continue
        f = tc.encode(inputs[layer])
        if zero_bos:
            f[0] = 0
        positions, ids = f.nonzero(as_tuple=True)
        features.append((positions, ids, f[positions, ids]))
        rest.append(mlp_outs[layer] - tc.skip(inputs[layer]))
    frozen = {name: record[name] for name in _frozen_names(model)}
    return CleanState(
        tokens,
        transcoders,
        input_hooks,
        output_hooks,
        inputs,
        mlp_outs,
        frozen,
        token_vectors,
        captured["u"][0].float(),
        logits[0, -1].float(),
        features,
        rest,
        zero_bos,
    )


def frozen_forward(
    model, state: CleanState, token_vectors: Float[Tensor, "B pos d"], rest: list[Float[Tensor, "B pos d"]]
) -> tuple[list[Tensor], Tensor]:
    """The replacement model on a batch: token vectors in place of the token embeddings (the position embedding
    kept: a constant), each MLP's output replaced by ``rest[l] + skip_l(x_l)``, patterns and scales the clean ones.
    Returns the transcoder inputs ``x_l`` and the unembedding input, ``[B, pos, d]`` each, differentiable in
    ``token_vectors`` and ``rest``."""
    batch = token_vectors.shape[0]
    inputs: dict[int, Tensor] = {}

    def frozen(act, hook):
        return state.frozen[hook.name].expand(batch, *state.frozen[hook.name].shape).to(act.dtype)

    def keep_input(act, hook, layer):
        inputs[layer] = act
        return act

    def replace_out(act, hook, layer):
        tc = state.transcoders.get(layer)
        out = rest[layer] if tc is None or tc.W_skip is None else rest[layer] + tc.skip(inputs[layer])
        return out.to(act.dtype)

    hooks = [("hook_embed", lambda act, hook: token_vectors.to(act.dtype))]
    hooks += [(name, frozen) for name in state.frozen if not name.endswith("hook_pattern")]
    for layer in range(state.n_layers):
        hooks.append((state.input_hooks[layer], lambda act, hook, layer=layer: keep_input(act, hook, layer)))
        hooks.append((state.output_hooks[layer], lambda act, hook, layer=layer: replace_out(act, hook, layer)))
    with model.hooks(fwd_hooks=hooks), frozen_attention(model, state):  # no logits: [B, pos, vocab] is large
        residual = model(state.tokens[None].expand(batch, -1), stop_at_layer=state.n_layers)
        u = model.ln_final(residual) if model.cfg.normalization_type is not None else residual
    return [inputs[layer] for layer in range(state.n_layers)], u


@contextlib.contextmanager
def frozen_attention(model, state: CleanState):
    """Every attention layer computes ``z`` from its values and the clean pattern (``mix_values``) and writes
    ``z W_O + b_O``, skipping the scores, softmax and TransformerLens' per-row pattern copies (at 1,024 tokens
    each batch row's patterns are 0.6 GB at GPT-2-small shape, kept by autograd and copied again for the mix);
    each MLP whose output the frozen forward replaces is not run."""
    patched: list[tuple[torch.nn.Module, object]] = []  # (module, the instance forward it had, if any)

    def patch(module, forward) -> None:
        patched.append((module, module.__dict__.get("forward")))
        module.forward = forward

    try:
        for layer, block in enumerate(model.blocks):
            patch(block.attn, _frozen_attention_forward(block.attn, state.frozen[get_act_name("pattern", layer)]))
            if not state.input_hooks[layer].startswith(f"blocks.{layer}.mlp."):  # the MLP's output is replaced
                patch(block.mlp, _skipped_mlp_forward)
        yield
    finally:
        for module, before in reversed(patched):
            if before is None:
                del module.forward  # the class's forward again
            else:
                module.forward = before


def _skipped_mlp_forward(x: Tensor) -> Tensor:
    """An MLP whose output ``hook_mlp_out`` replaces: not computed (two thirds of a block's forward, and its
    ``[batch, pos, d_mlp]`` activations)."""
    return torch.zeros_like(x)


def _frozen_attention_forward(attn, pattern: Float[Tensor, "head q k"]):
    def forward(query_input, key_input, value_input, *args, **kwargs):
        _, _, v = attn.calculate_qkv_matrices(query_input, key_input, value_input)  # q, k unused: dropped
        if attn.cfg.clip_qkv is not None:
            v = v.clamp(min=-attn.cfg.clip_qkv, max=attn.cfg.clip_qkv)
        z = attn.hook_z(mix_values(pattern, v))
        return torch.einsum("bqhd,hdm->bqm", z, attn.W_O.to(z.dtype)) + attn.b_O.to(z.dtype)

    return forward


def mix_values(pattern: Float[Tensor, "head q k"],
               v: Float[Tensor, "B k kv_head d_head"]) -> Float[Tensor, "B q head d_head"]:
    """``z[b, q, h] = Σ_k pattern[h, q, k] v[b, k, h]`` with one pattern for the whole batch: one matmul per head
    over every row's values, so autograd keeps the pattern once instead of once per batch row. Grouped-query
    values are repeated to the heads."""
    B, k, kv_heads, d_head = v.shape
    heads = pattern.shape[0]
    if kv_heads != heads:
        v = v.repeat_interleave(heads // kv_heads, dim=2)
    stacked = v.permute(2, 1, 0, 3).reshape(heads, k, B * d_head)  # [head, k, B·d_head]
    z = torch.bmm(pattern.to(v.dtype), stacked)  # [head, q, B·d_head]
    return z.reshape(heads, -1, B, d_head).permute(2, 1, 0, 3)
