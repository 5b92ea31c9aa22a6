"""A SAELens release SAE (``saelens:<release>/<sae_id>``, laid out in a test hub cache) through the commands
beyond dashboards: ``probe``, ``steer`` and ``export neuronpedia`` give what its folder gives; offline."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from app.cli import app
from tests.interp.test_releases import RELEASE, hub, plant  # noqa: F401  (hub: the fixture)


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_probe_steer_and_export_take_a_release_sae(hub, live_workspace, tmp_path):  # noqa: F811
    sae = live_workspace / "runs" / "live" / "sae_0"
    spec = plant(hub, sae, "blocks.0.hook_resid_pre")
    cache = live_workspace / "cached_activations" / "demo"
    analyses = tmp_path / "analyses"
    for s in (spec, str(sae)):
        cli("analyze", "features", s, "--cache", str(cache), "--out", str(analyses), "--n-top", "3")
    text = "To be, or not to be, that is the question"
    probed = {s: json.loads(cli("probe", text, "--sae", s, "--model", "demo", "--analyses", str(analyses), "--json"))
              for s in (spec, str(sae))}
    assert probed[spec]["top_features"][0]["label"] and probed[spec] == probed[str(sae)]  # labels: its dashboards'
    steered = {s: json.loads(cli("steer", "The king", "--sae", s, "--feature", "3", "--model", "demo", "--tokens",
                                 "6", "--json")) for s in (spec, str(sae))}
    assert steered[spec] == steered[str(sae)]

    result = CliRunner().invoke(app, ["probe", text, "--sae", spec])  # no run records its model
    assert result.exit_code == 2 and "pass --model" in result.output and "Traceback" not in result.output

    out = cli("export", "neuronpedia", spec, "--analyses", str(analyses), "--out", str(tmp_path / "np"))
    folder = tmp_path / "np" / "demo" / f"1-saelens-{RELEASE}-blocks-0-hook-resid-pre"
    assert str(folder) in out
    direct = cli("export", "neuronpedia", str(sae), "--analyses", str(analyses), "--out", str(tmp_path / "np"))
    from interp.pipeline.export import read_neuronpedia

    ours, theirs = read_neuronpedia(folder), read_neuronpedia(tmp_path / "np" / "demo" / "1-live-sae-0")
    assert str(tmp_path / "np" / "demo" / "1-live-sae-0") in direct
    for table in ("features", "logits", "examples", "histograms"):
        assert ours["tables"][table].equals(theirs["tables"][table]), table
