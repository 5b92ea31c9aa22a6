"""Trainer: run layout, exact resume, refusals (changed config, NaN, width mismatch), a real cache + CE."""

import json
import os
import signal
import threading
import time

import pytest
import torch
from sae_lens import SAE

from sae_training.config import ConfigError, TrainConfig
from sae_training.metrics import ce_loss_recovered
from sae_training.run_status import RUNNING_FILE, checkpoint_step, running_pid
from sae_training.trainer import TrainingError, read_metrics, train_saes


def planted(n=6000, d=16, n_features=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(n_features, d, generator=g), dim=-1)
    codes = torch.rand(n, n_features, generator=g) * (torch.rand(n, n_features, generator=g) < 0.1)
    return codes @ features, features


def small_config(**overrides):
    base = dict(architecture="topk", d_sae=32, k=4, n_members=2, mfr_coefficient=1.0, mfr_warmup_steps=5,
                n_tokens=256 * 24, batch_size=256, lr=3e-3, log_every=3, checkpoint_every=6,
                buffer_tokens=2048, eval_batches=2)
    values = {**base, **overrides}
    if values["architecture"] in ("gated", "relu"):  # no k: an L1 coefficient instead
        values.pop("k")
        values["l1_coefficient"] = 0.1
    return TrainConfig(**values)


def test_run_folder_holds_config_metrics_checkpoints_members_and_eval(tmp_path):
    x, _ = planted()
    run = train_saes(small_config(), tmp_path / "run", activations=x, progress=False)
    metrics = read_metrics(run.directory)
    assert [m["step"] for m in metrics] == list(range(3, 25, 3))
    for key in ("step", "tokens", "loss", "mse", "fvu", "l0", "dead_fraction", "mfr_penalty", "mmcs", "members"):
        assert key in metrics[-1]
    assert metrics[-1]["fvu"] < metrics[0]["fvu"]
    assert TrainConfig.load(run.directory / "config.json") == run.config
    evaluation = json.loads((run.directory / "eval.json").read_text())
    assert len(evaluation["members"]) == 2 and 0 <= evaluation["mmcs"] <= 1
    for i in range(2):
        sae = SAE.load_from_disk(str(run.directory / f"sae_{i}"))
        assert sae.cfg.metadata.hook_name == run.config.hook
        with torch.no_grad():
            torch.testing.assert_close(sae.encode(x[:50]), run.member(i).encode(x[:50]), atol=1e-4, rtol=1e-4)


def test_a_run_finished_without_evaluation_still_leaves_its_saelens_folders(tmp_path):
    x, _ = planted()
    train_saes(small_config(), tmp_path / "run", activations=x, progress=False, stop_at_step=6, evaluate=False)
    assert not list((tmp_path / "run").glob("sae_*"))  # a stopped run exports nothing yet
    run = train_saes(small_config(), tmp_path / "run", activations=x, progress=False, resume=True, evaluate=False)
    assert run.evaluation is None and not (run.directory / "eval.json").exists()
    assert sorted(p.name for p in run.directory.glob("sae_*")) == ["sae_0", "sae_1"]
    for i in range(2):
        sae = SAE.load_from_disk(str(run.directory / f"sae_{i}"))  # the peer's own loader
        assert sae.cfg.metadata.hook_name == run.config.hook
        assert not (run.directory / f"sae_{i}" / "sparsity.safetensors").exists()  # density comes from eval
        with torch.no_grad():
            torch.testing.assert_close(sae.encode(x[:50]), run.member(i).encode(x[:50]), atol=1e-4, rtol=1e-4)
            f = run.member(i).encode(x[:50])
            torch.testing.assert_close(sae.decode(f), run.member(i).decode(f), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "matryoshka", "gated", "relu"])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, architecture, monkeypatch):
    from sae_training.architectures import sparse_relu

    # relu: the code density climbs from 0.51 to 0.58 in this run, so both paths run (counted below)
    monkeypatch.setattr(sparse_relu, "SPARSE_BELOW", 0.56)
    sparse_steps = []
    real_codes = sparse_relu.sparse_relu_codes
    monkeypatch.setattr(sparse_relu, "sparse_relu_codes", lambda *a: sparse_steps.append(1) or real_codes(*a))
    x, _ = planted()
    config = small_config(architecture=architecture, mfr_match_every=4)
    full = train_saes(config, tmp_path / "full", activations=x, progress=False, evaluate=False)
    train_saes(config, tmp_path / "split", activations=x, progress=False, stop_at_step=12, evaluate=False)
    resumed = train_saes(config, tmp_path / "split", activations=x, progress=False, resume=True, evaluate=False)
    if architecture == "relu":
        assert 0 < len(sparse_steps) < 2 * config.n_steps
    assert read_metrics(tmp_path / "split") == read_metrics(tmp_path / "full")
    for name, value in full.sae.state_dict().items():
        assert torch.equal(value, resumed.sae.state_dict()[name]), name


def sigterm_after_logged_steps(run_dir, n_lines: int) -> threading.Thread:
    """SIGTERM this process once ``metrics.jsonl`` in ``run_dir`` has ``n_lines`` lines (the app's Stop)."""
    def watch():
        metrics, deadline = run_dir / "metrics.jsonl", time.time() + 60
        while time.time() < deadline:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= n_lines:
                assert running_pid(run_dir) == os.getpid()  # running.json names this process meanwhile
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sigterm_checkpoints_the_current_step_and_the_resume_is_exact(tmp_path):
    x, _ = planted()
    config = small_config(n_tokens=256 * 4000, log_every=1, checkpoint_every=10_000, mfr_match_every=4)
    watcher = sigterm_after_logged_steps(tmp_path / "split", 3)
    stopped = train_saes(config, tmp_path / "split", activations=x, progress=False)
    watcher.join()
    assert 3 <= stopped.step < config.n_steps and stopped.evaluation is None
    assert checkpoint_step(tmp_path / "split") == stopped.step
    assert not (tmp_path / "split" / RUNNING_FILE).exists() and running_pid(tmp_path / "split") is None
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler lives only while training
    until = stopped.step + 5
    resumed = train_saes(config, tmp_path / "split", activations=x, progress=False, resume=True,
                         stop_at_step=until, evaluate=False)
    full = train_saes(config, tmp_path / "full", activations=x, progress=False, stop_at_step=until,
                      evaluate=False)
    assert read_metrics(tmp_path / "split") == read_metrics(tmp_path / "full")
    for name, value in full.sae.state_dict().items():
        assert torch.equal(value, resumed.sae.state_dict()[name]), name


def test_resume_with_a_changed_config_is_refused(tmp_path):
    x, _ = planted()
    train_saes(small_config(), tmp_path / "r", activations=x, progress=False, stop_at_step=6, evaluate=False)
    with pytest.raises(ConfigError, match="config changed.*options.k: 4 -> 8"):
        train_saes(small_config(k=8), tmp_path / "r", activations=x, progress=False, resume=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        train_saes(small_config(), tmp_path / "r", activations=x, progress=False)


def test_nan_in_activations_stops_with_the_step_and_keeps_the_checkpoint(tmp_path):
    x, _ = planted()
    x[100:] = float("nan")  # the stats sample may see clean rows; training batches soon hit NaN
    with pytest.raises(TrainingError, match="non-finite activations in the batch of step"):
        train_saes(small_config(normalize_activations="none", b_dec_init="zeros"), tmp_path / "n",
                   activations=x, progress=False)


def test_width_mismatch_and_missing_data_are_refused(tmp_path):
    x, _ = planted()
    with pytest.raises(ConfigError, match="d_in=20 but the activations"):
        train_saes(small_config(d_in=20), tmp_path / "w", activations=x, progress=False)
    with pytest.raises(ConfigError, match="no training data"):
        train_saes(small_config(), tmp_path / "w2", progress=False)
    with pytest.raises(ConfigError, match="MFR needs an ensemble"):
        small_config(n_members=1)


def test_ce_loss_recovered_is_one_for_identity_and_zero_for_zero(tiny_model):
    tokens = torch.randint(0, 4096, (2, 16))
    hook = "blocks.0.hook_resid_post"
    assert ce_loss_recovered(tiny_model, hook, tokens, lambda x: x)["ce_loss_recovered"] == pytest.approx(1.0)
    zero = ce_loss_recovered(tiny_model, hook, tokens, torch.zeros_like)["ce_loss_recovered"]
    assert zero == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_training_from_a_cache_writes_ce_loss_recovered(tmp_path, tiny_model):
    from interp.cache.writer import CacheConfig, build_cache

    cache_config = CacheConfig(model="demo", data="demo", hooks=("blocks.1.hook_resid_post",), n_tokens=4096,
                               context_size=32, batch_size=16, shard_tokens=1024)
    cache = build_cache(cache_config, root=tmp_path / "caches", cache_id="tiny", device="cpu", progress=False,
                        model=tiny_model)
    config = small_config(cache=str(cache), hook="blocks.1.hook_resid_post", context_size=32, n_tokens=256 * 6,
                          eval_ce_batches=1)
    run = train_saes(config, tmp_path / "run", progress=False, model=tiny_model)
    member = run.evaluation["members"][0]
    assert member["ce_clean"] != member["ce_zero_ablation"]  # a random model: ablation may even help
    assert member["ce_loss_recovered"] == pytest.approx(
        (member["ce_zero_ablation"] - member["ce_sae"]) / (member["ce_zero_ablation"] - member["ce_clean"])
    )


def test_checkpoints_are_safetensors_that_round_trip_the_whole_state(tmp_path):
    from safetensors.torch import save_file

    from sae_training.checkpoint import list_checkpoints, load_checkpoint, load_latest

    x, _ = planted()
    train_saes(small_config(), tmp_path / "r", activations=x, progress=False, stop_at_step=6, evaluate=False)
    (path,) = list_checkpoints(tmp_path / "r" / "checkpoints")
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    state = load_latest(tmp_path / "r" / "checkpoints")
    assert state["step"] == 6 and isinstance(state["scale"], float)
    groups = state["optimizer"]["param_groups"]
    assert isinstance(groups[0]["betas"], tuple) and all(isinstance(k, int) for k in state["optimizer"]["state"])
    assert state["rng"].dtype == torch.uint8 and torch.equal(state["rng"], load_checkpoint(path)["rng"])
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ConfigError, match="not a workbench checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ConfigError, match="unreadable"):
        load_checkpoint(tmp_path / "broken.safetensors")


def test_an_ensemble_without_mfr_logs_mmcs_every_mmcs_log_every_steps_and_at_the_end(tmp_path):
    from sae_training.mfr import pairwise_matched_cosine

    x, _ = planted()
    config = small_config(mfr_coefficient=0.0, log_every=2, mmcs_log_every=8, n_tokens=256 * 20)
    run = train_saes(config, tmp_path / "r", activations=x, progress=False, evaluate=False)
    logged = {m["step"]: m.get("mmcs") for m in read_metrics(tmp_path / "r")}
    assert [s for s, v in logged.items() if v is not None] == [8, 16, 20]  # multiples of 8 and the last step
    expected, _ = pairwise_matched_cosine(run.sae.W_dec.detach())
    assert logged[20] == pytest.approx(float(expected.mean()), abs=1e-6)
