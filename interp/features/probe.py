"""Probe a text: which features of each SAE fire on each of its tokens, and how strongly.

The text is tokenised as the activation cache does it (BOS, then the tokenizer's ids without special
tokens), so a probe of a cached sequence gives the cached activations' codes. A text longer than the
model's context is read in windows that overlap by ``overlap`` tokens; each token's codes come from the
first window holding it with at least ``overlap`` tokens before it (the first window: from its start), and
the result says so. Past ``max_tokens`` the text is cut, with a note. Codes are kept sparse
(``[tokens, d_sae]`` CSR), so a long text and a wide SAE stay small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.cache.store import CacheFolder
from interp.features.dictionary import Dictionary, DictionaryError
from interp.store.analysis_folder import AnalysisFolder
from interp.store.errors import InputError
from interp.store.run_folder import RunFolder

MAX_TOKENS = 8192  # bounded work for a pasted book: about 64 windows of the demo model's context
CHARS_PER_TOKEN = 16  # only this many characters per allowed token are tokenised (a 1 MB paste stays cheap)
COLUMNS = ["position", "token", "rank", "feature", "activation", "share", "label", "logit_effect"]


@dataclass
class ProbeResult:
    """Per token (BOS excluded): ids, strings and each SAE's sparse codes; the windows read and notes."""

    token_ids: list[int]
    tokens: list[str]
    codes: dict[str, sp.csr_matrix]  # SAE name -> [tokens, d_sae]
    labels: dict[str, Sequence[str] | None]
    logit_effects: dict[str, sp.csr_matrix | None]  # direct effect of each firing feature on the next token's logit
    next_ids: list[int]  # the token after each one (the model's top prediction after the last)
    windows: list[tuple[int, int]]  # token ranges [start, end) fed to the model, BOS prepended to each
    notes: list[str] = field(default_factory=list)

    def feature(self, name: str, feature: int) -> np.ndarray:
        """One feature's activation on every token."""
        codes = self.codes[name]
        if not 0 <= feature < codes.shape[1]:
            raise DictionaryError(f"feature {feature} is out of range: this SAE has {codes.shape[1]} features "
                                  f"(0 to {codes.shape[1] - 1})")
        return codes[:, feature].toarray().ravel()

    def _row(self, name: str, position: int, k: int | None, by: str = "activation") -> list[dict]:
        codes, effects, labels = self.codes[name], self.logit_effects[name], self.labels[name]
        begin, end = codes.indptr[position], codes.indptr[position + 1]
        feats, acts = codes.indices[begin:end], codes.data[begin:end]
        effect = _row_values(effects, position, feats) if effects is not None else np.full(len(feats), np.nan)
        total = float(acts.sum())
        order = np.argsort(-(np.abs(effect) if by == "logit_effect" else acts), kind="stable")[:k]
        return [{"position": position, "token": self.tokens[position], "rank": rank, "feature": int(feats[j]),
                 "activation": float(acts[j]), "share": float(acts[j]) / total if total > 0 else 0.0,
                 "label": labels[feats[j]] if labels is not None else None, "logit_effect": float(effect[j])}
                for rank, j in enumerate(order)]

    def top_features(self, name: str, k: int = 5) -> pd.DataFrame:
        """Per token its ``k`` most active features: activation, share of the token's total, label, and direct
        effect on the next token's logit."""
        rows = [row for position in range(len(self.tokens)) for row in self._row(name, position, k)]
        return pd.DataFrame(rows, columns=COLUMNS)

    def token_features(self, name: str, position: int, by: str = "activation", k: int | None = None) -> pd.DataFrame:
        """One token's firing features ranked by activation or by (absolute) direct effect on the next logit."""
        if not 0 <= position < len(self.tokens):
            raise InputError(f"token {position} is out of range: the text has {len(self.tokens)} tokens")
        return pd.DataFrame(self._row(name, position, k, by), columns=COLUMNS)


def _row_values(matrix: sp.csr_matrix, position: int, columns: np.ndarray) -> np.ndarray:
    """``matrix[position, columns]`` (0 where nothing is stored) read from the row's CSR arrays: scipy's
    fancy indexing costs about 1 ms a call, which for the 8,192 tokens of a long text was 15 s."""
    begin, end = matrix.indptr[position], matrix.indptr[position + 1]
    cols, vals = matrix.indices[begin:end], matrix.data[begin:end]
    if not len(cols):
        return np.zeros(len(columns), dtype=matrix.dtype)
    order = np.argsort(cols, kind="stable")
    cols, vals = cols[order], vals[order]
    where = np.minimum(np.searchsorted(cols, columns), len(cols) - 1)
    return np.where(cols[where] == columns, vals[where], 0).astype(matrix.dtype)


def text_tokens(model, text: str, max_tokens: int = MAX_TOKENS) -> tuple[list[int], list[str]]:
    """The text's token ids as the cache tokenises it (no BOS), cut at ``max_tokens`` with a note."""
    if not any(c.isprintable() and not c.isspace() for c in text):
        raise InputError("the text is empty (or only whitespace or non-printing characters); type or paste "
                         "some words to probe")
    if model.tokenizer is None:
        raise InputError("this model has no tokenizer; probe token ids instead of text")
    notes = []
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) > limit:
        notes.append(f"the text has {len(text):,} characters; only the first {limit:,} were tokenised")
        text = text[:limit]
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) > max_tokens:
        notes.append(f"the text has {len(ids):,} tokens; probed the first {max_tokens:,} (probe the rest separately)")
        ids = ids[:max_tokens]
    return ids, notes


def windows_of(n_tokens: int, body: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(start, end, keep_from)`` token ranges of at most ``body`` tokens overlapping by ``overlap``; each
    token is taken from the window with ``keep_from <= index``, the first that reads it with ``overlap``
    tokens of left context."""
    if not 0 <= overlap < body:
        raise InputError(f"the overlap ({overlap}) must be at least 0 and below the window's {body} tokens")
    out, start = [], 0
    while True:
        end = min(start + body, n_tokens)
        out.append((start, end, start if not out else start + overlap))
        if end == n_tokens:
            return out
        start = end - overlap


def _unembed_effect(model, directions: Float[Tensor, "m d"], scale: Float[Tensor, " m"],
                    targets: Int[Tensor, " m"]) -> Float[Tensor, " m"]:
    """Direct-path logit of ``targets`` from adding ``directions`` to the final residual (the final layer
    norm's scale frozen at its value on the text)."""
    kind = model.cfg.normalization_type
    if kind in ("LN", "LNPre"):
        directions = directions - directions.mean(-1, keepdim=True)
    directions = directions / scale[:, None]
    w = getattr(getattr(model, "ln_final", None), "w", None)
    if w is not None:
        directions = directions * w
    return (directions * model.W_U.T[targets]).sum(-1)


@torch.no_grad()
def probe_tokens(model, dictionaries: Mapping[str, Dictionary], token_ids: Sequence[int],
                 hooks: Mapping[str, str] | None = None, labels: Mapping[str, Sequence[str]] | None = None,
                 overlap: int | None = None, decode=None, notes: Sequence[str] = ()) -> ProbeResult:
    """Codes of every dictionary on ``token_ids`` (no BOS; one is prepended to each window)."""
    if not token_ids:
        raise InputError("nothing to probe: no tokens")
    hooks = {name: (hooks or {}).get(name) or getattr(d, "hook_name", None) for name, d in dictionaries.items()}
    missing = [name for name, hook in hooks.items() if hook is None]
    if missing:
        raise InputError(f"SAE '{missing[0]}' names no hook (metadata.hook_name); pass its hook")
    unknown = [hook for hook in hooks.values() if hook not in model.hook_dict]
    if unknown:
        raise DictionaryError(f"the model has no hook '{unknown[0]}' (the SAE's hook); "
                              "use an SAE trained on this model")
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else 0
    body = model.cfg.n_ctx - 1
    overlap = body // 4 if overlap is None else overlap
    spans = windows_of(len(token_ids), body, overlap)
    notes = list(notes)
    if len(spans) > 1:
        notes.append(
            f"the text is longer than the model's context ({model.cfg.n_ctx} tokens with BOS): read in "
            f"{len(spans)} windows overlapping by {overlap} tokens; every token after the first window "
            f"has at least {overlap} tokens of context"
        )
    scale_hook = "ln_final.hook_scale" if "ln_final.hook_scale" in model.hook_dict else None
    names = set(hooks.values()) | ({scale_hook} if scale_hook else set())
    parts: dict[str, list] = {name: [] for name in dictionaries}
    effects: dict[str, list] = {name: [] for name in dictionaries}
    ids = torch.tensor(token_ids, dtype=torch.long)
    next_ids = token_ids[1:]
    for start, end, keep in spans:
        window = torch.cat([torch.tensor([bos]), ids[start:end]])[None].to(model.cfg.device)
        logits, cache = model.run_with_cache(window, names_filter=lambda name: name in names)
        rows = slice(1 + keep - start, 1 + end - start)  # this window's kept tokens (position 0 is BOS)
        if end == len(token_ids):
            next_ids = [*next_ids, int(logits[0, -1].argmax())]
        targets = torch.tensor(next_ids[keep:end], device=window.device)
        scale = cache[scale_hook][0, rows, 0] if scale_hook else torch.ones(end - keep, device=window.device)
        for name, dictionary in dictionaries.items():
            act = cache[hooks[name]][0, rows].reshape(end - keep, -1)
            if act.shape[-1] != dictionary.d_in:
                raise DictionaryError(
                    f"SAE '{name}' expects width {dictionary.d_in} but hook '{hooks[name]}' has "
                    f"width {act.shape[-1]}; use an SAE trained on this model at that hook"
                )
            f = dictionary.encode(act.to(dictionary.W_dec.dtype)).float()
            row, col = f.nonzero(as_tuple=True)
            parts[name].append(
                sp.csr_matrix((f[row, col].cpu().numpy(), (row.cpu().numpy(), col.cpu().numpy())), shape=tuple(f.shape))
            )
            if dictionary.d_in == model.cfg.d_model:
                effect = f[row, col] * _unembed_effect(
                    model, dictionary.W_dec[col].detach().float(), scale[row], targets[row]
                )
                effects[name].append(
                    sp.csr_matrix((effect.cpu().numpy(), (row.cpu().numpy(), col.cpu().numpy())), shape=tuple(f.shape))
                )
    decode = decode or (
        (lambda t: model.tokenizer.decode([t])) if model.tokenizer is not None else (lambda t: f"<{t}>")
    )
    vocab = {t: decode(t) for t in set(token_ids)}
    return ProbeResult(
        list(token_ids),
        [vocab[t] for t in token_ids],
        {name: sp.vstack(p, format="csr") for name, p in parts.items()},
        {name: (labels or {}).get(name) for name in dictionaries},
        {name: sp.vstack(e, format="csr") if e else None for name, e in effects.items()},
        list(next_ids),
        [(start, end) for start, end, _ in spans],
        notes,
    )


def probe(
    model,
    dictionaries: Mapping[str, Dictionary],
    text: str,
    hooks: Mapping[str, str] | None = None,
    labels: Mapping[str, Sequence[str]] | None = None,
    overlap: int | None = None,
    max_tokens: int = MAX_TOKENS,
) -> ProbeResult:
    """Which features of each SAE fire on each token of ``text`` (see the module docstring)."""
    ids, notes = text_tokens(model, text, max_tokens)
    return probe_tokens(model, dictionaries, ids, hooks, labels, overlap, notes=notes)


def specific_features(result: ProbeResult, name: str, corpus_mean: np.ndarray, k: int = 20) -> pd.DataFrame:
    """The features most specific to the text: mean activation per token on it over the mean per token on the
    corpus (the dashboards' ``mean_activation * frequency``), with the text's max; dead-on-corpus features rank
    by their text mean."""
    codes = result.codes[name]
    text_mean = np.asarray(codes.mean(0)).ravel()
    ratio = text_mean / np.maximum(np.asarray(corpus_mean, dtype=np.float64), 1e-12)
    order = np.lexsort((-text_mean, -ratio))[:k]
    labels = result.labels[name]
    return pd.DataFrame(
        {
            "feature": order,
            "label": [labels[f] if labels is not None else None for f in order],
            "text_mean": text_mean[order],
            "text_max": codes.max(0).toarray().ravel()[order],
            "corpus_mean": np.asarray(corpus_mean)[order],
            "ratio": ratio[order],
        }
    )


def recorded_model_spec(sae_folder: Path | str, workspace: Path | str | None = None) -> str:
    """The model an SAE folder ``runs/<run_id>/sae_<i>`` was trained on: its run's cache's model spec (a cache
    path recorded relative to the workspace is looked up there)."""
    sae_folder = Path(sae_folder)
    try:
        cache = RunFolder(sae_folder.parent).cache(for_what=str(sae_folder))
    except FileNotFoundError as error:
        raise InputError(f"no model recorded for {sae_folder} (its run names no cache); pass --model") from error
    if not cache.is_absolute() and not cache.exists():
        cache = Path(workspace if workspace is not None else sae_folder.resolve().parents[2]) / cache
    return str(CacheFolder(cache, verify=False).config["model"])


def stored_labels(analysis_folder: Path | str, d_sae: int) -> list[str] | None:
    """Each feature's dashboard label, or None when the SAE has no dashboards; stale ones are refused."""
    folder = AnalysisFolder(analysis_folder)
    if not folder.has_dashboards:
        return None
    table = folder.read_table("features", columns=["feature", "label"]).sort_values("feature")
    if len(table) != d_sae:
        raise DictionaryError(
            f"the dashboards in {folder.path} have {len(table)} features but the SAE has {d_sae}; "
            "rebuild them with `workbench analyze features`"
        )
    return table.label.tolist()
