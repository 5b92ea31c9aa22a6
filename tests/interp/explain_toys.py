"""A planted dictionary whose latents are exact token rules, over a token stream where each rule can be checked.

Activations are ``[s * onehot(token), onehot(previous token)]`` (``s`` in [1, 3]); each latent is a ReLU
over them with hand-set weights, so it fires exactly where its rule holds:

- ``KING``: on the token ' king';
- ``CROWN_AFTER_THE``: on ' crown' right after ' the' (and not on ' crown' elsewhere);
- ``CAPITAL``: on every capitalised word;
- ``DEAD``: never;
- ``RARE``: on ' unicorn', which occurs only twice;
- ``OTHERS``: on one lowercase word each (so that baselines have other explanations to draw from).
"""

from __future__ import annotations

import numpy as np
import torch

from interp.cache.store import TokenChunk
from interp.features.dictionary import ReluDictionary

WORDS = ["<bos>", "\n", ".", ",", ";", "!", " 7", " 42",
         " King", " Queen", " Rome", " France", " Lord", " Duke", " Hamlet", " Mary",
         " the", " king", " crown", " of", " and", " to", " sword", " horse", " love", " night", " day", " fair",
         " sweet", " good", " noble", " man", " unicorn"]
V = len(WORDS)
ID = {w: i for i, w in enumerate(WORDS)}
CAPITALS = [i for i, w in enumerate(WORDS) if w.strip()[:1].isupper()]
KING, CROWN_AFTER_THE, CAPITAL, DEAD, RARE = 0, 1, 2, 3, 4
OTHER_WORDS = [" sword", " horse", " love", " night", " day"]
OTHERS = list(range(5, 5 + len(OTHER_WORDS)))
D_SAE, D_IN, SEQ = 5 + len(OTHER_WORDS), 2 * V, 48


def decode(token: int) -> str:
    return WORDS[token]


def RuleDictionary() -> ReluDictionary:
    """ReLU(x @ W_enc + b_enc): one latent per planted rule; its decoder rows are the first ``D_SAE`` unit axes."""
    W = torch.zeros(D_IN, D_SAE)
    b = torch.full((D_SAE,), -0.5)
    W[ID[" king"], KING] = 1.0
    W[ID[" crown"], CROWN_AFTER_THE], W[V + ID[" the"], CROWN_AFTER_THE] = 1.0, 4.0
    b[CROWN_AFTER_THE] = -4.5  # needs both: s + 4 - 4.5 > 0, while s - 4.5 < 0 and 4 - 4.5 < 0
    W[CAPITALS, CAPITAL] = 1.0
    b[DEAD] = -1.0
    W[ID[" unicorn"], RARE] = 1.0
    for latent, word in zip(OTHERS, OTHER_WORDS):
        W[ID[word], latent] = 1.0
    return ReluDictionary(W, b, torch.eye(D_SAE, D_IN))


def rule_stream(n_seq: int = 160, seed: int = 0, chunk_seqs: int = 16) -> list[TokenChunk]:
    """Random words (no ' unicorn'), ' the crown' planted often, ' crown' alone as often, two ' unicorn's."""
    rng = np.random.default_rng(seed)
    common = np.array([i for i in range(1, V) if WORDS[i] != " unicorn"])
    weight = np.where(np.isin(common, CAPITALS), 0.1 / len(CAPITALS), 0.9 / (len(common) - len(CAPITALS)))
    tokens = rng.choice(common, size=(n_seq, SEQ), p=weight)
    tokens[:, 0] = ID["<bos>"]
    for s in range(n_seq):
        for p in rng.choice(np.arange(2, SEQ), size=4, replace=False):
            tokens[s, p] = ID[" crown"]
            if rng.random() < 0.5:
                tokens[s, p - 1] = ID[" the"]
            elif tokens[s, p - 1] == ID[" the"]:
                tokens[s, p - 1] = ID[" of"]
    tokens[3, 10] = tokens[n_seq - 2, 20] = ID[" unicorn"]
    tokens = torch.as_tensor(tokens)
    strength = torch.as_tensor(1 + 2 * rng.random((n_seq, SEQ)), dtype=torch.float32)
    acts = torch.zeros(n_seq, SEQ, D_IN)
    acts.scatter_(2, tokens[..., None], strength[..., None])
    previous = torch.roll(tokens, 1, dims=1)
    acts[:, 1:].scatter_(2, V + previous[:, 1:, None], 1.0)
    chunks = []
    for start in range(0, n_seq, chunk_seqs):
        t = tokens[start:start + chunk_seqs]
        b = t.shape[0]
        chunks.append(TokenChunk(acts[start:start + b].reshape(b * SEQ, D_IN), t.reshape(-1),
                                 torch.arange(start, start + b).repeat_interleave(SEQ), torch.arange(SEQ).repeat(b)))
    return chunks


def top_ids(chunks: list[TokenChunk], dictionary: ReluDictionary, k: int = 20) -> torch.Tensor:
    """Each latent's top-k activating token ids (what the dashboards' ``top_token_ids`` hold), -1 padded."""
    acts = torch.cat([dictionary.encode(c.activations) for c in chunks])
    ids = torch.cat([c.token_ids for c in chunks])
    position = torch.cat([c.position for c in chunks])
    acts[position == 0] = 0
    values, rows = acts.topk(k, dim=0)
    return torch.where(values > 0, ids[rows], -1).T
