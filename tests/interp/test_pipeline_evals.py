"""``interp.pipeline.evals`` and ``workbench eval`` end to end on a small workspace of the demo model:
every metric written in SAEBench's layout, the workspace table, grouping, resuming after a failure."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from interp.evals.absorption import AbsorptionConfig
from interp.pipeline import evals as pipeline
from interp.pipeline.evals import EvalConfig, evaluate_saes
from interp.store.analysis_folder import AnalysisFolder, read_eval_table
from interp.store.errors import InputError

HOOK = "blocks.1.hook_resid_post"
SMALL = EvalConfig(core_tokens=2048, ce_batches=1, ce_batch_size=2, probe_train=30, probe_test=20, probe_context=24,
                   principled_prompts=16, absorption=AbsorptionConfig(max_words=150))
LAYOUT = {"eval_type_id", "eval_config", "eval_id", "datetime_epoch_millis", "eval_result_metrics",
          "eval_result_details", "sae_bench_commit_hash", "sae_lens_id", "sae_lens_release_id", "sae_lens_version",
          "sae_cfg_dict", "eval_result_unstructured"}


@pytest.fixture(scope="module")
def eval_workspace(tmp_path_factory, demo_model):
    """A cache of the demo model at two hooks and three small runs: a 2-member pair, its config with another
    seed, and one SAE on layer 0."""
    from interp.cache.writer import CacheConfig, build_cache
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    root = tmp_path_factory.mktemp("evals")
    cache = build_cache(CacheConfig(model="demo", hooks=("blocks.0.hook_resid_post", HOOK), n_tokens=4096,
                                    context_size=32, shard_tokens=2048),
                        root=root / "cached_activations", cache_id="demo", device="cpu", progress=False,
                        model=demo_model)
    common = dict(cache=str(cache), architecture="topk", d_sae=64, k=4, n_tokens=256 * 6, batch_size=256, lr=1e-3,
                  log_every=2, checkpoint_every=6, eval_batches=1, eval_ce_batches=0, buffer_tokens=2048)
    train_saes(TrainConfig(hook=HOOK, n_members=2, **common), root / "runs" / "pair", progress=False, model=demo_model)
    train_saes(TrainConfig(hook=HOOK, n_members=2, seed=1, **common), root / "runs" / "pair-seed1", progress=False,
               model=demo_model)
    train_saes(TrainConfig(hook="blocks.0.hook_resid_post", **common), root / "runs" / "layer0", progress=False,
               model=demo_model)
    return root


@pytest.mark.slow
def test_every_metric_in_saebench_layout_and_one_table(eval_workspace, demo_model):
    out = eval_workspace / "analyses"
    runs = eval_workspace / "runs"
    report = evaluate_saes([runs / "pair", runs / "pair-seed1", runs / "layer0"], out, config=SMALL,
                           progress=lambda _: None, model=demo_model)
    assert len(report.groups) == 2 and "2 groups" in report.notes[0] and "layer0/sae_0" in report.notes[0]
    folder = AnalysisFolder(out / "pair" / "sae_0")
    modelled = [m for m in pipeline.METRICS if m != "explanations"]  # no SAE here has explanations
    assert folder.evals() == sorted(modelled) and "no explanations table" in " ".join(report.notes)
    for metric in modelled:
        output = folder.read_eval(metric)
        assert set(output) == LAYOUT and output["sae_lens_id"] == "pair/sae_0"
        assert output["sae_cfg_dict"]["d_sae"] == 64 and output["sae_cfg_dict"]["architecture"] == "topk"
    core = folder.read_eval("core")
    assert core["eval_type_id"] == "core" and core["eval_result_metrics"]["sparsity"]["l0"] == pytest.approx(4.0)
    assert len(core["eval_result_details"]) == 64
    stability = folder.read_eval("stability")
    partners = [d["partner"] for d in stability["eval_result_details"]]
    assert partners == ["pair/sae_1", "pair-seed1/sae_0", "pair-seed1/sae_1"]  # its run and the same config, seed 1
    assert "no partner" in " ".join(report.notes) and "layer0/sae_0" in " ".join(report.notes)
    table = read_eval_table(out)
    assert set(table.sae) == {"pair/sae_0", "pair/sae_1", "pair-seed1/sae_0", "pair-seed1/sae_1", "layer0/sae_0"}
    l0 = table[(table.sae == "pair/sae_0") & (table.metric == "core") & (table.name == "l0")].value
    assert float(l0.iloc[0]) == core["eval_result_metrics"]["sparsity"]["l0"]
    again = evaluate_saes([runs / "pair"], out, config=SMALL, progress=lambda _: None, model=demo_model)
    assert again.computed == []  # everything was on disk with this config


@pytest.mark.slow
def test_a_failed_evaluation_resumes_at_the_metric_it_was_computing(eval_workspace, demo_model, tmp_path, monkeypatch):
    out = tmp_path / "analyses"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed during sparse probing")

    monkeypatch.setattr(pipeline, "run_sparse_probing", killed)
    with pytest.raises(KeyboardInterrupt):
        evaluate_saes([eval_workspace / "runs" / "layer0"], out, ("core", "sparse_probing"), SMALL,
                      progress=lambda _: None, model=demo_model)
    folder = AnalysisFolder(out / "layer0" / "sae_0")
    assert folder.evals() == ["core"]
    stamp = folder.eval_path("core").stat().st_mtime_ns
    monkeypatch.undo()
    report = evaluate_saes([eval_workspace / "runs" / "layer0"], out, ("core", "sparse_probing"), SMALL,
                           progress=lambda _: None, model=demo_model)
    assert report.computed == [("layer0/sae_0", "sparse_probing")]
    assert folder.eval_path("core").stat().st_mtime_ns == stamp and folder.evals() == ["core", "sparse_probing"]
    changed = EvalConfig(**{**SMALL.__dict__, "core_tokens": 1024})
    redo = evaluate_saes([eval_workspace / "runs" / "layer0"], out, ("core",), changed, progress=lambda _: None,
                         model=demo_model)
    assert redo.computed == [("layer0/sae_0", "core")]  # another config: recomputed, not trusted


def test_bad_requests_are_refused(eval_workspace):
    with pytest.raises(InputError, match="unknown metric"):
        evaluate_saes([eval_workspace / "runs" / "pair"], eval_workspace / "analyses", ("core", "recall"))
    with pytest.raises(InputError, match="given twice"):
        evaluate_saes([eval_workspace / "runs" / "pair", eval_workspace / "runs" / "pair" / "sae_0"],
                      eval_workspace / "analyses", ("core",))


@pytest.mark.slow
def test_the_cli_writes_and_prints_the_headline(eval_workspace, tmp_path):
    from app.cli import app

    out = tmp_path / "analyses"
    result = CliRunner().invoke(app, ["eval", str(eval_workspace / "runs" / "pair"), "--metrics", "core,stability",
                                      "--out", str(out), "--tokens", "2048", "--ce-batches", "1"])
    assert result.exit_code == 0, result.output
    assert "pair/sae_0" in result.stdout and "MMCS live" in result.stdout and "shared >0.7" in result.stdout
    saved = json.loads((out / "pair" / "sae_1" / "eval" / "stability.json").read_text())
    assert saved["eval_result_details"][0]["partner"] == "pair/sae_0"
    bad = CliRunner().invoke(app, ["eval", str(eval_workspace / "runs" / "pair"), "--metrics", "core,recall"])
    assert bad.exit_code == 2 and "unknown metric" in bad.output
