"""Every page under Streamlit's AppTest against a real small workspace: widgets exist, values equal the files."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from app.ui.workspace import UnsafePathError, safe_path
from interp.store import tables

APP = Path(__file__).resolve().parents[2] / "app"
SAE0 = "demo-mfr/sae_0"


def run_page(name: str) -> AppTest:
    at = AppTest.from_file(str(APP / name), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table(at: AppTest, *columns: str, exact: bool = False) -> pd.DataFrame:
    """The first dataframe shown whose columns include (or, with ``exact``, are) ``columns``."""
    for frame in at.dataframe:
        have = list(frame.value.columns)
        if (have == list(columns)) if exact else set(columns) <= set(have):
            return frame.value
    raise AssertionError(f"no dataframe with columns {columns}")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def chart(at: AppTest, key: str) -> dict:
    """The plotly figure (JSON) of the chart shown with widget key ``key``, as the page sent it."""
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}"))


def array(value) -> np.ndarray:
    """A figure's data array: plotly sends numpy arrays base64-encoded (``bdata``, ``dtype``, ``shape``)."""
    if isinstance(value, dict):
        shape = tuple(int(n) for n in str(value.get("shape", -1)).split(","))
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.asarray(value)


def test_safe_path_refuses_everything_outside_the_workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "analyses").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path)
    assert safe_path(root, "analyses") == (root / "analyses").resolve()
    for bad in ("..", "../ws2", "analyses/../../x", "/etc", str(tmp_path), "escape/anything", ""):
        with pytest.raises(UnsafePathError):
            safe_path(root, bad)


def test_home_shows_caches_and_runs_as_on_disk(app_env):
    at = run_page("Home.py")
    manifest = json.loads((app_env / "cached_activations/demo/manifest.json").read_text())
    caches = table(at, "tokens", "status")
    assert caches.tokens.tolist() == [manifest["n_tokens"]] and caches.status.tolist() == [manifest["status"]]
    evaluation = json.loads((app_env / "runs/demo-mfr/eval.json").read_text())
    runs = table(at, "FVU", "L0")
    assert runs.FVU.tolist() == [m["fvu"] for m in evaluation["members"]]
    assert runs.L0.tolist() == [m["l0"] for m in evaluation["members"]]
    assert set(table(at, "analysis", "kind").analysis) >= {SAE0, "demo-mfr/sae_1", "circuits/demo"}


def test_home_names_the_workspace_by_its_folder_and_keeps_the_full_path_to_the_tooltip(app_env):
    at = run_page("Home.py")
    caption = next(c for c in at.caption if c.value.startswith("Workspace:"))
    assert caption.value == f"Workspace: `{app_env.resolve().name}`"
    assert str(app_env.resolve().parent) not in caption.value and caption.proto.help.endswith(str(app_env.resolve()))


def test_pages_on_an_empty_workspace_say_which_command_makes_the_result(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path))
    for page in ("Home.py", "pages/1_Training.py", "pages/2_Features.py", "pages/3_Geometry.py",
                 "pages/4_Circuits.py", "pages/5_Compare.py"):
        at = AppTest.from_file(str(APP / page), default_timeout=120).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert at.error, page
        assert any(code.value.startswith("workbench ") for code in at.code), page


def test_features_dashboard_equals_the_tables(app_env):
    at = run_page("pages/2_Features.py")
    folder = app_env / "analyses" / SAE0
    feature = int(tables.feature_list(folder, limit=1).feature[0])  # the most frequent one
    at.number_input(key="feature_id").set_value(feature).run()
    row = pd.read_parquet(folder / "features.parquet").set_index("feature").loc[feature]
    assert metric(at, "firings") == f"{int(row.n_fires):,}"
    assert metric(at, "max activation") == f"{row.max_activation:.3f}"
    assert any(f"label *{row.label}*" in md.value for md in at.markdown)
    neighbours = pd.read_parquet(folder / "neighbours.parquet").query("feature == @feature").sort_values("rank")
    assert table(at, "other", "cosine", exact=True).other.tolist() == neighbours.other.tolist()
    match = pd.read_parquet(folder / "matches.parquet").query("feature == @feature").iloc[0]
    shown = match.other_feature if match.other_alive else match.live_other_feature  # a dead match is not shown
    assert any(f"feature **{shown}**" in md.value for md in at.markdown)


@pytest.mark.parametrize("kind", ["token", "logit"])
def test_features_search_by_token_and_by_logit(app_env, kind):
    folder = app_env / "analyses" / SAE0
    source = "examples" if kind == "token" else "logits"
    token = pd.read_parquet(folder / f"{source}.parquet").token.iloc[0]
    at = run_page("pages/2_Features.py")
    at.radio(key="how").set_value("by token it fires on" if kind == "token" else "by logit it promotes").run()
    at.text_input(key=f"search_{kind}").input(token).run()
    expected = tables.search_by_token(folder, token) if kind == "token" else tables.search_by_logit(folder, token)
    assert table(at, *expected.columns, exact=True).feature.tolist() == expected.feature.tolist()
    assert at.selectbox(key="hit_choice").value == expected.feature[0]


@pytest.mark.parametrize("typed", ["../../etc", "/etc", "analyses/../.."])
def test_typed_paths_outside_the_workspace_are_refused(app_env, typed):
    for page, key in (("pages/2_Features.py", "analysis_typed"), ("pages/5_Compare.py", "sae_a_typed")):
        at = run_page(page)
        at.text_input(key=key).input(typed).run()
        assert not at.exception
        assert any("outside the workspace" in e.value for e in at.error), page


def test_geometry_tables_equal_disk(app_env):
    at = run_page("pages/3_Geometry.py")
    folder = app_env / "analyses" / SAE0
    galaxy = table(at, "analysis", "power_law_slope").set_index("analysis")
    on_disk = pd.read_parquet(folder / "geometry_galaxy.parquet").iloc[0]
    assert galaxy.loc[SAE0, "power_law_slope"] == on_disk.power_law_slope
    crystals = pd.read_parquet(folder / "geometry_crystals.parquet").sort_values("parallelogram_error")
    features = pd.read_parquet(folder / "features.parquet").set_index("feature")
    hub = (features.frequency > 0.1) | (features.n_fires < 10)  # the page's stated defaults
    expected = crystals[~crystals[list("abcd")].isin(features.index[hub]).any(axis=1)]
    shown = table(at, "parallelogram_error", "random as good")
    assert shown.a.tolist() == expected.a.tolist() and len(shown) < len(crystals)
    baseline = pd.read_parquet(folder / "geometry_crystal_baseline.parquet")
    baseline = baseline[~baseline[list("abcd")].isin(features.index[hub]).any(axis=1)].parallelogram_error
    assert shown["random as good"].iloc[0] == (baseline <= shown.parallelogram_error.iloc[0]).mean()
    at.number_input(key="hub_percent").set_value(100.0).run()
    at.number_input(key="rare_fires").set_value(0).run()
    assert table(at, "parallelogram_error", "random as good").a.tolist() == crystals.a.tolist()
    at.session_state["crystals"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    third = crystals.iloc[2]
    assert chart(at, "crystal")["layout"]["title"]["text"].startswith(f"Crystal {int(third.a)} ")
    at.number_input(key="open_feature").set_value(5).run()
    row = pd.read_parquet(folder / "features.parquet").set_index("feature").loc[5]
    assert metric(at, "firings") == f"{int(row.n_fires):,}"


def test_geometry_says_which_command_adds_what_an_older_analysis_lacks(workspace, tmp_path, monkeypatch):
    """An analysis made before crystals had a random baseline and a drawing: the page names both missing
    tables and the command that writes them, and still lists the crystals (no traceback, no empty chart)."""
    import hashlib
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(workspace / "analyses" / SAE0, root / "analyses" / SAE0)
    folder = root / "analyses" / SAE0
    (folder / "geometry_crystal_baseline.parquet").unlink()
    crystals = pd.read_parquet(folder / "geometry_crystals.parquet")
    drawing = [c for c in crystals if c[1:] in ("_x", "_y")]
    crystals.drop(columns=drawing).to_parquet(folder / "geometry_crystals.parquet")
    record = json.loads((folder / "geometry.json").read_text())  # as the older analysis recorded its tables
    del record["tables"]["geometry_crystal_baseline"]
    data = (folder / "geometry_crystals.parquet").read_bytes()
    record["tables"]["geometry_crystals"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "geometry.json").write_text(json.dumps(record))
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    at = run_page("pages/3_Geometry.py")
    at.number_input(key="hub_percent").set_value(100.0).run()
    at.number_input(key="rare_fires").set_value(0).run()
    (warning,) = [w.value for w in at.warning if "older `workbench analyze geometry`" in w.value]
    assert "random baseline" in warning and "drawing" in warning
    assert f"workbench analyze geometry runs/{SAE0.split('/')[0]}" in warning
    shown = table(at, "parallelogram_error", "trapezoid_cosine")
    assert "random as good" not in shown and shown.a.tolist() == crystals.sort_values("parallelogram_error").a.tolist()
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith(("-crystal", "-crystal_errors"))]


DEMO_WEIGHTS = (APP.parent / "interp/models/demo/weights/model.safetensors").exists() or os.environ.get("CI") == "true"


def test_circuits_page_opens_on_the_stored_prompts_and_draws_nothing_else(app_env):
    at = run_page("pages/4_Circuits.py")
    folder = app_env / "analyses/circuits/demo"
    summary = json.loads((folder / "summary.json").read_text())
    assert metric(at, "induction head") == "L{}H{}".format(*summary["heads"]["induction"])
    assert at.radio(key="view").value == "Prompts" and at.query_params["view"] == "Prompts"
    stored = pd.read_parquet(folder / "prompts.parquet")
    shown = table(at, "prompt", "clean", "corrupt")
    assert shown.clean.tolist() == stored.clean.tolist() and shown.corrupt.tolist() == stored.corrupt.tolist()
    half = (summary["n_positions"] - 1) // 2  # induction: only the first copy differs
    assert all(set(map(int, d.split(", "))) <= set(range(1, half + 1)) for d in shown["differs at positions"] if d)
    assert not at.get("plotly_chart")  # the first paint reads one table and loads no chart


@pytest.mark.parametrize("name, shown", [("4_Circuits.py", "Stored prompt set"),
                                         ("7_Probe.py", "nothing runs until you click")])
def test_opening_a_model_page_imports_no_torch(app_env, name, shown):
    """The first render reads stored files only: torch (seconds to import under load) waits for a click
    ("Show attention", "Probe"); the page still drew its content (not an early error)."""
    import subprocess
    import sys

    code = ("import sys; from streamlit.testing.v1 import AppTest; "
            f"at = AppTest.from_file({str(APP / 'pages' / name)!r}, default_timeout=120).run(); "
            "assert not at.exception, [e.value for e in at.exception]; "
            "texts = [e.value for kind in ('caption', 'markdown', 'subheader') for e in at.get(kind)]; "
            "print(repr(' '.join(texts + [s.label for s in at.selectbox]))); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "WORKBENCH_WORKSPACE": str(app_env)}, cwd=APP.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    *_, text, torch_loaded = result.stdout.strip().splitlines()
    assert shown in text and torch_loaded == "False"


@pytest.mark.parametrize("view, key, check", [
    ("Patching", "patch_heads", "patch_heads"), ("Composition", "composition", "composition"),
    ("Path patching", "path_patch", "path_patch"), ("DLA", "dla", "dla"), ("Logit lens", "logit_lens", "logit_lens"),
    ("AtP agreement", "atp_agreement", "atp_agreement"), ("Head scores", "head_scores", "head_scores"),
])
def test_each_stored_circuit_view_draws_its_stored_table(app_env, view, key, check):
    folder = app_env / "analyses/circuits/demo"
    at = open_linked("pages/4_Circuits.py", prompt_set="demo", view=view)
    assert at.radio(key="view").value == view
    fig = chart(at, key)
    frame = pd.read_parquet(folder / f"{check}.parquet")
    tokens = list(pd.read_parquet(folder / "prompts.parquet").clean_tokens.iloc[0])
    if check == "patch_heads":
        assert np.array_equal(array(fig["data"][0]["z"]), frame.pivot(index="layer", columns="head", values="effect"))
        resid = chart(at, "patch_resid")  # positions named by their tokens, effect in the metric's unit
        assert resid["data"][0]["x"][1] == f"1:{tokens[1]!r}" and resid["data"][0]["colorbar"]["title"]["text"] == \
            "effect (nats)"
        assert any("**effect** =" in c.value for c in at.caption)
    elif check == "composition":
        k = fig["data"][1]
        row = frame[(frame.layer_a == 0) & (frame.head_a == 1) & (frame.layer_b == 1) & (frame.head_b == 0)]
        assert array(k["z"])[k["y"].index("L0H1")][k["x"].index("L1H0")] == pytest.approx(float(row.k.iloc[0]))
    elif check == "path_patch":
        v = fig["data"][2]
        row = frame[(frame.side == "v") & (frame.layer_a == 0) & (frame.head_a == 1) & (frame.layer_b == 1)
                    & (frame.head_b == 1)]
        assert array(v["z"])[v["y"].index("L0H1")][v["x"].index("L1H1")] == pytest.approx(float(row.effect.iloc[0]))
    elif check == "dla":
        heat = fig["data"][0]
        cell = frame[(frame.layer == 1) & (frame["head"] == 0) & (frame.pos == 2)].dla.iloc[0]
        assert array(heat["z"])[heat["y"].index("L1H0")][heat["x"].index(f"2:{tokens[2]!r}")] == pytest.approx(cell)
    elif check == "logit_lens":
        final = frame[frame.layer == frame.layer.max()].sort_values("pos").log_prob.to_numpy()[:-1]
        assert np.allclose(array(fig["data"][-1]["y"]), final) and fig["data"][-1]["name"] == "final residual"
    elif check == "atp_agreement":
        first = frame[frame.scale == frame.scale.min()]
        assert np.allclose(array(fig["data"][0]["y"]), first.pearson) and chart(at, "atp_scatter")["data"][0]["text"]
    else:
        scores = frame.pivot(index="layer", columns="head", values="induction")
        assert np.allclose(array(fig["data"][1]["z"]), scores.values)


def test_circuits_page_shows_a_typed_prompts_heads_in_a_grid_with_the_detected_ones_framed(app_env):
    at = run_page("pages/4_Circuits.py")
    at.text_input(key="prompt").input("one two three one two three")
    at.button[0].click().run()
    assert not at.exception
    if not DEMO_WEIGHTS:  # the demo weights are built by a script; without them the page must say so, not crash
        assert any("demo weights missing" in e.value for e in at.error)
        return
    from interp.models.loading import demo_circuit

    circuit = demo_circuit()  # the heads the demo model was trained to have
    induction, previous = tuple(circuit["induction_head"]), tuple(circuit["previous_token_head"])
    assert not at.error and at.selectbox(key="head").value == induction  # the detail opens on the induction head
    grid = chart(at, "attention_grid")
    assert len(grid["data"]) == 2 * 4 and grid["data"][induction[0] * 4 + induction[1]]["name"] == "L{}H{}".format(
        *induction)
    titles = [a["text"] for a in grid["layout"]["annotations"]]
    assert titles[induction[0] * 4 + induction[1]] == "<b>L{}H{} · induction head</b>".format(*induction)
    assert titles[previous[0] * 4 + previous[1]] == "<b>L{}H{} · previous-token head</b>".format(*previous)
    assert len(grid["layout"]["shapes"]) >= 2
    attention = chart(at, "attention")["data"][0]  # the tokens label both axes of the chosen head's pattern
    assert attention["x"] == attention["y"] and attention["x"][1] == "1:'one'"  # after the BOS token
    assert array(attention["z"]).shape == (len(attention["x"]),) * 2
    assert any("No IO − S logit difference: not an IOI-shaped prompt" in c.value for c in at.caption)


def test_circuits_page_gives_the_io_minus_s_logit_difference_of_a_typed_ioi_prompt(app_env, demo_model):
    if not DEMO_WEIGHTS:
        pytest.skip("the demo weights are not built")
    text = "When Romeo and Juliet went to the court, Romeo gave a ring to"
    at = run_page("pages/4_Circuits.py")
    at.text_input(key="prompt").input(text)
    at.button[0].click().run()
    logits = demo_model(demo_model.to_tokens(text))[0, -1].detach()
    expected = float(logits[demo_model.to_single_token(" Juliet")] - logits[demo_model.to_single_token(" Romeo")])
    line = next(md.value for md in at.markdown if md.value.startswith("**IO − S logit difference**"))
    assert "logit(' Juliet') − logit(' Romeo')" in line and f"**{expected:+.2f}**" in line


@pytest.mark.parametrize("prompt, message", [("   ", "Type a prompt"),
                                             ("word " * 300, "longer than the model's context")])
def test_circuits_page_says_what_is_wrong_with_a_prompt(app_env, prompt, message):
    at = run_page("pages/4_Circuits.py")
    at.text_input(key="prompt").input(prompt)
    at.button[0].click().run()
    assert not at.exception
    shown = [w.value for w in at.warning] + [e.value for e in at.error]
    assert any(message in text for text in shown), shown


def test_circuits_page_examples_fill_the_prompt(app_env):
    at = run_page("pages/4_Circuits.py")
    at.selectbox(key="example").select("IOI: who gets the ring?").run()
    assert at.text_input(key="prompt").value.startswith("When Romeo and Juliet")


def test_compare_opens_on_the_within_run_comparison_with_dead_latents_apart(app_env):
    from interp.store.matches import match_summary

    at = run_page("pages/5_Compare.py")
    matches = pd.read_parquet(app_env / "analyses" / SAE0 / "matches.parquet")
    summary = match_summary(matches[matches.other_analysis == "demo-mfr/sae_1"])
    assert metric(at, "demo-mfr: MMCS, live features") == f"{summary['mmcs_live']:.3f}"
    assert metric(at, "demo-mfr: dead latents") == f"{summary['n_dead']:,} of {summary['n_features']:,}"
    assert metric(at, "demo-mfr: live matched to dead") == f"{summary['live_to_dead']:,}"
    assert at.selectbox(key="sae_b").value == "demo-mfr/sae_1"  # the pair below starts on the same run
    histogram = chart(at, "within_demo-mfr")["data"][0]
    live = matches[(matches.other_analysis == "demo-mfr/sae_1") & matches.alive]
    assert sorted(array(histogram["x"]).tolist()) == sorted(live.live_cosine.tolist())


def test_training_follows_metrics_and_refuses_a_cache_outside(app_env):
    at = run_page("pages/1_Training.py")
    last = json.loads((app_env / "runs/demo-mfr/metrics.jsonl").read_text().splitlines()[-1])
    assert metric(at, "FVU") == f"{last['fvu']:.4g}" and metric(at, "MFR penalty") == f"{last['mfr_penalty']:.4g}"
    at.text_input(key="cache_path").input("../../elsewhere")
    at.button[0].click().run()  # the form's Launch button submits the typed value
    assert any("outside the workspace" in e.value for e in at.error)
    assert not (app_env / "runs/run-1").exists()


def test_app_command_refuses_a_missing_workspace_and_demo_prints_the_open_command(tmp_path, monkeypatch):
    from app.cli import app
    from app.commands import demo

    result = CliRunner().invoke(app, ["app", "--workspace", str(tmp_path / "nope"), "--port", "8599"])
    assert result.exit_code == 2 and "workbench demo --workspace" in result.output
    monkeypatch.setattr(demo, "demo_steps", lambda tokens: [])
    result = CliRunner().invoke(app, ["demo", "--workspace", str(tmp_path / "ws"), "--no-transcoders"])
    assert result.exit_code == 0 and f"workbench app --workspace {tmp_path / 'ws'}" in result.output


def test_a_damaged_table_is_an_error_with_guidance_not_a_traceback(workspace, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(workspace / "analyses", root / "analyses")
    (root / "analyses" / SAE0 / "features.parquet").write_bytes(b"PAR1 this is not a parquet file")
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    for page in ("pages/2_Features.py", "pages/3_Geometry.py"):
        at = AppTest.from_file(str(APP / page), default_timeout=120).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert any("Cannot read" in e.value and "features.parquet" in e.value for e in at.error), page


def test_run_state_reads_a_runs_files(tmp_path):
    from app.ui.workspace import run_state

    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    assert run_state(run, evaluated=False) == "not started"
    (run / "config.json").write_text(json.dumps({"n_tokens": 4096 * 30, "batch_size": 4096}))
    (run / "checkpoints" / "step_000000012.safetensors").write_bytes(b"")
    assert run_state(run, evaluated=False) == "stopped at step 12 of 30"
    (run / "checkpoints" / "step_000000030.safetensors").write_bytes(b"")
    assert run_state(run, evaluated=False) == "stopped at step 30 of 30 (not evaluated)"
    assert run_state(run, evaluated=True) == "finished"
    (run / "running.json").write_text(json.dumps({"pid": os.getpid()}))  # a pid written in a file proves nothing
    assert run_state(run, evaluated=False) == "stopped at step 30 of 30 (not evaluated)"
    from interp.store.run_folder import RunFolder

    with RunFolder(run).running():  # this process holds the run's lock and names its token: it trains the run
        assert run_state(run, evaluated=False) == "running"


def open_linked(page: str, **params) -> AppTest:
    """``page`` opened as a link would open it: inside the app (Home is the entry script), ``params`` in the URL."""
    at = AppTest.from_file(str(APP / "Home.py"), default_timeout=120)
    at.switch_page(page)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def click_row(at: AppTest, key: str, row: int) -> AppTest:
    """Select ``row`` of the linked table ``key`` as a click in the browser does."""
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def linked_frame(at: AppTest, key: str) -> pd.DataFrame:
    return next(f.value for f in at.dataframe if f.proto.id.endswith(f"-{key}"))


def test_the_url_holds_the_dashboard_and_a_table_row_links_to_another(app_env):
    at = open_linked("pages/2_Features.py", analysis="demo-mfr/sae_1", feature="5")
    assert at.selectbox(key="analysis").value == "demo-mfr/sae_1" and at.number_input(key="feature_id").value == 5
    assert any(md.value.startswith("**Feature 5**") for md in at.markdown)
    at.number_input(key="feature_id").set_value(7).run()
    assert at.query_params["feature"] == "7" and at.query_params["analysis"] == "demo-mfr/sae_1"
    neighbours = linked_frame(at, "main_neighbours")
    click_row(at, "main_neighbours", 1)  # the second-nearest feature's dashboard, same tab
    target = int(neighbours.other.iloc[1])
    assert at.query_params["feature"] == str(target) and at.number_input(key="feature_id").value == target
    assert any(md.value.startswith(f"**Feature {target}**") for md in at.markdown)


def test_feature_circuit_nodes_are_labelled_linked_and_the_error_share_shown(app_env):
    folder = app_env / "analyses/circuits/demo"
    summary = json.loads((folder / "summary.json").read_text())["feature_circuit"]
    nodes = pd.read_parquet(folder / "feature_nodes.parquet")
    share = nodes[nodes.feature < 0].effect.abs().sum() / nodes.effect.abs().sum()
    assert summary["error_share"] == pytest.approx(share)
    at = open_linked("pages/4_Circuits.py", prompt_set="demo", view="Feature circuit")
    assert metric(at, "error share of the circuit") == f"{share:.0%}"
    assert any("error nodes carry" in w.value for w in at.warning) == (share > 0.5)
    shown = linked_frame(at, "feature_nodes")
    assert sorted(shown.effect) == sorted(nodes.effect)
    stored_saes = [site.get("sae") for site in summary.get("sites", [])]
    for stored, seen in zip(stored_saes, linked_frame(at, "feature_sites").sae):  # inside the workspace: relative
        assert not Path(seen).is_absolute() and (app_env / seen).resolve() == (app_env / stored).resolve(), seen
    features = pd.read_parquet(app_env / "analyses" / SAE0 / "features.parquet").set_index("feature")
    for row in shown[shown.feature >= 0].itertuples():
        assert row.label == features.label[row.feature] and row.analysis == SAE0
    names = chart(at, "feature_circuit")["data"][0]["node"]["label"]  # the figure names each node too
    for row in nodes.itertuples():
        site = "L{} {}".format(*row.hook.removeprefix("blocks.").split(".hook_"))
        expected = f"{site} SAE error" if row.feature < 0 else f"{site} #{row.feature}"
        assert any(name.startswith(expected) for name in names), (expected, names)
    if (shown.feature >= 0).any():
        row = int(np.flatnonzero(shown.feature.to_numpy() >= 0)[0])
        click_row(at, "feature_nodes", row)
        assert at.query_params["analysis"] == SAE0 and at.query_params["feature"] == str(shown.feature.iloc[row])


def test_home_rows_open_their_pages_and_its_links_draw_without_an_emoji_font(app_env):
    at = run_page("Home.py")
    icons = [link.proto.icon for link in at.get("page_link")]
    assert icons and all(icon.startswith(":material/") for icon in icons)  # Streamlit's bundled icon font
    runs = linked_frame(at, "runs")
    click_row(at, "runs", 0)
    assert at.query_params["run"] == runs.run.iloc[0] and at.selectbox(key="run").value == runs.run.iloc[0]
    at = run_page("Home.py")
    analyses = linked_frame(at, "analyses")
    row = analyses.analysis.tolist().index(SAE0)
    click_row(at, "analyses", row)
    assert at.query_params["analysis"] == SAE0 and at.selectbox(key="analysis").value == SAE0
    at = run_page("Home.py")
    click_row(at, "caches", 0)
    assert [t.value for t in at.title] == ["Training"]


def test_training_overlays_chosen_runs_on_one_chart_and_draws_fractions_on_zero_to_one(workspace, tmp_path,
                                                                                      monkeypatch):
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(workspace / "cached_activations", root / "cached_activations")
    shutil.copytree(workspace / "runs/demo-mfr", root / "runs/demo-mfr")
    shutil.copytree(workspace / "runs/demo-mfr", root / "runs/demo-other")
    lines = [json.loads(line) for line in (root / "runs/demo-other/metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line["mmcs"] = None if line.get("mmcs") is None else line["mmcs"] / 2  # another run's curve
    (root / "runs/demo-other/metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    at = run_page("pages/1_Training.py")
    assert at.multiselect(key="overlay_runs").value == ["demo-mfr", "demo-other"]  # both ensembles
    figure = chart(at, "overlay")
    assert [t["name"] for t in figure["data"]] == ["demo-mfr", "demo-other"]
    mfr = [line["mmcs"] for line in map(json.loads, (root / "runs/demo-mfr/metrics.jsonl").read_text().splitlines())
           if line.get("mmcs") is not None]
    assert array(figure["data"][0]["y"]).tolist() == pytest.approx(mfr)
    assert array(figure["data"][1]["y"]).tolist() == pytest.approx([m / 2 for m in mfr])
    assert tuple(figure["layout"]["yaxis"]["range"]) == (0, 1)
    at.radio(key="overlay_metric").set_value("L0").run()
    assert [t["name"] for t in chart(at, "overlay")["data"]] == ["demo-mfr", "demo-other"]
    assert tuple(chart(at, "curve_dead_fraction")["layout"]["yaxis"]["range"]) == (0, 1)
