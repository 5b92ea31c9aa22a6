"""Every architecture saved as a SAELens folder opens with sae_lens' own loader and agrees with ours."""

import json

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import load_file, save_file

from interp.features.dictionary import Dictionary, DictionaryError
from sae_training.architectures import ARCHITECTURES, SAEShape, architecture_options, build_sae
from sae_training.saelens_io import MemberDictionary, check_saelens_folder, load_saelens, save_member


def trained_like(name: str):
    torch.manual_seed(0)
    own = {spec.name for spec in architecture_options(name)}
    options = {"k": 5, "k_schedule": "multiply"} if "k" in own else {}
    sae = build_sae(name, SAEShape(16, 48, n_members=2), options, seed=3)
    with torch.no_grad():  # move away from the symmetric init so every tensor matters
        for param in sae.parameters():
            param.add_(0.05 * torch.randn_like(param))
        if name in ("batchtopk", "matryoshka"):
            sae.threshold.fill_(0.2)
        if name == "jumprelu":
            sae.threshold.uniform_(0.0, 0.3)
    return sae.eval()


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_saelens_loader_matches_our_encode_decode(tmp_path, name):
    sae, scale = trained_like(name), 0.37
    save_member(tmp_path, sae, 1, scale=scale, hook_name="blocks.1.hook_resid_post", model_name="demo",
                density=torch.rand(48))
    theirs = SAE.load_from_disk(str(tmp_path))
    ours = MemberDictionary(sae, 1, scale)
    x = 3.0 * torch.randn(64, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), atol=1e-5, rtol=1e-5)
        f = ours.encode(x)
        assert (f != 0).any()
        torch.testing.assert_close(theirs.decode(f), ours.decode(f), atol=1e-5, rtol=1e-5)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert load_file(str(tmp_path / "sparsity.safetensors"))["sparsity"].shape == (48,)
    assert isinstance(load_saelens(tmp_path), Dictionary)


def test_folder_with_a_missing_tensor_is_refused(tmp_path):
    save_member(tmp_path, trained_like("jumprelu"), 0, hook_name="h")
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    del tensors["threshold"]
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(DictionaryError, match="no tensor 'threshold'"):
        load_saelens(tmp_path)


def test_folder_with_a_wrong_shape_is_refused(tmp_path):
    save_member(tmp_path, trained_like("topk"), 0, hook_name="h")
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    tensors["W_dec"] = tensors["W_dec"][:10].contiguous()
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(DictionaryError, match="'W_dec' has shape"):
        check_saelens_folder(tmp_path)


def test_folder_without_cfg_is_refused(tmp_path):
    with pytest.raises(DictionaryError, match="cfg.json is missing"):
        load_saelens(tmp_path)
