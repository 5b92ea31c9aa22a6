"""Every model family through ``load_model(path)``, offline: logits equal transformers', bad families refused."""

from __future__ import annotations

import pytest
import torch

from interp.models import families
from interp.models.loading import ModelSpecError, demo_tokenizer, load_model
from tests.interp.model_families import FAMILIES, save_checkpoint
from tests.offline import forbid_network


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Family name -> (checkpoint folder, the transformers model saved there), each built on first use."""
    built = {}

    def get(name: str):
        if name not in built:
            folder = tmp_path_factory.mktemp(name)
            built[name] = (folder, save_checkpoint(name, folder))
        return built[name]

    return get


@pytest.fixture
def offline(monkeypatch):
    forbid_network(monkeypatch)


@pytest.mark.parametrize("fold_ln", [False, True], ids=["unprocessed", "processed"])
@pytest.mark.parametrize("name", FAMILIES)
def test_family_loads_offline_and_matches_transformers(name, fold_ln, checkpoints, offline):
    folder, hf_model = checkpoints(name)
    model = load_model(str(folder), device="cpu", fold_ln=fold_ln)
    tokens = torch.randint(0, hf_model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(tokens), hf_model(tokens).logits
    if fold_ln:  # centring the unembedding shifts each position's logits by a constant: compare log-probs
        ours, theirs = ours.log_softmax(-1), theirs.log_softmax(-1)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 64
    text = "To be, or not"  # the checkpoint's own tokenizer came along
    expected = demo_tokenizer().encode(text, add_special_tokens=False)
    assert model.to_tokens(text, prepend_bos=False)[0].tolist() == expected


def test_gpt2_context_comes_from_n_positions_when_n_ctx_is_absent(checkpoints, offline):
    folder, hf_model = checkpoints("gpt2")
    assert "n_ctx" not in hf_model.config.to_dict()
    assert load_model(str(folder), device="cpu").cfg.n_ctx == hf_model.config.n_positions


def test_a_path_naming_another_family_does_not_change_the_config(tmp_path, offline):
    """TransformerLens picks Llama/Gemma configs by name: a Qwen checkpoint in a folder called 'llama-gemma' must
    still load as Qwen (the name-based branch used to discard its config)."""
    folder = tmp_path / "my-llama-gemma-run"
    hf_model = save_checkpoint("qwen-2", folder)
    model = load_model(str(folder), device="cpu")
    assert model.cfg.original_architecture == "Qwen2ForCausalLM"
    tokens = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_model(tokens).logits, rtol=0, atol=1e-4)


def test_unsupported_family_names_itself_and_the_supported_list(tmp_path, offline):
    from transformers import FalconConfig

    FalconConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, architectures=["FalconForCausalLM"]
                 ).save_pretrained(tmp_path)  # config only: the family is refused before weights are read
    with pytest.raises(families.UnsupportedFamilyError) as error:
        load_model(str(tmp_path), device="cpu")
    message = str(error.value)
    assert "\n" not in message and "'FalconForCausalLM'" in message
    assert all(name in message for name in families.TESTED_FAMILIES.values())


def test_a_conversion_that_disagrees_with_transformers_is_refused(checkpoints, offline, monkeypatch):
    """The load-time check catches a silently wrong conversion: here Gemma 2's query scale dropped."""
    folder, _ = checkpoints("gemma-2")
    convert = families.gemma_config_dict

    def without_scale(hf_config):
        cfg = convert(hf_config)
        del cfg["attn_scale"]
        return cfg

    monkeypatch.setattr(families, "gemma_config_dict", without_scale)
    with pytest.raises(ModelSpecError, match="disagrees with transformers"):
        load_model(str(folder), device="cpu")
    assert load_model(str(folder), device="cpu", verify=False).cfg.attn_scale == 4.0  # sqrt(d_head 16), wrong


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_whole_chain_runs_on_each_family(name, checkpoints, offline, tmp_path):
    """cache -> TopK pair under MFR -> dashboards -> probe -> circuits, through the pipeline's own calls, on each
    family."""
    import numpy as np

    from interp.cache.store import CacheFolder
    from interp.cache.writer import CacheConfig, build_cache
    from interp.circuits.prompts import induction_prompts
    from interp.features.dashboards import DashboardConfig
    from interp.features.dictionary import load_dictionary
    from interp.features.probe import probe_tokens
    from interp.pipeline import analyze_circuits, analyze_features
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    folder, _ = checkpoints(name)
    model = load_model(str(folder), device="cpu")
    hook = "blocks.1.hook_resid_post"
    cache = build_cache(CacheConfig(model=str(folder), hooks=(hook,), n_tokens=1024, context_size=32,
                                    shard_tokens=512), root=tmp_path / "cached_activations", cache_id=name,
                        device="cpu", progress=False, model=model)
    assert CacheFolder(cache).d(hook) == 64
    run = tmp_path / "runs" / name
    train_saes(TrainConfig(cache=str(cache), hook=hook, architecture="topk", d_sae=64, k=4, n_members=2,
                           mfr_coefficient=1.0, mfr_warmup_steps=1, n_tokens=128 * 4, batch_size=128, log_every=2,
                           checkpoint_every=4, eval_batches=1, eval_ce_batches=0, buffer_tokens=512),
               run, progress=False, model=model)
    folders = analyze_features(run, tmp_path / "analyses", cache_dir=cache, model_spec=model,
                               config=DashboardConfig(n_top=3), max_rows=512)
    assert len(folders) == 2 and all(len(folder.read_table("features")) == 64 for folder in folders)
    # probing the first cached window's tokens gives the SAE's codes of their cached activations
    store = CacheFolder(cache)
    tokens, acts = store.tokens(0), store.activations(hook, 0).float()
    rows = ((tokens["sequence"] == tokens["sequence"][0]) & (tokens["position"] > 0)).nonzero().flatten()
    sae = load_dictionary(run / "sae_0")
    probed = probe_tokens(model, {"sae_0": sae}, tokens["token_ids"][rows].tolist())
    with torch.no_grad():
        expected = sae.encode(acts[rows]).numpy()
    assert probed.windows == [(0, len(rows))] and (expected > 0).any()
    np.testing.assert_allclose(probed.codes["sae_0"].toarray(), expected, atol=1e-4)
    prompts = induction_prompts(model, 2, 6)
    summary = analyze_circuits(model, prompts.clean, prompts.corrupt, prompts.metric(), prompts.second_copy,
                               tmp_path / "analyses" / "circuits" / name, sae_folder=run / "sae_0", sae_hook=hook)
    assert summary["n_prompts"] == 2 and len(summary["heads"]["induction"]) == 2
    rotary = model.cfg.positional_embedding_type == "rotary"  # the SVD trace needs additive positions
    assert ("skipped" in summary["svd_trace"]) == rotary and "feature_circuit" in summary


def test_attribution_patching_matches_exact_on_a_rotary_grouped_query_model(checkpoints, offline):
    """AtP*'s QK term reads the rotated queries and grouped keys through the head's own score function: on
    small edits of every head's output it matches exact patching (a wrong rotation or key grouping breaks it)."""
    from interp.circuits.patching import agreement, attribution_patching, next_token_metric, patch_heads, path_patch

    folder, _ = checkpoints("llama")
    model = load_model(str(folder), device="cpu")
    assert model.cfg.positional_embedding_type == "rotary" and model.cfg.n_key_value_heads == 2
    clean = torch.randint(5, 4000, (3, 12), generator=torch.Generator().manual_seed(0))
    names = [f"blocks.{layer}.{site}" for site in ("hook_resid_pre", "attn.hook_z") for layer in range(2)]
    _, cache = model.run_with_cache(clean)
    noise = torch.Generator().manual_seed(1)
    edits = {n: cache[n] + 0.01 * torch.randn(cache[n].shape, generator=noise) * cache[n].std() for n in names}
    metric = next_token_metric(clean, slice(None))
    exact = patch_heads(model, clean, edits, metric)
    star = attribution_patching(model, clean, edits, metric)["heads"]
    assert agreement(exact, star)["pearson"] > 0.999  # 0.91 when the QK term read the unrotated q, k
    assert float((star - exact).abs().max() / exact.abs().max()) < 0.1  # 0.43 then
    paths = path_patch(model, clean, edits, metric, sides=("k",))  # a key shared by 2 heads: one effect for both
    torch.testing.assert_close(paths[0, 0, :, 1, 0], paths[0, 0, :, 1, 1])
    assert paths[0, 0, :, 1].abs().max() > 0
