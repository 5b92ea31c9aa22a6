"""``workbench probe`` / ``workbench steer`` on a workspace of the demo model: the answers equal the API's on
the same model, and every bad input is one ``error:`` line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import app
from interp.features.dictionary import load_dictionary
from interp.features.probe import probe
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
