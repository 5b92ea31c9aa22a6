"""An optional LLM explainer and scorer over any OpenAI-compatible chat endpoint (llama.cpp, vLLM, ollama).

Off by default. With ``LLMConfig(url=..., model=...)`` (the API key read from the environment variable
``key_env``), each explained feature also gets an LLM explanation from its training windows and the LLM's
detection and fuzzing scores on the same held-out windows as the offline rule, with delphi's prompts
(``interp.explain.prompts``) and its parsing (``[EXPLANATION]: ...``; a Python list of 0/1 per example).
The baseline is another LLM-explained feature's explanation scored on this feature's windows.

Failures never lose the offline results: an unreachable or slow endpoint (``timeout``) marks that feature
and every later one ``unreachable`` and stops calling it for the run (``problems`` says why); a malformed
answer marks that feature (explanation) or skips that batch of examples (scoring), and the run goes on.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from interp.explain import prompts
from interp.explain.examples import TRAIN_SETS, FeatureExamples
from interp.explain.scoring import HIGHLIGHT, balanced_accuracy, highlights
from interp.store.errors import InputError

LLM_COLUMNS = ("llm_status", "llm_explanation", "llm_detection", "llm_fuzzing", "llm_baseline_detection",
               "llm_baseline_fuzzing", "llm_baseline_feature")


class LLMUnreachable(InputError):
    """The endpoint did not answer (refused, timed out, HTTP error)."""


class MalformedAnswer(ValueError):
    """The endpoint answered, but not in the format asked for."""


@dataclass(frozen=True)
class LLMConfig:
    url: str  # the API root, e.g. http://127.0.0.1:8080/v1 (``/chat/completions`` is added)
    model: str
    key_env: str = "OPENAI_API_KEY"  # environment variable holding the API key (none sent when unset)
    timeout: float = 60.0  # seconds to wait for one answer
    n_shown: int = 5  # examples per scorer prompt
    n_train: int = 20  # training windows shown to the explainer
    max_tokens: int = 300

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise InputError(f"--llm-url {self.url!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8080/v1")
        if not self.model:
            raise InputError("--llm-model is empty; pass the model name the endpoint serves")


class ChatClient:
    """POSTs chat messages to ``<url>/chat/completions`` and returns the answer's text (stdlib only)."""

    def __init__(self, config: LLMConfig):
        self.config = config
        self.key = os.environ.get(config.key_env)

    def chat(self, messages: list[dict]) -> str:
        c = self.config
        body = json.dumps({"model": c.model, "messages": messages, "temperature": 0.0,
                           "max_tokens": c.max_tokens}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        request = urllib.request.Request(c.url.rstrip("/") + "/chat/completions", body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=c.timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise LLMUnreachable(f"LLM endpoint {c.url} answered HTTP {error.code} ({error.reason}); check the URL, "
                                 f"the model name and the key in ${c.key_env}") from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise LLMUnreachable(f"LLM endpoint {c.url} did not answer within {c.timeout:g} s ({reason}); the "
                                 "offline explanations are kept") from error
        except json.JSONDecodeError as error:
            raise MalformedAnswer(f"the endpoint's reply is not JSON ({error})") from error
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as error:
            raise MalformedAnswer("the reply has no choices[0].message.content") from error


def _pieces(ex: FeatureExamples, row: int, strings: list[str]) -> tuple[list[str], np.ndarray]:
    keep = ex.ids[row] >= 0
    return [strings[t] for t in ex.ids[row][keep]], ex.acts[row][keep]


def highlight(tokens: list[str], marked) -> str:
    """delphi's ``_highlight``: runs of marked tokens between ``<<`` and ``>>``."""
    out, i = "", 0
    while i < len(tokens):
        if marked[i]:
            out += "<<"
            while i < len(tokens) and marked[i]:
                out += tokens[i]
                i += 1
            out += ">>"
        else:
            out += tokens[i]
            i += 1
    return out


def explainer_messages(train: FeatureExamples, strings: list[str], n: int) -> list[dict]:
    """delphi's default explainer prompt (with activations): highlighted windows, each with its activations."""
    rows = np.nonzero(train.positive)[0][:n]
    peak = max(float(train.acts[rows].max()), 1e-6) if len(rows) else 1.0
    lines = []
    for row in rows:
        tokens, acts = _pieces(train, row, strings)
        marked = acts > HIGHLIGHT * acts.max()
        lines.append(highlight(tokens, marked))
        shown = [f'("{t}" : {int(min(10, math.ceil(a * 10 / peak)))}), ' for t, a, m in zip(tokens, acts, marked) if m]
        lines.append("Activations: " + "".join(shown[:11]))
    messages = [{"role": "system", "content": prompts.EXPLAINER_SYSTEM}]
    for shot, answer in prompts.EXPLAINER_EXAMPLES:
        messages += [{"role": "user", "content": shot}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": "\n" + "\n".join(lines) + "\n"}]


def scorer_messages(kind: str, explanation: str, texts: list[str]) -> list[dict]:
    system, shots = ((prompts.DETECTION_SYSTEM, prompts.DETECTION_EXAMPLES) if kind == "detection"
                     else (prompts.FUZZING_SYSTEM, prompts.FUZZING_EXAMPLES))
    messages = [{"role": "system", "content": system}]
    for shot, answer in shots:
        messages += [{"role": "user", "content": shot}, {"role": "assistant", "content": answer}]
    examples = "\n".join(f"Example {i}: {text}" for i, text in enumerate(texts))
    return messages + [{"role": "user", "content": prompts.SCORER_PROMPT.format(explanation=explanation,
                                                                              examples=examples)}]


def parse_explanation(text: str) -> str:
    match = re.search(r"\[EXPLANATION\]:\s*(.*)", text, re.DOTALL)
    if not match or not match.group(1).strip():
        raise MalformedAnswer(f"no '[EXPLANATION]:' line in the answer {text[:80]!r}")
    return match.group(1).strip()


def parse_predictions(text: str, n: int) -> list[bool]:
    match = re.search(r"\[.*?\]", text, re.DOTALL)
    try:
        values = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, list) or len(values) != n or any(v not in (0, 1, True, False) for v in values):
        raise MalformedAnswer(f"expected a list of {n} zeros and ones, got {text[:80]!r}")
    return [bool(v) for v in values]


class LLMExplainer:
    """Adds the ``llm_*`` columns to the rows of ``interp.explain.explanations.Explainer``."""

    def __init__(self, config: LLMConfig, client: ChatClient | None = None):
        self.config, self.client = config, client or ChatClient(config)
        self.problems: list[str] = []
        self.down: str | None = None  # why the endpoint is no longer called in this run

    def record(self) -> dict:
        """What the run record keeps (never the key)."""
        return {k: v for k, v in asdict(self.config).items() if k not in ("timeout", "key_env")}

    def _predict(self, kind: str, explanation: str, texts: list[str], rng) -> tuple[np.ndarray, int]:
        """The LLM's yes/no per text, NaN where a batch's answer was malformed; and how many were."""
        order = rng.permutation(len(texts))
        out, bad, n = np.full(len(texts), np.nan), 0, self.config.n_shown
        for start in range(0, len(order), n):
            batch = order[start:start + n]
            try:
                answer = self.client.chat(scorer_messages(kind, explanation, [texts[i] for i in batch]))
                out[batch] = parse_predictions(answer, len(batch))
            except MalformedAnswer:
                bad += 1
        return out, bad

    def _score(self, explanation: str, held: FeatureExamples, strings: list[str], seed: int) -> tuple[dict, int]:
        natural = ~np.char.endswith(held.set.astype(str), "hard")
        plain = held.take(natural)
        rng = np.random.default_rng(seed)
        texts = ["".join(_pieces(plain, r, strings)[0]) for r in range(len(plain.ids))]
        detected, bad_d = self._predict("detection", explanation, texts, rng)
        marked, correct, keep = highlights(plain, seed)
        shown = [highlight(_pieces(plain, r, strings)[0], marked[r][plain.ids[r] >= 0]) for r in np.nonzero(keep)[0]]
        judged, bad_f = self._predict("fuzzing", explanation, shown, rng)
        score = lambda said, actual: (balanced_accuracy(said[~np.isnan(said)] > 0.5, actual[~np.isnan(said)])
                                      if (~np.isnan(said)).any() else math.nan)
        return {"detection": score(detected, plain.positive), "fuzzing": score(judged, correct[keep])}, bad_d + bad_f

    def add_columns(self, rows: pd.DataFrame, explainer) -> pd.DataFrame:
        """The ``llm_*`` columns for one chunk of rows (``Explainer.rows``)."""
        strings = explainer.vocab.strings
        rows = rows.copy()
        for column in LLM_COLUMNS:
            rows[column] = {"llm_status": "not explained", "llm_explanation": ""}.get(column, math.nan)
        rows["llm_baseline_feature"] = -1
        texts = {}
        for i, row in rows[rows.status == "explained"].iterrows():
            if self.down:
                rows.at[i, "llm_status"] = "unreachable"
                continue
            train = explainer.arrays.feature_examples(int(row.feature)).subset(TRAIN_SETS)
            try:
                texts[i] = parse_explanation(self.client.chat(explainer_messages(train, strings, self.config.n_train)))
                rows.at[i, "llm_explanation"], rows.at[i, "llm_status"] = texts[i], "ok"
            except MalformedAnswer as error:
                rows.at[i, "llm_status"] = f"malformed answer: {error}"
            except LLMUnreachable as error:
                self.down = str(error)
                self.problems.append(self.down)
                rows.at[i, "llm_status"] = "unreachable"
        done = list(texts)
        for j, i in enumerate(done):
            if self.down:
                break
            feature = int(rows.at[i, "feature"])
            held, seed = explainer.held_out(feature), explainer.config.seed + feature
            partner = done[(j + 1) % len(done)] if len(done) > 1 else None
            try:
                scores, bad = self._score(texts[i], held, strings, seed)
                rows.at[i, "llm_detection"], rows.at[i, "llm_fuzzing"] = scores["detection"], scores["fuzzing"]
                if partner is not None:
                    base, more = self._score(texts[partner], held, strings, seed)
                    rows.at[i, "llm_baseline_detection"], rows.at[i, "llm_baseline_fuzzing"] = (base["detection"],
                                                                                              base["fuzzing"])
                    rows.at[i, "llm_baseline_feature"], bad = int(rows.at[partner, "feature"]), bad + more
                if bad:
                    rows.at[i, "llm_status"] = f"ok, {bad} malformed scorer answers skipped"
            except LLMUnreachable as error:
                self.down = str(error)
                self.problems.append(self.down)
                rows.at[i, "llm_status"] = "explained, scoring unreachable"
        return rows
