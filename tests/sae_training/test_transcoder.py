"""Transcoders from the SAE trainer: a planted sparse map is recovered, the skip learns a planted linear part,
the folder round-trips through our loader and SAELens' own, and bad configs are refused."""

import json

import pytest
import torch
from sae_lens import SAE

from interp.features.transcoder import Transcoder, load_transcoder
from sae_training.config import ConfigError, TrainConfig
from sae_training.metrics import ground_truth_similarity
from sae_training.trainer import train_saes

D, N_FEATURES = 32, 32


def planted_pairs(n=20_000, linear: float = 0.0, seed=0):
    """Sparse codes ``c`` read from ``x = c A`` and written as ``y = c B``: a sparse map from input directions
    A to output directions B. With ``linear``, x gets a dense part ``n`` and ``y`` adds ``linear · x Mᵀ``:
    only a linear map predicts ``M n`` (the skip's job; features could absorb ``c A Mᵀ`` alone)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.nn.functional.normalize(torch.randn(N_FEATURES, D, generator=g), dim=-1)
    B = torch.nn.functional.normalize(torch.randn(N_FEATURES, D, generator=g), dim=-1)
    M = torch.randn(D, D, generator=g) / D ** 0.5
    codes = (1 + torch.rand(n, N_FEATURES, generator=g)) * (torch.rand(n, N_FEATURES, generator=g) < 0.06)
    x = codes @ A + (0.3 * torch.randn(n, D, generator=g) if linear else 0.0)
    y = codes @ B + linear * x @ M.T
    return torch.cat([x, y], dim=1), A, B, M


def config(**overrides):
    base = {"hook": "blocks.0.ln2.hook_normalized", "target_hook": "blocks.0.hook_mlp_out", "architecture": "topk",
            "d_sae": 2 * N_FEATURES, "k": 4, "n_members": 1, "n_tokens": 256 * 300, "batch_size": 256, "lr": 1e-2,
            "log_every": 50, "checkpoint_every": 300, "buffer_tokens": 8192, "eval_batches": 4,
            "normalize_activations": "none", "b_dec_init": "zeros", "dead_window": 50}
    base.update(overrides)
    if base["architecture"] in ("relu",):
        base.pop("k")
        base["l1_coefficient"] = 0.05
    if base["architecture"] == "jumprelu":
        base.pop("k")
        base["l0_coefficient"] = 0.01
    return TrainConfig(**base)


def test_a_planted_sparse_map_is_recovered(tmp_path):
    pairs, A, B, _ = planted_pairs()
    run = train_saes(config(), tmp_path / "run", activations=pairs, progress=False)
    member = run.member(0)
    similarity = ground_truth_similarity(member.W_dec, B)
    assert similarity["recovered_fraction"] > 0.9, similarity  # decoder rows are the planted output directions
    evaluation = json.loads((run.directory / "eval.json").read_text())["members"][0]
    assert evaluation["fvu"] < 0.1 and evaluation["l0"] <= 4
    # the encoder reads the input directions A, the decoder writes B (an SAE on the inputs would write A)
    assert ground_truth_similarity(member.W_dec, A)["recovered_fraction"] < 0.2
    assert ground_truth_similarity(member.W_enc.T, A)["mmcs_true_max"] > 0.5


def test_the_skip_connection_learns_the_planted_linear_part(tmp_path):
    pairs, _, _, M = planted_pairs(linear=1.0)
    with_skip = train_saes(config(skip_connection=True), tmp_path / "skip", activations=pairs, progress=False)
    without = train_saes(config(), tmp_path / "plain", activations=pairs, progress=False)
    fvu = [json.loads((r.directory / "eval.json").read_text())["members"][0]["fvu"] for r in (with_skip, without)]
    assert fvu[0] < 0.5 * fvu[1], fvu
    learnt = with_skip.member(0).W_skip
    assert torch.nn.functional.cosine_similarity(learnt.flatten(), M.flatten(), dim=0) > 0.9


@pytest.mark.parametrize("architecture,skip", [("topk", True), ("relu", False), ("relu", True),
                                               ("jumprelu", True), ("batchtopk", False)])
def test_saved_folder_reads_back_through_our_loader_and_saelens(tmp_path, architecture, skip):
    pairs, _, _, _ = planted_pairs(n=4096, linear=0.5)
    run = train_saes(config(architecture=architecture, skip_connection=skip, n_tokens=512 * 20, n_members=2,
                            normalize_activations="expected_average_only_in"),
                     tmp_path / "run", activations=pairs, progress=False)
    x = pairs[:256, :D] * 3.0
    for i in range(2):
        ours, loaded = run.member(i), load_transcoder(run.directory / f"sae_{i}")
        assert isinstance(loaded, Transcoder) and loaded.hook_in == "blocks.0.ln2.hook_normalized"
        assert loaded.hook_out == "blocks.0.hook_mlp_out" and (loaded.W_skip is not None) == skip
        torch.testing.assert_close(loaded(x), ours(x))
        with torch.no_grad():
            direct = run.sae.eval()(x * run.scale)[i] / run.scale  # the trained module itself, scale folded back
        torch.testing.assert_close(loaded(x), direct, atol=1e-5, rtol=1e-4)
        if loaded.activation != "topk":  # SAELens 6 has ReLU and JumpReLU transcoders, no TopK one
            theirs = SAE.load_from_disk(str(run.directory / f"sae_{i}"))
            with torch.no_grad():
                torch.testing.assert_close(theirs.encode(x), loaded.encode(x), atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(theirs(x), loaded(x), atol=1e-5, rtol=1e-4)


def test_analyses_open_a_transcoder_folder_as_a_dictionary(tmp_path):
    """Dashboards, geometry and matching take transcoders too (TopK ones included, which SAELens cannot open)."""
    from interp.features.dictionary import Dictionary, load_dictionary

    pairs, _, _, _ = planted_pairs(n=2048)
    run = train_saes(config(n_tokens=256 * 4), tmp_path / "run", activations=pairs, progress=False)
    dictionary = load_dictionary(run.directory / "sae_0")
    assert isinstance(dictionary, Dictionary) and dictionary.hook_name == "blocks.0.ln2.hook_normalized"
    torch.testing.assert_close(dictionary.encode(pairs[:64, :D]), run.member(0).encode(pairs[:64, :D]))


def test_circuit_tracer_layout_reads_back(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    tc = Transcoder(torch.randn(D, 40, generator=g), torch.randn(40, generator=g), torch.randn(40, D, generator=g),
                    torch.randn(D, generator=g), "topk", k=5, W_skip=torch.randn(D, D, generator=g))
    save_file(tc.circuit_tracer_tensors(), str(tmp_path / "layer_0.safetensors"))
    loaded = load_transcoder(tmp_path / "layer_0.safetensors")
    x = torch.randn(8, D, generator=g)
    assert loaded.activation == "topk" and loaded.k == 5
    torch.testing.assert_close(loaded(x), tc(x))
    assert ((loaded.encode(x) != 0).sum(-1) <= 5).all()


def test_a_stopped_transcoder_run_resumes_exactly(tmp_path):
    pairs, _, _, _ = planted_pairs(n=4096, linear=0.5)
    cfg = config(skip_connection=True, n_tokens=256 * 12, checkpoint_every=4, log_every=2)
    whole = train_saes(cfg, tmp_path / "whole", activations=pairs, progress=False)
    train_saes(cfg, tmp_path / "parts", activations=pairs, progress=False, stop_at_step=6)
    resumed = train_saes(cfg, tmp_path / "parts", activations=pairs, progress=False, resume=True)
    for name, value in whole.sae.state_dict().items():
        torch.testing.assert_close(resumed.sae.state_dict()[name], value, rtol=0, atol=0)


def test_bad_transcoder_configs_are_refused():
    with pytest.raises(ConfigError, match="transcoder can be trained as"):
        TrainConfig(hook="blocks.0.ln2.hook_normalized", target_hook="blocks.0.hook_mlp_out", architecture="gated")
    with pytest.raises(ConfigError, match="set target_hook"):
        TrainConfig(skip_connection=True)
    with pytest.raises(ConfigError, match="that is an SAE"):
        config(target_hook="blocks.0.ln2.hook_normalized")
    with pytest.raises(ConfigError, match="not live"):
        config(model="demo")


def test_an_sae_config_keeps_its_hash():
    """Adding the transcoder fields must not change an SAE's resume key (old checkpoints still resume)."""
    sae = TrainConfig(architecture="topk", k=8)
    assert "target_hook" not in sae.resume_key() and "skip_connection" not in sae.resume_key()
    assert config().resume_key()["target_hook"] == "blocks.0.hook_mlp_out"
