"""Model loading: the demo model, a local Hugging Face checkpoint, and clear errors."""

from __future__ import annotations

import pytest
import torch

from interp.models.loading import ModelSpecError, check_hooks, load_model


def test_demo_model_loads_offline_with_its_tokenizer(demo_model):
    assert demo_model.cfg.n_layers == 2 and demo_model.cfg.d_model == 128
    assert demo_model.tokenizer.bos_token_id == 0
    tokens = demo_model.to_tokens("To be, or not to be")
    assert int(tokens[0, 0]) == demo_model.tokenizer.bos_token_id
    logits = demo_model(tokens)
    assert logits.shape == (1, tokens.shape[1], demo_model.cfg.d_vocab) and torch.isfinite(logits).all()


def test_local_hugging_face_checkpoint_matches_transformers(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp.models.loading import demo_tokenizer

    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, n_ctx=64, vocab_size=4096)
    ).eval()
    hf_model.save_pretrained(tmp_path)
    demo_tokenizer().save_pretrained(tmp_path)
    model = load_model(str(tmp_path), device="cpu")
    tokens = torch.randint(0, 4096, (2, 16))
    with torch.no_grad():
        expected = hf_model(tokens).logits
        actual = model(tokens)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert model.tokenizer is not None


def test_checkpoint_folder_with_missing_files_fails_clearly(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp.models.loading import demo_tokenizer

    GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, n_ctx=32, vocab_size=4096)
    ).save_pretrained(tmp_path)
    with pytest.raises(ModelSpecError, match="no usable tokenizer"):
        load_model(str(tmp_path), device="cpu")
    demo_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelSpecError, match="no loadable weights"):
        load_model(str(tmp_path), device="cpu")


def test_unknown_spec_and_missing_checkpoint_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSpecError, match="unknown model spec 'no-such-model'"):
        load_model("no-such-model")
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_model(str(tmp_path / "missing" / "checkpoint"))
    with pytest.raises(ModelSpecError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelSpecError, match="unknown dtype"):
        load_model("demo", dtype="float8")


def test_pretrained_name_without_local_weights_says_how_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelSpecError, match="local directory|local Hugging Face cache"):
        load_model("gpt2")


def test_check_hooks_lists_valid_names(tiny_model):
    check_hooks(tiny_model, ["blocks.0.hook_resid_post"])
    with pytest.raises(ModelSpecError, match="blocks.0.hook_nope.*valid hooks.*blocks.1.hook_resid_post"):
        check_hooks(tiny_model, ["blocks.0.hook_nope"])
