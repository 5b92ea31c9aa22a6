"""Hand-set and random toy models with known circuits, shared by the circuit tests."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

VOCAB, N_CTX, D_HEAD = 8, 12, 12
T, P, TP, O, J = slice(0, 8), slice(8, 20), slice(20, 28), slice(28, 36), slice(36, 40)


def planted_induction_model(seed: int = 0) -> HookedTransformer:
    """Attention-only 2x2 model with hand-set weights and disjoint residual subspaces.

    L0H0 copies the previous token (position QK) into subspace TP; L1H0 attends where TP matches
    its own token (token QK with distinct gains, so each match is carried by one singular
    component) and copies that token to the logits. L0H1 and L1H1 are random heads that write
    only into J, which nothing reads. Planted head-to-head edge: L0H0 -> L1H0 on the key side.
    """
    cfg = HookedTransformerConfig(n_layers=2, d_model=40, n_ctx=N_CTX, d_head=D_HEAD, n_heads=2, d_vocab=VOCAB,
                                  attn_only=True, normalization_type=None, act_fn="relu", seed=seed)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[:, T] = eye(VOCAB)
        model.W_pos[:, P] = eye(N_CTX)
        gains = 40 * (1 + 0.05 * torch.arange(N_CTX))
        a0 = model.blocks[0].attn
        a0.W_Q[0, P, :] = torch.diag(gains)  # query at position i -> e_i
        a0.W_K[0, P, :] = torch.diag(torch.ones(N_CTX - 1), diagonal=1)  # key at position j -> e_{j+1}
        a0.W_V[0, T, :VOCAB] = eye(VOCAB)
        a0.W_O[0, :VOCAB, TP] = eye(VOCAB)
        a0.W_Q[1, :32] = torch.randn(32, D_HEAD, generator=g)
        a0.W_K[1, :32] = torch.randn(32, D_HEAD, generator=g)
        a0.W_V[1, :32] = torch.randn(32, D_HEAD, generator=g)
        a0.W_O[1, :, J] = torch.randn(D_HEAD, 4, generator=g)
        a1 = model.blocks[1].attn
        a1.W_Q[0, T, :VOCAB] = torch.diag(30 * (1 + 0.1 * torch.arange(VOCAB)))
        a1.W_K[0, TP, :VOCAB] = eye(VOCAB)
        a1.W_V[0, T, :VOCAB] = eye(VOCAB)
        a1.W_O[0, :VOCAB, O] = eye(VOCAB)
        a1.W_Q[1, P] = torch.randn(N_CTX, D_HEAD, generator=g)
        a1.W_K[1, P] = torch.randn(N_CTX, D_HEAD, generator=g)
        a1.W_V[1, P] = torch.randn(N_CTX, D_HEAD, generator=g)
        a1.W_O[1, :, J] = torch.randn(D_HEAD, 4, generator=g)
        model.W_U[O, :] = 10 * eye(VOCAB)
    return model.eval()


def planted_prompts(n: int = 16, half: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS(0) + a span of distinct tokens + the span again; destination mask on the second copy."""
    g = torch.Generator().manual_seed(seed)
    spans = torch.stack([torch.randperm(VOCAB - 1, generator=g)[:half] + 1 for _ in range(n)])
    tokens = torch.cat([torch.zeros(n, 1, dtype=torch.long), spans, spans], dim=1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, half + 1:] = True
    return tokens, mask


def random_ln_model(seed: int = 0, **overrides) -> HookedTransformer:
    """A small random LN model with non-trivial LN weights and Q/K biases."""
    cfg = dict(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=50, d_mlp=64, act_fn="gelu",
               normalization_type="LN", seed=seed)
    model = HookedTransformer(HookedTransformerConfig(**(cfg | overrides)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln1.w", "ln2.w", "ln_final.w")):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(("ln1.b", "b_Q", "b_K", "b_O", "ln_final.b")):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


INDUCTION_TOY = dict(n_layers=2, d_model=64, n_ctx=33, d_head=16, n_heads=4, d_vocab=67, attn_only=True,
                     normalization_type="LN", act_fn="relu")
INDUCTION_TOY_WEIGHTS = __import__("pathlib").Path(__file__).parent / "data" / "induction_toy.safetensors"


def train_induction_toy(steps: int = 3000, seed: int = 0) -> HookedTransformer:
    """Reproduce ``data/induction_toy.safetensors`` (about 2.5 min on one CPU thread).

    Attention-only 2x4 model trained only on BOS + random prefix + span + span with the span length
    and prefix varied per batch (so no fixed positional offset solves it); loss on the second copy.
    It learns a previous-token head in layer 0 and induction in layer 1: a learned, not planted, circuit.
    """
    from interp.circuits.attention import repeated_random_tokens

    model = HookedTransformer(HookedTransformerConfig(**INDUCTION_TOY, seed=seed))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        half = int(torch.randint(6, 17, (1,), generator=g))
        prefix = int(torch.randint(0, 32 - 2 * half, (1,), generator=g)) if 32 - 2 * half > 0 else 0
        rep = repeated_random_tokens(64, half, 3, 67, 0, seed=step + 100)
        tokens = torch.cat([rep[:, :1], torch.randint(3, 67, (64, prefix), generator=g), rep[:, 1:]], 1)
        start = 1 + prefix + half
        loss = -model(tokens)[:, start:-1].log_softmax(-1).gather(-1, tokens[:, start + 1:, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def induction_toy() -> HookedTransformer:
    """The trained induction toy from its committed weights."""
    from safetensors.torch import load_file

    model = HookedTransformer(HookedTransformerConfig(**INDUCTION_TOY, seed=0))
    model.load_state_dict(load_file(str(INDUCTION_TOY_WEIGHTS)))
    return model.eval()


@__import__("pytest").fixture(autouse=True, scope="module")
def one_thread():
    """Circuit tests run many tiny ops, which stall under thread contention on a shared CPU: use one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
