"""benchmarks/bench_pipeline.py at d_model 64: every stage runs and reports; a bad hook is one clear line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pipeline.py"


def bench():
    spec = importlib.util.spec_from_file_location("bench_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --device cpu: the same code path as --device cuda (every stage takes the device; nothing branches on it but
# the autocast in training and the synchronisation of the timers)
SMALL_RUN = ["--small", "--tokens", "2048", "--d-sae", "128", "--batch-size", "512", "--no-umap", "--threads", "1",
             "--device", "cpu"]


@pytest.mark.slow
def test_small_pipeline_reports_every_stage_with_its_bound(capsys):
    module = bench()
    assert module.main(SMALL_RUN) == 0
    rows = {row["stage"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert list(rows) == ["peak", "checkpoint", "load_model", "cache", "train", "dashboards", "geometry", "compare"]
    assert rows["peak"]["device"] == "cpu" and len(rows["peak"]["load_average"]) == 3
    shape = module.SMALL
    assert rows["checkpoint"]["bpe_learned"] + rows["checkpoint"]["bpe_fillers"] == shape.vocab
    # 7 blocks up to layer 6, 12 d^2 matmul weights each plus the 128-token attention square
    expected_cache = 2048 * 7 * (2 * 12 * 64**2 + 4 * 128 * 64)
    assert rows["cache"]["bound_gflop"] == pytest.approx(expected_cache / 1e9, abs=0.01)
    assert rows["train"]["bound_gflop"] == pytest.approx(6 * 2048 * 64 * 128 * 2 / 1e9, abs=0.01)
    for stage in ("cache", "train", "dashboards"):
        row = rows[stage]
        assert (
            row["wall_s"] > 0 and row["tokens_per_s"] > 0 and 0 < row["stage_peak_anon_mb"] <= row["stage_peak_rss_mb"]
        )
        assert row["fraction_of_peak"] == pytest.approx(
            row["achieved_gflop_s"] / rows["peak"]["matmul_fp32_gflop_s"], rel=0.05, abs=1e-3
        )
    assert 0 <= rows["compare"]["mmcs_ab"] <= 1
    train = rows["train"]  # MFR matched every step (4 steps) plus the final evaluation's matching
    assert train["mfr_match_every"] == 1 and train["matchings"] >= 4 and 0 < train["matching_s"] < train["wall_s"]
    assert 0 <= train["final_mmcs"] <= 1 and train["final_fvu"] > 0


@pytest.mark.slow
def test_hook_beyond_the_models_layers_is_a_one_line_error(capsys):
    assert bench().main([*SMALL_RUN, "--layer", "12"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: unknown hook name(s) ['blocks.12.hook_resid_post'")


@pytest.mark.slow
def test_workdir_run_resumes_after_its_finished_stages_and_refuses_other_settings(capsys, tmp_path):
    module = bench()
    run = [*SMALL_RUN, "--workdir", str(tmp_path / "work")]
    assert module.main([*run, "--until", "train"]) == 0
    first = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["stage"] for row in first] == ["peak", "checkpoint", "load_model", "cache", "train"]
    assert module.main(run) == 0
    second = {row["stage"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert [second[s].get("resumed") for s in ("checkpoint", "cache", "train")] == [True] * 3
    assert second["train"]["wall_s"] == first[-1]["wall_s"]  # the recorded line, not a second training
    assert all(not second[s].get("resumed") for s in ("dashboards", "geometry", "compare"))
    assert 0 <= second["compare"]["mmcs_ab"] <= 1
    assert module.main([*run, "--d-sae", "64"]) == 2
    assert "other settings" in capsys.readouterr().err
    stages = tmp_path / "work" / "stages.jsonl"  # a line cut short by a kill: that stage reruns, the rest resume
    lines = stages.read_text().splitlines()
    stages.write_text("\n".join(lines[:-1] + [lines[-1][:20]]) + "\n")
    assert module.main(run) == 0
    third = {row["stage"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert third["geometry"].get("resumed") and not third["compare"].get("resumed")
