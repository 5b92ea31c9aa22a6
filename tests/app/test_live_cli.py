"""``workbench probe`` / ``workbench steer`` on a workspace of the demo model: the answers equal the API's on
the same model, and every bad input is one ``error:`` line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from app.cli import app
from interp.features.dictionary import load_dictionary
from interp.features.probe import CHARS_PER_TOKEN, MAX_TOKENS, probe, windows_of
from interp.store.analysis_folder import AnalysisFolder

TEXT = "Now is the winter of our discontent made glorious summer by this sun of York"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_probe_json_equals_the_api_and_the_stored_labels(live_workspace, demo_model):
    sae = live_workspace / "runs" / "live" / "sae_0"
    result = invoke("probe", "--sae", str(sae), TEXT, "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    expected = probe(demo_model, {"sae": load_dictionary(sae)}, TEXT).top_features("sae", k=3)
    assert [row["feature"] for row in shown["top_features"]] == expected.feature.tolist()
    np.testing.assert_allclose([row["activation"] for row in shown["top_features"]], expected.activation, atol=1e-5)
    labels = AnalysisFolder(live_workspace / "analyses" / "live" / "sae_0").read_table("features").set_index("feature")
    assert all(row["label"] == labels.label[row["feature"]] for row in shown["top_features"])
    ids = demo_model.tokenizer.encode(TEXT, add_special_tokens=False)
    assert shown["tokens"] == [demo_model.tokenizer.decode([t]) for t in ids]


def test_probe_prints_one_line_per_token(live_workspace):
    result = invoke("probe", "--sae", str(live_workspace / "runs" / "live" / "sae_1"), TEXT)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 + len(json.loads(invoke("probe", "--sae", str(live_workspace / "runs" / "live" / "sae_1"),
                                                   TEXT, "--json").output)["tokens"])


def test_steer_with_a_zero_coefficient_gives_the_default_and_zero_kl(live_workspace):
    sae = str(live_workspace / "runs" / "live" / "sae_0")
    out = invoke("steer", "--sae", sae, "--feature", "3", "--coef", "0", "--tokens", "6", TEXT, "--json")
    out = json.loads(out.output)
    assert out["default"] == out["steered"] and max(out["kl"]) == 0.0
    moved = invoke("steer", "--sae", sae, "--feature", "3", "--feature", "5", "--coef", "20", "--tokens", "6",
                   "--sweep", "0,5,10", TEXT, "--json")
    assert moved.exit_code == 0, moved.output
    moved = json.loads(moved.output)
    assert max(moved["kl"]) > 0 and [row["value"] for row in moved["dose_response"]] == [0.0, 5.0, 10.0]
    text = invoke("steer", "--sae", sae, "--feature", "3", "--method", "ablate", "--tokens", "4", TEXT)
    assert text.exit_code == 0 and "ablate:" in text.output and "KL from the default" in text.output


@pytest.mark.parametrize("args, message", [
    (["probe", "--sae", "{sae}", ""], "the text is empty"),
    (["probe", "--sae", "{sae}", " \t\n"], "the text is empty"),
    (["probe", "--sae", "{sae}", "\x00\x01"], "the text is empty"),
    (["steer", "--sae", "{sae}", "--feature", "128", TEXT], "feature 128 is out of range"),
    (["steer", "--sae", "{sae}", "--feature", "1", "--coef", "nan", TEXT], "--coef is nan"),
    (["steer", "--sae", "{sae}", "--feature", "1", "--coef", "-inf", TEXT], "--coef is -inf"),
    (["steer", "--sae", "{sae}", "--feature", "1", "--coef", "1e12", TEXT], "too large"),
    (["steer", "--sae", "{sae}", "--feature", "1", "--method", "boost", TEXT], "unknown --method 'boost'"),
    (["steer", "--sae", "{sae}", "--feature", "1", "--tokens", "500", TEXT], "more than the model's context"),
    (["probe", "--sae", "{sae}", "--model", "no-such-model", TEXT], "unknown model spec 'no-such-model'"),
    (["probe", "--sae", "{runs}", TEXT], "is not a SAELens SAE folder"),
])
def test_bad_input_is_one_error_line(live_workspace, args, message):
    sae, runs = live_workspace / "runs" / "live" / "sae_0", live_workspace / "runs"
    result = invoke(*[a.format(sae=sae, runs=runs) if a.startswith("{") else a for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().startswith("error:")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_an_sae_of_another_model_is_one_error_line(workspace):
    """The tiny workspace's SAE reads a 32-wide residual; the demo model's is 128 wide."""
    result = invoke("probe", "--sae", str(workspace / "runs" / "demo-mfr" / "sae_0"), "--model", "demo", TEXT)
    assert result.exit_code == 2
    assert "expects width 32 but hook 'blocks.1.hook_resid_post' has width 128" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_probe_of_a_file_longer_than_the_context_equals_encoding_each_window_directly(live_workspace, demo_model,
                                                                                      tmp_path):
    """A text of several windows read with --file: each token's top features are those of encoding the cached
    activations of its own window (BOS + the window's tokens) directly."""
    sae_folder = live_workspace / "runs" / "live" / "sae_0"
    text = " ".join([TEXT] * 30)
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    result = invoke("probe", "--sae", str(sae_folder), "--file", str(tmp_path / "text.txt"), "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    ids = demo_model.tokenizer.encode(text, add_special_tokens=False)
    body = demo_model.cfg.n_ctx - 1
    spans = windows_of(len(ids), body, body // 4)
    assert len(spans) > 2 and shown["windows"] == [[start, end] for start, end, _ in spans]
    assert any(f"{len(spans)} windows overlapping by {body // 4} tokens" in note for note in shown["notes"])
    sae = load_dictionary(sae_folder)
    rows = pd.DataFrame(shown["top_features"])
    for start, end, keep in spans:
        window = torch.tensor([[demo_model.tokenizer.bos_token_id, *ids[start:end]]])
        _, cache = demo_model.run_with_cache(window, names_filter=sae.hook_name)
        codes = sae.encode(cache[sae.hook_name][0, 1 + keep - start:]).detach()
        top = codes.topk(3, dim=-1)
        for offset, position in enumerate(range(keep, end)):
            mine = rows[rows.position == position]
            firing = int((codes[offset] > 0).sum())
            assert mine.feature.tolist() == top.indices[offset, :firing].tolist()
            np.testing.assert_allclose(mine.activation, top.values[offset, :firing].numpy(), atol=1e-6)


@pytest.mark.slow
def test_probe_of_a_1_mb_file_is_bounded_windowed_and_says_so(live_workspace, tmp_path):
    sae = str(live_workspace / "runs" / "live" / "sae_0")
    big = tmp_path / "big.txt"
    big.write_text((TEXT + ". ") * (2**20 // (len(TEXT) + 2) + 1), encoding="utf-8")
    assert big.stat().st_size >= 2**20
    result = CliRunner().invoke(app, ["probe", "--sae", sae, "--file", str(big)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 + MAX_TOKENS and lines[0].startswith(f"{MAX_TOKENS:,} tokens in ")
    notes = result.stderr
    assert f"only the first {MAX_TOKENS * CHARS_PER_TOKEN:,} were tokenised" in notes
    assert f"probed the first {MAX_TOKENS:,}" in notes and "windows overlapping by" in notes
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content, message", [
    (b"", "the text is empty"),
    (b" \n\t\n", "the text is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text file (it has NUL bytes)"),
    (bytes(range(128, 256)) * 4, "is not UTF-8 text (byte 0x80 at offset 0)"),
])
def test_a_bad_file_is_one_error_line(live_workspace, tmp_path, content, message):
    path = tmp_path / "input.bin"
    path.write_bytes(content)
    result = invoke("probe", "--sae", str(live_workspace / "runs" / "live" / "sae_0"), "--file", str(path))
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().startswith("error:")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    ([], "give a text to probe"),
    (["--file", "{missing}"], "No such file"),
    (["--file", "{folder}"], "is a folder"),
    (["--file", "{missing}", TEXT], "not both"),
])
def test_text_and_file_arguments_are_checked(live_workspace, tmp_path, args, message):
    sae = str(live_workspace / "runs" / "live" / "sae_0")
    args = [a.format(missing=tmp_path / "missing.txt", folder=tmp_path) for a in args]
    result = invoke("probe", "--sae", sae, *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
