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
import ctypes
import os
import weakref

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.circuits.attribution.graph import AttributionGraph
from interp.circuits.attribution.replacement import CleanState, check_transcoders, clean_state, frozen_forward
from interp.circuits.attribution.selection import PartialInfluence, next_features
from interp.store.errors import InputError

EINSUM_FLOATS = 1 << 22  # scratch per feature-edge contraction (16 MiB: below the batches' mmap threshold)


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


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter: allocations this large or larger get a mapping of their own
M_TRIM_THRESHOLD = -1  # free memory at the heap's top beyond this goes back to the system
KEPT_FORWARD_MMAP_THRESHOLD = 1 << 20
BATCH_MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold


def mmap_threshold(nbytes: int) -> bool:
    """Set glibc's mmap threshold and, as its dynamic mode does, the trim threshold to twice it (``mallopt``;
    False where there is no glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, nbytes)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 * nbytes))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def kept_forward_memory():
    """While the kept forward is built: freed heap memory handed back (``malloc_trim``), and every tensor of 1 MiB
    or more in a mapping of its own, so what the forward keeps is not scattered among the temporaries it frees
    (glibc's heap then held 2x the kept bytes: at 1,024 tokens of GPT-2-small shape the peak was 7.9 GiB against a
    5.8 GiB estimate). Afterwards the threshold is glibc's ceiling (32 MiB): the batches' gradients and scratch
    come from the heap again (with a 1 MiB threshold each paid its page faults and attribution ran at half speed).
    A no-op without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    mmap_threshold(KEPT_FORWARD_MMAP_THRESHOLD)
    try:
        yield
    finally:
        mmap_threshold(BATCH_MMAP_THRESHOLD)


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


class Targets:
    """Every target's layer and position (features first, sorted by layer, then logits: layer ``n_layers``, the
    last position) and, on demand for a batch, its readout vector: a feature's encoder column (read from its
    transcoder, not copied: ``n_features × d`` floats at a long prompt), a logit's demeaned unembedding."""

    def __init__(self, state: CleanState, logit_vectors: Tensor):
        layers, positions, ids = [], [], []
        for layer, (pos, feature_ids, _) in enumerate(state.features):
            if len(feature_ids):
                layers.append(torch.full_like(pos, layer))
                positions.append(pos)
                ids.append(feature_ids)
        n_pos = state.tokens.shape[0]
        layers.append(torch.full((len(logit_vectors),), state.n_layers, dtype=torch.long))
        positions.append(torch.full((len(logit_vectors),), n_pos - 1, dtype=torch.long))
        self.layers, self.positions = torch.cat(layers), torch.cat(positions)
        self.feature_ids = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
        self.logit_vectors = logit_vectors.float()
        self.n_features = len(self.feature_ids)
        self.encoders = {layer: tc.W_enc for layer, tc in state.transcoders.items()}

    def __len__(self) -> int:
        return len(self.layers)

    def vectors(self, index: Int[Tensor, " b"]) -> Float[Tensor, "b d"]:
        out = self.logit_vectors.new_empty(len(index), self.logit_vectors.shape[1])
        logits = index >= self.n_features
        out[logits] = self.logit_vectors[index[logits] - self.n_features]
        layers = self.layers[index]
        for layer in layers[~logits].unique().tolist():
            mask = (layers == layer) & ~logits
            out[mask] = self.encoders[layer][:, self.feature_ids[index[mask]]].T.float()
        return out


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
    """Bytes of the tensors autograd keeps for a ``batch``-row frozen forward (each storage counted once; tensors
    saved by branches of the graph that the forward then discards, such as the layer norms' own scale computation
    that the frozen scales replace, are not counted)."""
    saved: dict[int, weakref.ref] = {}

    def pack(t: Tensor):
        saved[t.untyped_storage().data_ptr()] = weakref.ref(t)
        return t

    leaves = _leaves(state, batch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        kept = frozen_forward(model, state, leaves[0], leaves[1:])
    alive = {ptr: ref() for ptr, ref in saved.items()}
    total = sum(t.untyped_storage().nbytes() for t in alive.values() if t is not None)
    del kept
    return total + sum(leaf.nbytes for leaf in leaves)


def saved_bytes_per_row(model, state: CleanState) -> int:
    """What one more batch row adds to the kept forward: measured as the difference of a two-row and a one-row
    forward, so weights and the frozen clean tensors (shared by every row) are not counted per row."""
    return max(0, saved_bytes(model, state, 2) - saved_bytes(model, state, 1))


def _leaves(state: CleanState, batch: int) -> list[Tensor]:
    tensors = [state.token_vectors] + state.rest
    return [t.float()[None].expand(batch, *t.shape).clone().requires_grad_(True) for t in tensors]


def memory_estimate(model, state: CleanState, n_features: int, n_logits: int, batch_size: int,
                    max_feature_nodes: int | None = None, per_row: int | None = None) -> dict[str, int]:
    """Bytes the attribution will hold (``benchmarks/bench_attribution.py`` compares ``total`` with the measured peak):
    the kept forward of ``batch_size`` rows (what autograd keeps, measured on a one- and a two-row forward), its
    outputs, the backward pass's working gradients (about two layers' share of the kept forward at a time), the
    gradients at the leaves, the contraction scratch, the source vectors, the clean run's kept tensors (mostly the
    frozen patterns) and the adjacency. Uncapped, the dense
    adjacency over every node (``4 n²``) is allocated first and ``total`` is the sum. Capped (``max_feature_nodes``
    below the number of active features), the target rows over every node (``edge_rows``: ``4 (cap + n_logits) n``,
    linear in the active features), the influence block (``4 (cap + n_logits)²``) and, once the rows are done and
    the forward is freed, the kept graph's adjacency; ``total`` is the larger of the two phases' sums."""
    n_pos, d = state.token_vectors.shape
    others = (state.n_layers + 1) * n_pos + n_logits
    n_nodes = n_features + others
    forward = batch_size * (saved_bytes_per_row(model, state) if per_row is None else per_row)
    widest = max([len(ids) for _, ids, _ in state.features] + [0])
    stream = 4 * (state.n_layers + 1) * batch_size * n_pos * d  # one [batch, pos, d] tensor per layer and the end
    run = {"forward": forward,
           "outputs": stream,  # each layer's transcoder input and the unembedding input, read by the targets
           "backward": 2 * forward // max(1, state.n_layers),  # working gradients: about two layers' share at a time
           "gradients": stream,  # at the leaves, held until the pass ends
           "scratch": 4 * min(EINSUM_FLOATS, batch_size * widest * d),  # one einsum's gathered gradients
           "sources": 4 * n_features * d,  # every active feature's activation times decoder row
           "clean_state": clean_state_bytes(state)}  # the frozen patterns and scales, the clean activations
    if max_feature_nodes is None or max_feature_nodes >= n_features:
        parts = {"adjacency": 4 * n_nodes * n_nodes, **run}
        parts["total"] = sum(parts.values())
        return parts
    n_rows, n_kept = max_feature_nodes + n_logits, max_feature_nodes + others
    parts = {"edge_rows": 4 * n_rows * n_nodes, "influence": 4 * n_rows * n_rows, **run,
             "adjacency": 4 * n_kept * n_kept}
    computing = parts["edge_rows"] + parts["influence"] + sum(run.values())
    packing = parts["edge_rows"] + parts["adjacency"] + parts["scratch"] + parts["sources"] + parts["clean_state"]
    parts["total"] = max(computing, packing)
    return parts


def clean_state_bytes(state: CleanState) -> int:
    """Bytes of what the clean run keeps for the replacement model (at long prompts mostly the patterns:
    ``4 n_layers n_heads pos²``)."""
    tensors = [*state.frozen.values(), *state.inputs, *state.mlp_outs, *state.rest, state.token_vectors]
    tensors += [t for feature in state.features for t in feature]
    return sum(t.nbytes for t in tensors)


def fitting_cap(model, state: CleanState, n_features: int, n_logits: int, batch: int, per_row: int, limit: int,
                below: int) -> str:
    """What to change when a graph does not fit: the largest power-of-two ``--max-feature-nodes`` under ``below``
    whose estimate fits ``limit`` (with the estimate), else the other levers."""
    cap = 1 << max(0, (below - 1).bit_length() - 1) if below > 1 else 0
    while cap >= 64:
        total = memory_estimate(model, state, n_features, n_logits, batch, cap, per_row)["total"]
        if total <= limit:
            return (f"--max-feature-nodes {cap} (max_feature_nodes={cap}) would need about {gib(total)}; or use a "
                    "shorter prompt or a smaller --batch-size")
        cap //= 2
    return ("use a shorter prompt, a smaller --batch-size, a smaller --max-feature-nodes, or transcoders with fewer "
            "active features")


def available_bytes(device: str) -> int:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gib(n: float) -> str:
    return f"{n / 2 ** 30:,.2f} GiB"


def attribute(model, transcoders, prompt: str | Tensor | list[int], *, max_n_logits: int = 10,
              desired_logit_prob: float = 0.95, batch_size: int = 64, max_bytes: int | None = None,
              max_feature_nodes: int | None = None, update_interval: int = 4, zero_bos: bool = True,
              on_estimate=None, on_progress=None) -> AttributionGraph:
    """The attribution graph of ``prompt``. ``transcoders``: a list (one per layer, None for a layer without) or
    a dict by layer. ``max_feature_nodes``: keep at most that many active features as nodes, the most influential
    on the logits (circuit-tracer's cap: re-ranked from the rows computed so far every ``update_interval``
    batches); the others' direct effects are summed per target in ``graph.dropped``. The memory estimate is
    computed first (``on_estimate`` receives it) and the run is refused when it exceeds ``max_bytes`` (default:
    the free memory). ``on_progress(done, total)`` is called after each batch of target rows."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise InputError(f"max_feature_nodes must be 0 or more (or None for every active feature), got "
                         f"{max_feature_nodes}")
    if update_interval < 1:
        raise InputError(f"update_interval must be at least 1, got {update_interval}")
    with frozen_parameters(model):
        return _attribute(model, transcoders, prompt, max_n_logits, desired_logit_prob, batch_size, max_bytes,
                          max_feature_nodes, update_interval, zero_bos, on_estimate, on_progress)


def _attribute(model, transcoders, prompt, max_n_logits, desired_logit_prob, batch_size, max_bytes,
               max_feature_nodes, update_interval, zero_bos, on_estimate, on_progress) -> AttributionGraph:
    tokens = prompt_tokens(model, prompt)
    by_layer, notes = check_transcoders(model, transcoders)
    by_layer = {layer: tc.to(device=model.cfg.device) for layer, tc in by_layer.items()}
    state = clean_state(model, tokens, by_layer, zero_bos)
    notes += [f"layer {l}: no feature is active on this prompt" for l in by_layer if not len(state.features[l][1])]
    logit_ids, logit_probs, logit_vectors = salient_logits(state.logits, model.W_U, max_n_logits, desired_logit_prob)
    targets = Targets(state, logit_vectors)
    n_features, n_pos, n_layers, n_logits = targets.n_features, len(tokens), state.n_layers, len(logit_ids)
    capped = max_feature_nodes is not None and max_feature_nodes < n_features
    batch = min(batch_size, len(targets))
    per_row = saved_bytes_per_row(model, state)
    estimate = memory_estimate(model, state, n_features, n_logits, batch, max_feature_nodes if capped else None,
                               per_row)
    if on_estimate is not None:
        on_estimate(estimate)
    limit = available_bytes(model.cfg.device) if max_bytes is None else max_bytes
    if estimate["total"] > limit:
        cap = f"at most {max_feature_nodes} of them as nodes" if capped else "every one a node"
        raise InputError(f"this graph ({n_features} active features x {n_pos} positions, {cap}) needs about "
                         f"{gib(estimate['total'])} (adjacency {gib(estimate['adjacency'])}, forward "
                         f"{gib(estimate['forward'])}) but {gib(limit)} is available; "
                         + fitting_cap(model, state, n_features, n_logits, batch, per_row, limit,
                                       max_feature_nodes if capped else n_features))
    n_nodes = n_features + (n_layers + 1) * n_pos + n_logits
    with kept_forward_memory() if str(model.cfg.device).startswith("cpu") else contextlib.nullcontext():
        compute = RowComputer(model, state, targets, batch, n_nodes)
    if capped:
        adjacency, selected, dropped = _capped_rows(compute, n_features, n_logits, n_nodes, max_feature_nodes,
                                                    batch, update_interval, logit_probs, on_progress)
        notes.append(f"{len(selected)} of the {n_features} active features are nodes (max_feature_nodes, chosen "
                     "by influence on the logits); the others' direct effects are left out of the edges and summed "
                     "per target in `dropped`")
    else:
        adjacency = torch.zeros(n_nodes, n_nodes)
        node_of_target = torch.cat([torch.arange(n_features), n_nodes - n_logits + torch.arange(n_logits)])
        for start in range(0, len(targets), batch):
            chunk = torch.arange(start, min(start + batch, len(targets)))
            adjacency[node_of_target[chunk]] = compute(chunk)
            if on_progress is not None:
                on_progress(int(chunk[-1]) + 1, len(targets))
        selected, dropped = torch.arange(n_features), torch.zeros(n_nodes)
    del compute  # frees the kept forward
    kept_targets = torch.cat([selected, n_features + torch.arange(n_logits)])
    kept_rows = torch.cat([torch.arange(len(selected)), adjacency.shape[0] - n_logits + torch.arange(n_logits)])
    readout_values = torch.zeros(adjacency.shape[0])
    constant = torch.zeros(adjacency.shape[0])
    clean_stack = [x for x in state.inputs] + [state.unembed_input]
    t_layers, t_positions = targets.layers[kept_targets], targets.positions[kept_targets]
    t_vectors = targets.vectors(kept_targets)
    readout_values[kept_rows] = torch.stack([(clean_stack[int(l)][int(p)] * v).sum()
                                             for l, p, v in zip(t_layers, t_positions, t_vectors)]).cpu()
    constant[kept_rows] = _constant(model, state, t_layers, t_positions, t_vectors).cpu()
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
        active[selected.to(active.device)].cpu(),
        activations[selected.to(activations.device)].cpu(),
        logit_ids.cpu(),
        logit_probs.cpu(),
        adjacency,
        readout_values,
        constant,
        logit_strings,
        {l: tc.hook_in for l, tc in by_layer.items()},
        notes,
        model.cfg.model_name,
        dropped=dropped,
        n_active_features=n_features,
    )


class RowComputer:
    """Adjacency rows for any batch of targets (indices into the target list: features, then logits), each batch
    one backward pass through one kept ``batch``-row frozen forward (retained for the next batch)."""

    def __init__(self, model, state: CleanState, targets: Targets, batch: int, n_nodes: int):
        self.targets, self.n_nodes, self.n_features = targets, n_nodes, targets.n_features
        self.n_pos, self.n_layers = state.tokens.shape[0], state.n_layers
        self.leaves = _leaves(state, batch)
        inputs, u = frozen_forward(model, state, self.leaves[0], self.leaves[1:])
        self.stack = inputs + [u]
        self.sources = _sources(state)

    def __call__(self, index: Int[Tensor, " b"]) -> Float[Tensor, "b n_nodes"]:
        nb = len(index)
        vectors = self.targets.vectors(index).to(self.stack[-1].device)
        readout = _readout(self.stack, self.targets.layers[index], self.targets.positions[index], vectors)
        grads = torch.autograd.grad(readout.sum(), self.leaves, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, self.leaves)]
        return _edge_rows(grads, self.sources, nb, self.n_nodes, self.n_features, self.n_pos, self.n_layers).cpu()


def _capped_rows(compute: RowComputer, n_features: int, n_logits: int, n_nodes: int, cap: int, batch: int,
                 update_interval: int, logit_probs: Tensor, on_progress) -> tuple[Tensor, Tensor, Tensor]:
    """The logit rows, then feature rows in order of their influence estimated from the rows so far, until
    ``cap`` features have rows; returns the square adjacency over the chosen features and every other node,
    the chosen features (ascending) and, per row, the summed edges from the features left out."""
    logit_nodes = n_nodes - n_logits + torch.arange(n_logits)
    rows = PartialInfluence(cap + n_logits, n_nodes, logit_nodes, logit_probs.cpu())
    total = cap + n_logits
    for chunk in torch.arange(n_features, n_features + n_logits).split(batch):
        rows.add(compute(chunk), logit_nodes[chunk - n_features])
    visited = torch.zeros(n_features, dtype=torch.bool)
    while int(visited.sum()) < cap:
        pending = next_features(rows.influence(), visited, min(update_interval * batch, cap - int(visited.sum())))
        for chunk in pending.split(batch):
            rows.add(compute(chunk), chunk)
            visited[chunk] = True
            if on_progress is not None:
                on_progress(rows.filled, total)
    del rows.block
    selected, left_out = visited.nonzero().flatten(), (~visited).nonzero().flatten()
    keep = torch.cat([selected, torch.arange(n_features, n_nodes)])
    new_index = torch.full((n_nodes,), -1, dtype=torch.long)
    new_index[keep] = torch.arange(len(keep))
    destination = new_index[rows.row_nodes[: rows.filled]]
    adjacency, dropped = torch.zeros(len(keep), len(keep)), torch.zeros(len(keep))
    step = max(1, EINSUM_FLOATS // max(1, n_nodes))
    for begin in range(0, rows.filled, step):
        block = rows.rows[begin : begin + step]
        adjacency[destination[begin : begin + step]] = block[:, keep]
        dropped[destination[begin : begin + step]] = block[:, left_out].sum(1)
    return adjacency, selected, dropped


def _sources(state: CleanState) -> dict:
    """Source vectors: per layer the active features' (positions, activation · decoder row) and the error vectors,
    and the token vectors."""
    features = []
    for layer, (pos, ids, values) in enumerate(state.features):
        tc = state.transcoders.get(layer)
        features.append((pos, tc.W_dec[ids].float().mul_(values[:, None])) if tc is not None and len(ids) else None)
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
