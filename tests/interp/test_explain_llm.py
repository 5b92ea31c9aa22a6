"""The LLM explainer and scorer against a local HTTP server that answers like an OpenAI-compatible endpoint.

The client, the prompts and the parsing are the real ones; the server's answers are canned: it explains a
feature as the word most often highlighted in its examples and, as scorer, says 1 for the texts holding the
explained word (detection) or whose highlights are all that word (fuzzing). It answers nonsense for the
' horse' feature, and can be made slower than the client's timeout.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from interp.explain import prompts
from interp.explain.llm import LLMConfig, LLMExplainer, MalformedAnswer, parse_explanation, parse_predictions
from tests.interp.explain_toys import KING, OTHERS
from tests.interp.test_explain import planted  # noqa: F401  (the planted rules, their examples and explainer)

HORSE = OTHERS[1]


def canned_answer(body: dict) -> str:
    system, last = body["messages"][0]["content"], body["messages"][-1]["content"]
    if system == prompts.EXPLAINER_SYSTEM:
        word = Counter(w.strip() for w in re.findall(r"<<(.*?)>>", last, re.DOTALL)).most_common(1)[0][0]
        return "I would rather not say." if word == "horse" else f"[EXPLANATION]: The word \"{word}\"."
    word = re.search(r'Latent explanation: The word "(.*?)"', last).group(1)
    examples = re.split(r"\nExample \d+: ", "\n" + last.split("Text examples:\n\n", 1)[1])[1:]
    if system == prompts.DETECTION_SYSTEM:
        said = [int(re.search(rf"\b{word}\b", text) is not None) for text in examples]
    else:
        said = [int(all(h.strip() == word for h in re.findall(r"<<(.*?)>>", text, re.DOTALL))) for text in examples]
    return json.dumps(said)


class Endpoint(BaseHTTPRequestHandler):
    def do_POST(self):  # http.server calls it by this name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, dict(self.headers), body))
        time.sleep(self.server.delay)
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": canned_answer(body)}}]})
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply.encode())
        except BrokenPipeError:  # the client timed out and left
            pass

    def log_message(self, *args):
        pass


@pytest.fixture()
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    server.requests, server.delay = [], 0.0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def test_llm_explanations_and_scores_through_the_endpoint(planted, endpoint, monkeypatch):  # noqa: F811
    _, _, explainer, table = planted
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
    llm = LLMExplainer(LLMConfig(url(endpoint), "tiny-model", key_env="TEST_LLM_KEY"))
    rows = llm.add_columns(table.reset_index().loc[[KING, OTHERS[0], HORSE, OTHERS[2]]], explainer).set_index("feature")
    assert rows.llm_explanation[KING] == 'The word "king".'
    assert rows.llm_status[KING] == "ok" and rows.llm_detection[KING] >= 0.95 and rows.llm_fuzzing[KING] >= 0.95
    assert rows.llm_baseline_detection[KING] <= 0.6 and rows.llm_baseline_feature[KING] != KING
    assert rows.llm_status[HORSE].startswith("malformed answer") and math.isnan(rows.llm_detection[HORSE])
    assert rows.llm_status[OTHERS[2]] == "ok"  # the run went on after the malformed answer
    assert rows.detection[HORSE] == table.detection[HORSE]  # the offline explanation is kept
    path, headers, body = endpoint.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "tiny-model" and len(body["messages"]) == 1 + 2 * 3 + 1  # system, 3 shots, the task
    assert (
        llm.problems == []
        and "TEST_LLM_KEY" not in json.dumps(llm.record())
        and "sk-test" not in json.dumps(llm.record())
    )


def test_a_slow_endpoint_times_out_and_the_offline_explanations_stay(planted, endpoint):  # noqa: F811
    _, _, explainer, table = planted
    endpoint.delay = 2.0
    llm = LLMExplainer(LLMConfig(url(endpoint), "tiny-model", timeout=0.3))
    start = time.perf_counter()
    rows = llm.add_columns(table.reset_index().loc[[KING, *OTHERS]], explainer)
    assert time.perf_counter() - start < 2.0  # one timeout, then no more calls this run
    assert (rows.llm_status == "unreachable").all() and len(endpoint.requests) == 1
    assert "did not answer within 0.3 s" in llm.problems[0]
    assert rows.explanation.tolist() == table.explanation[[KING, *OTHERS]].tolist()


def test_an_unreachable_endpoint_is_one_clear_problem(planted):  # noqa: F811
    _, _, explainer, table = planted
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = LLMExplainer(LLMConfig(f"http://127.0.0.1:{port}/v1", "m", timeout=2))
    rows = llm.add_columns(table.reset_index().loc[[KING]], explainer)
    assert rows.llm_status.tolist() == ["unreachable"] and len(llm.problems) == 1
    assert f"LLM endpoint http://127.0.0.1:{port}/v1 did not answer" in llm.problems[0]


def test_parsers_and_config_refuse_bad_input():
    assert parse_explanation("thinking...\n[EXPLANATION]: Names of kings") == "Names of kings"
    assert parse_predictions("Sure: [1, 0, 1]", 3) == [True, False, True]
    for bad in ("no list here", "[1, 0]", "[1, 2, 0]", "[yes, no, yes]"):
        with pytest.raises(MalformedAnswer):
            parse_predictions(bad, 3)
    with pytest.raises(MalformedAnswer):
        parse_explanation("Names of kings")
    with pytest.raises(ValueError, match="not an http"):
        LLMConfig("127.0.0.1:8080", "m")
