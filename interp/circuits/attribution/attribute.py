"""``attribute``: the attribution graph of one prompt, every edge an exact direct effect (circuit-tracer's
``attribute``, on our TransformerLens models and transcoders).

For a batch of target nodes (feature pre-activations ``x_l · w_enc``, demeaned logits ``u · (W_U[:, t] − mean)``)
one backward pass through the frozen replacement model gives the gradient of each target's readout with
respect to the token vectors and every layer's MLP output; contracting it with a source's vector (its
activation times its decoder row, its error vector, its token vector) gives that edge. The batch rows run
through one forward (batch rows never interact) kept for every backward pass.
"""

from __future__ import annotations

import contextlib
import os

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.circuits.attribution.graph import AttributionGraph
from interp.circuits.attribution.replacement import CleanState, check_transcoders, clean_state, frozen_forward
from interp.store.errors import InputError

EINSUM_FLOATS = 1 << 23  # scratch per feature-edge contraction (32 MiB)


def salient_logits(logits: Float[Tensor, " vocab"], W_U: Float[Tensor, "d vocab"], max_n_logits: int = 10,
                   desired_logit_prob: float = 0.95) -> tuple[Tensor, Tensor, Tensor]:
    """The most probable tokens until their cumulative probability reaches ``desired_logit_prob`` (at most
    ``max_n_logits``), their probabilities and demeaned unembedding columns (circuit-tracer's choice)."""
    probs = torch.softmax(logits.float(), dim=-1)
    top_p, top_ids = torch.topk(probs, min(max_n_logits, probs.shape[0]))
    cutoff = int(torch.searchsorted(torch.cumsum(top_p, 0), torch.tensor(desired_logit_prob))) + 1
    top_p, top_ids = top_p[:cutoff], top_ids[:cutoff]
    W_U = W_U.detach()
    vectors = (W_U[:, top_ids] - W_U.mean(dim=1, keepdim=True)).T.float()
    return top_ids, top_p, vectors


@contextlib.contextmanager
def frozen_parameters(model):
    """No parameter gradients while attributing (autograd then keeps only what the node gradients need)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def prompt_tokens(model, prompt: str | Tensor | list[int]) -> Int[Tensor, " pos"]:
    """The prompt as token ids (BOS prepended as the model expects), checked against the context."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InputError("the prompt is empty; give some text to attribute")
        tokens = model.to_tokens(prompt, truncate=False)[0]
    else:
        tokens = torch.as_tensor(prompt, dtype=torch.long).flatten()
    if tokens.numel() < 2:
        raise InputError("the prompt has fewer than 2 tokens; give a longer one")
    if tokens.numel() > model.cfg.n_ctx:
        raise InputError(f"the prompt is {tokens.numel()} tokens but the model's context is {model.cfg.n_ctx}; "
                         "shorten it")
    return tokens.to(model.cfg.device)


def _targets(state: CleanState, logit_vectors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every target's (layer, position, readout vector): features (layer l: its encoder column), then logits
    (layer n_layers: the unembedding input at the last position)."""
    layers, positions, vectors = [], [], []
    for layer, (pos, ids, _) in enumerate(state.features):
        if len(ids):
            layers.append(torch.full_like(pos, layer))
            positions.append(pos)
            vectors.append(state.transcoders[layer].W_enc[:, ids].T)
    n_pos = state.tokens.shape[0]
    layers.append(torch.full((len(logit_vectors),), state.n_layers, dtype=torch.long))
    positions.append(torch.full((len(logit_vectors),), n_pos - 1, dtype=torch.long))
    vectors.append(logit_vectors)
    return torch.cat(layers), torch.cat(positions), torch.cat(vectors).float()


def _readout(stack: list[Tensor], layers: Tensor, positions: Tensor, vectors: Tensor) -> Float[Tensor, " B"]:
    """Row b's target read from its own batch row: ``stack[layers[b]][b, positions[b]] · vectors[b]``."""
    out = vectors.new_zeros(len(layers))
    rows = torch.arange(len(layers), device=vectors.device)
    for layer in layers.unique().tolist():
        mask = layers == layer
        out[mask] = (stack[layer][rows[mask], positions[mask]] * vectors[mask]).sum(-1)
    return out


def _constant(model, state: CleanState, layers: Tensor, positions: Tensor, vectors: Tensor) -> Tensor:
    """Each target's value with every node at zero (token vectors 0, MLP outputs ``b_dec`` + skip, the BOS
    position's whole): its bias part, position embeddings included."""
    n_pos, d = state.token_vectors.shape
    rest = [state.constant_rest(l)[None] for l in range(state.n_layers)]
    with torch.no_grad():
        inputs, u = frozen_forward(model, state, torch.zeros(1, n_pos, d), rest)
    stack = [x[0] for x in inputs] + [u[0]]
    return torch.cat([(stack[int(l)][int(p)] * v).sum()[None] for l, p, v in zip(layers, positions, vectors)]) \
        if len(layers) else torch.zeros(0)


def saved_bytes(model, state: CleanState, batch: int) -> int:
    """Bytes of the tensors autograd keeps for a ``batch``-row frozen forward (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    leaves = _leaves(state, batch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        frozen_forward(model, state, leaves[0], leaves[1:])
    return sum(seen.values()) + sum(leaf.nbytes for leaf in leaves)


def saved_bytes_per_row(model, state: CleanState) -> int:
    """What one more batch row adds to the kept forward: measured as the difference of a two-row and a one-row
    forward, so weights and the frozen clean tensors (shared by every row) are not counted per row."""
    return max(0, saved_bytes(model, state, 2) - saved_bytes(model, state, 1))


def _leaves(state: CleanState, batch: int) -> list[Tensor]:
    tensors = [state.token_vectors] + state.rest
    return [t.float()[None].expand(batch, *t.shape).clone().requires_grad_(True) for t in tensors]


def memory_estimate(model, state: CleanState, n_features: int, n_logits: int, batch_size: int) -> dict[str, int]:
    """Bytes the attribution will hold: the dense adjacency, the kept forward of ``batch_size`` rows, the
    backward pass's working gradients (as large again), the gradients at the leaves and the contraction scratch
    (``benchmarks/bench_attribution.py`` compares the total with the measured peak)."""
    n_pos, d = state.token_vectors.shape
    n_nodes = n_features + (state.n_layers + 1) * n_pos + n_logits
    forward = batch_size * saved_bytes_per_row(model, state)
    parts = {"adjacency": 4 * n_nodes * n_nodes,
             "forward": forward,
             "backward": forward,  # a backward pass materialises a gradient about as large as what the forward kept
             "gradients": 2 * 4 * (state.n_layers + 1) * batch_size * n_pos * d,
             "scratch": 4 * EINSUM_FLOATS}
    parts["total"] = sum(parts.values())
    return parts


def available_bytes(device: str) -> int:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gib(n: float) -> str:
    return f"{n / 2 ** 30:,.2f} GiB"


def attribute(model, transcoders, prompt: str | Tensor | list[int], *, max_n_logits: int = 10,
              desired_logit_prob: float = 0.95, batch_size: int = 64, max_bytes: int | None = None,
              zero_bos: bool = True, on_estimate=None, on_progress=None) -> AttributionGraph:
    """The attribution graph of ``prompt`` (unpruned, dense). ``transcoders``: a list (one per layer, None for
    a layer without) or a dict by layer. The memory estimate is computed first (``on_estimate`` receives it)
    and the run is refused when it exceeds ``max_bytes`` (default: the free memory). ``on_progress(done, total)``
    is called after each batch of target rows."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    with frozen_parameters(model):
        return _attribute(model, transcoders, prompt, max_n_logits, desired_logit_prob, batch_size, max_bytes,
                          zero_bos, on_estimate, on_progress)


def _attribute(model, transcoders, prompt, max_n_logits, desired_logit_prob, batch_size, max_bytes, zero_bos,
               on_estimate, on_progress) -> AttributionGraph:
    tokens = prompt_tokens(model, prompt)
    by_layer, notes = check_transcoders(model, transcoders)
    by_layer = {layer: tc.to(device=model.cfg.device) for layer, tc in by_layer.items()}
    state = clean_state(model, tokens, by_layer, zero_bos)
    notes += [f"layer {l}: no feature is active on this prompt" for l in by_layer if not len(state.features[l][1])]
    logit_ids, logit_probs, logit_vectors = salient_logits(state.logits, model.W_U, max_n_logits, desired_logit_prob)
    layers, positions, vectors = _targets(state, logit_vectors)
    n_features, n_pos, n_layers = len(layers) - len(logit_ids), len(tokens), state.n_layers
    estimate = memory_estimate(model, state, n_features, len(logit_ids), min(batch_size, len(layers)))
    if on_estimate is not None:
        on_estimate(estimate)
    limit = available_bytes(model.cfg.device) if max_bytes is None else max_bytes
    if estimate["total"] > limit:
        raise InputError(f"this graph ({n_features} active features x {n_pos} positions) needs about "
                         f"{gib(estimate['total'])} (adjacency {gib(estimate['adjacency'])}, forward "
                         f"{gib(estimate['forward'])}) but {gib(limit)} is available; use a shorter prompt, a "
                         "smaller --batch-size, or transcoders with fewer active features")
    n_nodes = n_features + (n_layers + 1) * n_pos + len(logit_ids)
    adjacency = torch.zeros(n_nodes, n_nodes)
    rows = torch.cat([torch.arange(n_features), n_nodes - len(logit_ids) + torch.arange(len(logit_ids))])
    batch = min(batch_size, len(layers))
    leaves = _leaves(state, batch)
    inputs, u = frozen_forward(model, state, leaves[0], leaves[1:])
    stack = inputs + [u]
    sources = _sources(state)
    for start in range(0, len(layers), batch):
        chunk = slice(start, min(start + batch, len(layers)))
        nb = chunk.stop - chunk.start
        readout = _readout(stack, layers[chunk], positions[chunk], vectors[chunk].to(u.device))
        grads = torch.autograd.grad(readout.sum(), leaves, retain_graph=chunk.stop < len(layers), allow_unused=True)
        grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)]
        adjacency[rows[chunk]] = _edge_rows(grads, sources, nb, n_nodes, n_features, n_pos, n_layers).cpu()
        if on_progress is not None:
            on_progress(chunk.stop, len(layers))
    readout_values = torch.zeros(n_nodes)
    constant = torch.zeros(n_nodes)
    clean_stack = [x for x in state.inputs] + [state.unembed_input]
    readout_values[rows] = torch.stack([(clean_stack[int(l)][int(p)] * v).sum()
                                        for l, p, v in zip(layers, positions, vectors)]).cpu()
    constant[rows] = _constant(model, state, layers, positions, vectors).cpu()
    active = torch.cat([torch.stack([torch.full_like(pos, l), pos, ids], 1) for l, (pos, ids, _) in
                        enumerate(state.features)]) if n_features else torch.zeros(0, 3, dtype=torch.long)
    activations = torch.cat([values for _, _, values in state.features]) if n_features else torch.zeros(0)
    token_strings = ([model.tokenizer.decode([int(t)]) for t in tokens] if model.tokenizer
                     else [str(int(t)) for t in tokens])
    logit_strings = [model.tokenizer.decode([int(t)]) for t in logit_ids] if model.tokenizer else []
    text = prompt if isinstance(prompt, str) else "".join(token_strings)
    return AttributionGraph(
        text,
        tokens.cpu(),
        token_strings,
        n_layers,
        active.cpu(),
        activations.cpu(),
        logit_ids.cpu(),
        logit_probs.cpu(),
        adjacency,
        readout_values,
        constant,
        logit_strings,
        {l: tc.hook_in for l, tc in by_layer.items()},
        notes,
        model.cfg.model_name,
    )


def _sources(state: CleanState) -> dict:
    """Source vectors: per layer the active features' (positions, activation · decoder row) and the error vectors,
    and the token vectors."""
    features = []
    for layer, (pos, ids, values) in enumerate(state.features):
        tc = state.transcoders.get(layer)
        features.append((pos, values[:, None] * tc.W_dec[ids]) if tc is not None and len(ids) else None)
    errors = [state.errors(layer) for layer in range(state.n_layers)]
    return {"features": features, "errors": errors, "tokens": state.token_vectors.float()}


def _edge_rows(
    grads: list[Tensor], sources: dict, nb: int, n_nodes: int, n_features: int, n_pos: int, n_layers: int
) -> Float[Tensor, "nb n_nodes"]:
    """One batch of adjacency rows from the gradients at the token vectors (``grads[0]``) and MLP outputs."""
    out = grads[0].new_zeros(nb, n_nodes)
    column = 0
    for layer in range(n_layers):
        g = grads[1 + layer][:nb]
        item = sources["features"][layer]
        if item is not None:
            pos, dec = item
            step = max(1, EINSUM_FLOATS // max(1, nb * dec.shape[1]))
            for begin in range(0, len(pos), step):
                end = min(begin + step, len(pos))
                out[:, column + begin : column + end] = torch.einsum("bnd,nd->bn", g[:, pos[begin:end]], dec[begin:end])
            column += len(pos)
        error_start = n_features + layer * n_pos
        out[:, error_start : error_start + n_pos] = (g * sources["errors"][layer]).sum(-1)
    token_start = n_features + n_layers * n_pos
    out[:, token_start : token_start + n_pos] = (grads[0][:nb] * sources["tokens"]).sum(-1)
    return out
