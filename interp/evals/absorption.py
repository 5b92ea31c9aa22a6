"""Feature absorption on SAEBench's first-letter task (``evals/absorption``; Chanin et al. 2024, "A is for
Absorption"), with Demian Till's absorption fraction.

The model's vocabulary tokens made of letters (with an optional leading space) are prompted as
``{word} has the first letter:`` after 10 in-context examples, and the activation at the word is read.
A ground-truth logistic probe per letter defines the letter's direction; k-sparse probes on the SAE's
latents (k = 1..10, latents ranked by an L1 probe) pick each letter's main latents (k grows while F1
rises by more than 0.03: feature splitting). On the test words the probe calls for their letter, a word
is absorbed when the main latents do not carry the probe's projection and other latents aligned with the
probe do (SAEBench's thresholds below).

Where we differ: probes are scikit-learn's (SAEBench trains its own in torch); a latent's projection is
``f_i ‖W_dec_i‖ cos(W_dec_i, probe)`` (SAEBench assumes unit decoder rows, where the two agree); the
absorption prompts are the test prompts the probes were scored on.

SAEBench's caveat, kept: the task means little for a model without spelling knowledge (it recommends
>= 1B parameters) or a dictionary too narrow to absorb (< 16k latents); the result says how many letters
the probe found (SAEBench needs 20 with F1 > 0.6) and flags itself when the model or SAE is too small.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import sklearn
import torch
from jaxtyping import Float
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from torch import Tensor

from interp.cache.writer import stop_layer_for
from interp.features.dictionary import Dictionary
from interp.models.data import bos_token_id
from interp.store.errors import InputError

LETTERS = "abcdefghijklmnopqrstuvwxyz"
EPS = 1e-8
MIN_WORDS_PER_LETTER = 4  # a letter with fewer train or test words gets no probe
SMALL_MODEL_PARAMS = 1_000_000_000  # SAEBench: "not recommended on LLMs with less than 1B parameters"
SMALL_SAE_LATENTS = 16_384  # SAEBench: "not recommended on SAEs with less than 16k latents"


@dataclass(frozen=True)
class AbsorptionConfig:
    """SAEBench's ``AbsorptionEvalConfig`` defaults and the calculator's thresholds."""

    prompt_template: str = "{word} has the first letter:"
    max_icl_examples: int = 10
    random_seed: int = 42
    f1_jump_threshold: float = 0.03
    max_k_value: int = 10
    min_GT_probe_f1: float = 0.6
    min_feats_for_eval: int = 20
    full_absorption_probe_cos_sim_threshold: float = 0.025
    absorption_fraction_probe_cos_sim_threshold: float = 0.1
    probe_projection_proportion_threshold: float = 0.4
    absorption_fraction_max_absorbing_latents: int = 3
    max_words: int = 2000  # words drawn from the vocabulary (SAEBench takes all of it)

    def as_dict(self) -> dict:
        return asdict(self)


def first_letter(word: str) -> str:
    return next(c for c in word.lower() if c.isalpha())


def alpha_tokens(tokenizer) -> list[str]:
    """Vocabulary tokens made only of ASCII letters, optionally after one space (SAEBench's ``get_alpha_tokens``),
    kept when they encode back to a single token."""
    words = []
    for token, index in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        word = tokenizer.convert_tokens_to_string([token])
        body = word.removeprefix(" ")
        if body and body.isascii() and body.isalpha() and tokenizer.encode(word, add_special_tokens=False) == [index]:
            words.append(word)
    return words


def split_words(words: list[str], seed: int, train_fraction: float = 0.8) -> tuple[list[str], list[str]]:
    shuffled = random.Random(seed).sample(words, len(words))
    cut = int(len(shuffled) * train_fraction)
    return shuffled[:cut], shuffled[cut:]


def icl_prompt(word: str, examples: list[str], config: AbsorptionConfig, rng: random.Random) -> str:
    """SAEBench's ``create_icl_prompt``: ``\\n`` + examples ``{ex} has the first letter: E`` + the word's base."""
    pool = [e for e in examples if e != word]
    shots = rng.sample(pool, min(config.max_icl_examples, len(pool)))
    lines = [config.prompt_template.format(word=e) + " " + first_letter(e).upper() for e in shots]
    return "\n" + "\n".join(lines + [config.prompt_template.format(word=word)])


@torch.no_grad()
def word_activations(model, hook: str, words: list[str], examples: list[str], config: AbsorptionConfig,
                     batch_size: int = 64) -> Float[Tensor, "n d"]:
    """The activation at each word's token in its ICL prompt (counted from the end: the template's tail is fixed)."""
    tokenizer = model.tokenizer
    tail = len(tokenizer.encode(config.prompt_template.format(word="").lstrip(), add_special_tokens=False))
    rng = random.Random(config.random_seed)
    bos = bos_token_id(tokenizer)
    ids = [[bos, *tokenizer.encode(icl_prompt(w, examples, config, rng), add_special_tokens=False)] for w in words]
    out = []
    for start in range(0, len(ids), batch_size):
        rows = ids[start:start + batch_size]
        width = max(map(len, rows))
        tokens = torch.full((len(rows), width), bos, dtype=torch.long)
        for r, row in enumerate(rows):
            tokens[r, :len(row)] = torch.tensor(row)
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=hook,
                                        stop_at_layer=stop_layer_for((hook,)))
        where = torch.tensor([len(row) - 1 - tail for row in rows])
        acts = cache[hook][torch.arange(len(rows)), where.to(model.cfg.device)]
        out.append(acts.reshape(len(rows), -1).float().cpu())
    return torch.cat(out)


def _l1() -> dict:
    """An L1 penalty in scikit-learn's spelling of the installed version (``penalty`` is deprecated from 1.8)."""
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    return {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}


def _fit(x: np.ndarray, y: np.ndarray, **kwargs) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(class_weight="balanced", **kwargs).fit(x, y)


@dataclass(frozen=True)
class LetterProbe:
    """A ground-truth probe in activation space: ``score = x @ weight + bias`` (positive: the letter)."""

    weight: Tensor
    bias: float

    def scores(self, x: Float[Tensor, "n d"]) -> np.ndarray:
        return (x.float() @ self.weight + self.bias).numpy()


def letter_probes(x: Float[Tensor, "n d"], letters: list[str]) -> dict[str, LetterProbe]:
    """The ground-truth probes: one balanced logistic regression per letter with enough words (one-vs-rest),
    fitted on standardised activations (lbfgs converges) and mapped back to activation space."""
    y = np.array(letters)
    mean, std = x.float().mean(0), x.float().std(0).clamp_min(1e-6)
    z = ((x.float() - mean) / std).numpy()
    probes = {}
    for c in LETTERS:
        if (y == c).sum() >= MIN_WORDS_PER_LETTER:
            fit = _fit(z, (y == c).astype(int), max_iter=1000)
            weight = torch.as_tensor(fit.coef_[0], dtype=torch.float32) / std
            probes[c] = LetterProbe(weight, float(fit.intercept_[0]) - float(weight @ mean))
    return probes


def live_columns(codes: Float[Tensor, "n d_sae"]) -> tuple[Tensor, sparse.csr_matrix]:
    """The latents that fire on any row, and the codes restricted to them as a sparse matrix (liblinear drops
    zero entries of dense input too, so the L1 fit is the same; a TopK code is mostly zeros)."""
    live = torch.nonzero(codes.abs().sum(0) > 0).flatten()
    return live, sparse.csr_matrix(codes[:, live].numpy())


def k_sparse_f1(codes_train: Tensor, y_train: np.ndarray, codes_test: Tensor, y_test: np.ndarray,
                max_k: int, live: tuple[Tensor, sparse.csr_matrix] | None = None) -> list[tuple[list[int], float]]:
    """For k = 1..max_k: the k latents with the largest weights of an L1 probe and the test F1 of a balanced
    logistic regression on them (SAEBench's ``train_k_sparse_probes``). ``live``: ``live_columns(codes_train)``
    when already made (it is the same for every letter)."""
    live, live_codes = live if live is not None else live_columns(codes_train)
    if len(live) == 0:
        return []
    l1 = _fit(live_codes, y_train, solver="liblinear", C=0.1, **_l1())
    ranked = live[torch.argsort(torch.as_tensor(l1.coef_[0]), descending=True, stable=True)]
    out = []
    for k in range(1, min(max_k, len(ranked)) + 1):
        feats = ranked[:k]
        probe = _fit(codes_train[:, feats].numpy(), y_train, max_iter=500)
        out.append((feats.tolist(), float(f1_score(y_test, probe.decision_function(codes_test[:, feats].numpy()) > 0))))
    return out


def split_features(f1_by_k: list[tuple[list[int], float]], jump: float) -> list[int]:
    """The latents of the largest k reached while each step up raises F1 by more than ``jump``."""
    best, feats = -100.0, []
    for k_feats, f1 in f1_by_k:
        if f1 <= best + jump:
            break
        best, feats = f1, k_feats
    return feats


def word_absorption(act_proj: float, codes: Float[Tensor, " d_sae"], latent_proj: Float[Tensor, " d_sae"],
                    cos: Float[Tensor, " d_sae"], main: list[int], config: AbsorptionConfig) -> tuple[float, bool]:
    """SAEBench's ``FeatureAbsorptionCalculator`` for one word: the absorption fraction and full absorption."""
    main_proj = float(latent_proj[main].sum()) if main else 0.0
    candidates = torch.ones(len(codes), dtype=torch.bool)
    candidates[main] = False
    candidates &= (cos >= config.absorption_fraction_probe_cos_sim_threshold) & (latent_proj > 0)
    top = latent_proj[candidates].topk(min(config.absorption_fraction_max_absorbing_latents, int(candidates.sum())))
    absorbers = float(top.values.sum())
    if act_proj <= 0 or main_proj >= act_proj or absorbers / act_proj < config.probe_projection_proportion_threshold:
        fraction = 0.0
    elif main_proj <= 0:
        fraction = 1.0
    else:
        absorbed = min(absorbers, act_proj - main_proj)
        fraction = float(np.clip(absorbed / (absorbed + main_proj), 0.0, 1.0))
    first = int(latent_proj.argmax())
    full = (all(float(codes[i]) < EPS for i in main)
            and float(cos[first]) >= config.full_absorption_probe_cos_sim_threshold and act_proj >= 0
            and float(latent_proj[first]) / max(act_proj, EPS) >= config.probe_projection_proportion_threshold)
    return fraction, bool(full)


@torch.no_grad()
def absorption_from_activations(dictionary: Dictionary, train_x: Tensor, train_words: list[str], test_x: Tensor,
                                test_words: list[str], config: AbsorptionConfig = AbsorptionConfig(),
                                probes: dict[str, LetterProbe] | None = None) -> dict:
    """The whole evaluation on word activations: probes (``letter_probes``, fitted here unless given: one set
    serves every SAE of a hook), main latents, per-word absorption, per-letter results."""
    if len(train_words) != len(train_x) or len(test_words) != len(test_x):
        raise InputError("absorption needs one activation per word")
    train_letters, test_letters = [first_letter(w) for w in train_words], [first_letter(w) for w in test_words]
    probes = probes if probes is not None else letter_probes(train_x, train_letters)
    codes_train, codes_test = dictionary.encode(train_x).float().cpu(), dictionary.encode(test_x).float().cpu()
    W_dec = dictionary.W_dec.detach().float().cpu()
    norms = W_dec.norm(dim=-1)
    y_train, y_test = np.array(train_letters), np.array(test_letters)
    live = live_columns(codes_train)
    letters, words = [], []
    for letter, probe in probes.items():
        truth = y_test == letter
        if truth.sum() < MIN_WORDS_PER_LETTER:
            continue
        scores = probe.scores(test_x)
        probe_f1 = float(f1_score(truth, scores > 0))
        f1_by_k = k_sparse_f1(codes_train, (y_train == letter).astype(int), codes_test, truth.astype(int),
                              config.max_k_value, live)
        main = split_features(f1_by_k, config.f1_jump_threshold)
        direction = probe.weight / probe.weight.norm()
        cos = torch.nn.functional.cosine_similarity(W_dec, direction[None], dim=-1)
        positives = np.flatnonzero(truth & (scores > 0))
        fractions, fulls = [], []
        for i in positives:
            act_proj = float(test_x[i] @ direction)
            fraction, full = word_absorption(act_proj, codes_test[i], codes_test[i] * norms * cos, cos, main, config)
            fractions.append(fraction)
            fulls.append(full)
            words.append({"letter": letter, "token": test_words[i], "absorption_fraction": fraction,
                          "is_full_absorption": full})
        n = max(len(positives), 1)
        letters.append({"first_letter": letter, "f1_probe": probe_f1, "split_feats": main,
                        "f1_sparse_sae": [f1 for _, f1 in f1_by_k], "num_probe_true_positives": len(positives),
                        "mean_absorption_fraction": sum(fractions) / n, "num_full_absorption": sum(fulls),
                        "full_absorption_rate": sum(fulls) / n, "num_split_features": len(main)})
    return {"letters": letters, "words": words}


def caveat(n_letters_ok: int, n_params: int | None, d_sae: int, config: AbsorptionConfig) -> dict:
    """SAEBench's warnings as data: whether the result can mean much, and why not."""
    reasons = []
    if n_letters_ok < config.min_feats_for_eval:
        reasons.append(f"the probe finds {n_letters_ok} letters with F1 > {config.min_GT_probe_f1}; SAEBench needs "
                       f"{config.min_feats_for_eval} and does not report absorption below that")
    if n_params is not None and n_params < SMALL_MODEL_PARAMS:
        reasons.append(f"the model has {n_params:,} parameters; SAEBench recommends >= 1B (spelling knowledge)")
    if d_sae < SMALL_SAE_LATENTS:
        reasons.append(f"the SAE has {d_sae:,} latents; SAEBench recommends >= 16k for absorption to show")
    return {"meaningful": not reasons, "reasons": reasons, "letters_evaluated": n_letters_ok}


def absorption_parts(result: dict, config: AbsorptionConfig, n_params: int | None, d_sae: int
                     ) -> tuple[dict[str, dict], list[dict], dict]:
    """SAEBench's ``mean`` metrics (over letters whose probe F1 passes), per-letter details, unstructured extras."""
    kept = [r for r in result["letters"] if r["f1_probe"] > config.min_GT_probe_f1]
    note = caveat(len(kept), n_params, d_sae, config)

    def stat(key, fn, minimum=1):
        values = [r[key] for r in kept]
        return float(fn(values)) if len(values) >= minimum else float("nan")

    def std(values):
        return np.std(values, ddof=1)  # statistics.stdev, as SAEBench

    mean = {"mean_absorption_fraction_score": stat("mean_absorption_fraction", np.mean),
            "mean_full_absorption_score": stat("full_absorption_rate", np.mean),
            "mean_num_split_features": stat("num_split_features", np.mean),
            "std_dev_absorption_fraction_score": stat("mean_absorption_fraction", std, 2),
            "std_dev_full_absorption_score": stat("full_absorption_rate", std, 2),
            "std_dev_num_split_features": stat("num_split_features", std, 2)}
    detail_keys = ("first_letter", "mean_absorption_fraction", "full_absorption_rate", "num_full_absorption",
                   "num_probe_true_positives", "num_split_features")
    details = [{k: r[k] for k in detail_keys} for r in kept]
    reliability = {"letters_evaluated": len(kept), "meaningful": float(note["meaningful"])}
    return {"mean": mean, "reliability": reliability}, details, {"caveat": note, "letters": result["letters"],
                                                                "words": result["words"]}
