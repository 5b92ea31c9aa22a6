"""SAELens release SAEs offline: ``saelens:<release>/<sae_id>`` from a hub-layout cache the test lays out."""

from __future__ import annotations

import shutil

import pytest
import torch
from typer.testing import CliRunner

from interp.features.dictionary import DictionaryError, load_dictionary
from interp.features.releases import split_release_spec
from tests.offline import forbid_network

RELEASE = "gpt2-small-res-jb"  # a release of SAELens' own directory; the test plants our SAE where it points
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _entry(sae_id: str) -> tuple[str, str]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory()[RELEASE]
    return lookup.repo_id, lookup.saes_map[sae_id]


def plant(hub, sae_folder, sae_id: str) -> str:
    """Lay ``sae_folder`` out as the hub would cache the release's SAE ``sae_id``; return its spec."""
    repo_id, folder = _entry(sae_id)
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(sae_folder, repo / "snapshots" / REVISION / folder)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return f"saelens:{RELEASE}/{sae_id}"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache as the hub's default; the network refused, yet the hub *not* told offline,
    so the resolver has to hold it offline itself."""
    import huggingface_hub.constants

    forbid_network(monkeypatch)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    (tmp_path / "hf" / "hub").mkdir(parents=True)
    return tmp_path / "hf" / "hub"


def test_a_release_sae_gives_the_same_activations_as_its_folder(hub, workspace):
    sae = workspace / "runs" / "demo-mfr" / "sae_0"
    spec = plant(hub, sae, "blocks.0.hook_resid_pre")
    released, folder = load_dictionary(spec), load_dictionary(sae)
    x = torch.randn(64, folder.d_in, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (folder.encode(x) != 0).any()
        torch.testing.assert_close(released.encode(x), folder.encode(x), rtol=0, atol=0)
        torch.testing.assert_close(released.W_dec, folder.W_dec, rtol=0, atol=0)
    assert released.hook_name == folder.hook_name == "blocks.1.hook_resid_post"


def test_dashboards_of_a_release_sae_equal_its_folders(hub, workspace, tiny_model, tmp_path):
    from interp.features.dashboards import DashboardConfig
    from interp.pipeline import analyze_features

    sae = workspace / "runs" / "demo-mfr" / "sae_0"
    spec = plant(hub, sae, "blocks.0.hook_resid_pre")
    cache = workspace / "cached_activations" / "demo"
    settings = {"cache_dir": cache, "model_spec": tiny_model, "config": DashboardConfig(n_top=3), "max_rows": 1024}
    (ours,) = analyze_features(spec, tmp_path / "a", **settings)
    (direct,) = analyze_features(sae, tmp_path / "b", **settings)
    assert ours.path == tmp_path / "a" / "saelens" / f"{RELEASE}--blocks.0.hook_resid_pre"
    for table in ("features", "examples", "logits", "histograms"):
        left, right = ours.read_table(table), direct.read_table(table)
        assert len(left) > 0
        assert left.equals(right)
    assert ours.meta()["sae"] == spec


def test_a_release_not_in_the_cache_says_how_to_download_it(hub, workspace):
    plant(hub, workspace / "runs" / "demo-mfr" / "sae_0", "blocks.0.hook_resid_pre")
    with pytest.raises(DictionaryError) as error:  # same release, an id never downloaded
        load_dictionary(f"saelens:{RELEASE}/blocks.3.hook_resid_pre")
    message = str(error.value)
    assert "\n" not in message and "not in the local Hugging Face cache" in message
    assert f"SAE.from_pretrained('{RELEASE}', 'blocks.3.hook_resid_pre')" in message and "HF_HOME" in message


def test_unknown_releases_and_ids_name_what_is_valid(hub):
    with pytest.raises(DictionaryError, match="'no-such-release' is not a SAELens release"):
        split_release_spec("saelens:no-such-release/x")
    with pytest.raises(DictionaryError, match="no SAE id 'blocks.99.x'.*its ids: blocks.0.hook_resid_pre"):
        split_release_spec(f"saelens:{RELEASE}/blocks.99.x")
    assert split_release_spec("saelens:owner/repo/layer_3/width_16k") == ("owner/repo", "layer_3/width_16k")


def test_cli_dashboards_and_bad_width_from_a_release(hub, workspace, tmp_path):
    """``workbench analyze features saelens:...`` writes the dashboards; an SAE whose d_in does not fit the
    hook, or a release missing from the cache, is one error line."""
    from app.cli import app
    from sae_training.architectures import SAEShape, build_sae
    from sae_training.saelens_io import save_member

    cache = workspace / "cached_activations" / "demo"
    spec = plant(hub, workspace / "runs" / "demo-mfr" / "sae_0", "blocks.0.hook_resid_pre")
    out = tmp_path / "analyses"
    result = CliRunner().invoke(app, ["analyze", "features", spec, "--cache", str(cache), "--out", str(out),
                                      "--no-logits", "--n-top", "3"])
    assert result.exit_code == 0, result.output
    assert (out / "saelens" / f"{RELEASE}--blocks.0.hook_resid_pre").is_dir()

    narrow = save_member(tmp_path / "narrow", build_sae("topk", SAEShape(16, 32, n_members=1), {"k": 4}, seed=0), 0,
                         hook_name="blocks.1.hook_resid_post")
    wrong = plant(hub, narrow, "blocks.1.hook_resid_pre")
    for bad, message in (
        (wrong, "expects d_in=16"),
        (f"saelens:{RELEASE}/blocks.2.hook_resid_pre", "not in the local"),
    ):
        result = CliRunner().invoke(
            app, ["analyze", "features", bad, "--cache", str(cache), "--out", str(out), "--no-logits"]
        )
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
