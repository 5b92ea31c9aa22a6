"""The sweep helper: a grid trained on one cache, evaluated together, finished runs skipped on a rerun."""

from __future__ import annotations

import json

import pytest

from interp.pipeline.evals import EvalConfig
from interp.store.analysis_folder import AnalysisFolder
from interp.store.errors import InputError
from sae_training import sweep
from sae_training.sweep import load_sweep, run_sweep, sweep_configs


def spec_file(tmp_path, cache, **extra):
    spec = {"base": {"cache": str(cache), "hook": "blocks.1.hook_resid_post", "architecture": "topk", "d_sae": 16,
                     "n_tokens": 256 * 4, "batch_size": 256, "lr": 1e-3, "log_every": 2, "checkpoint_every": 4,
                     "eval_batches": 1, "eval_ce_batches": 0, "buffer_tokens": 1024},
            "grid": {"k": [2, 4], "seed": [0, 1]}, "metrics": ["core", "stability"], "prefix": "s", **extra}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(spec))
    return path


def test_a_grid_is_trained_evaluated_and_skipped_when_done(workspace, tiny_model, tmp_path, monkeypatch):
    spec = load_sweep(spec_file(tmp_path, workspace / "cached_activations" / "demo"))
    assert [run_id for run_id, _ in sweep_configs(spec)] == ["s-k2-seed0", "s-k2-seed1", "s-k4-seed0", "s-k4-seed1"]
    config = EvalConfig(core_tokens=512, ce_batches=1, ce_batch_size=2)
    runs, report = run_sweep(spec, tmp_path, config, model=tiny_model, progress=lambda _: None)
    assert [r.name for r in runs] == ["s-k2-seed0", "s-k2-seed1", "s-k4-seed0", "s-k4-seed1"]
    core = AnalysisFolder(tmp_path / "analyses" / "s-k4-seed1" / "sae_0").read_eval("core")
    assert 3.9 < core["eval_result_metrics"]["sparsity"]["l0"] <= 4.0  # k 4 (SAELens' ReLU after TopK may drop one)
    partners = AnalysisFolder(tmp_path / "analyses" / "s-k2-seed0" / "sae_0").read_eval("stability")
    assert [d["partner"] for d in partners["eval_result_details"]] == ["s-k2-seed1/sae_0"]  # same config, other seed
    trained = []
    monkeypatch.setattr(sweep, "train_saes", lambda *a, **k: trained.append(a))
    _, again = run_sweep(spec, tmp_path, config, model=tiny_model, progress=lambda _: None)
    assert trained == [] and again.computed == []


def test_bad_specs_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_sweep(tmp_path / "none.json")
    with pytest.raises(InputError, match="non-empty list"):
        load_sweep(spec_file(tmp_path, "c", grid={"k": []}))
    with pytest.raises(InputError, match="unknown metrics"):
        load_sweep(spec_file(tmp_path, "c", metrics=["recall"]))
    with pytest.raises(InputError, match="unknown keys"):
        load_sweep(spec_file(tmp_path, "c", seeds=[1]))
