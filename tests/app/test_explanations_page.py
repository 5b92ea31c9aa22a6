"""The Features page shows each feature's stored explanation and scores, sorts features by score and finds
them by words of their explanations (values compared with ``explanations.parquet``)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from interp.pipeline.explain import analyze_explain
from interp.store import tables
from tests.app.test_pages import array, chart, metric, run_page, table

SAE0 = "demo-mfr/sae_0"


@pytest.fixture(scope="module")
def explained_workspace(workspace, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("explained-ws")
    shutil.copytree(workspace, root, dirs_exist_ok=True)
    analyze_explain(root / "runs" / "demo-mfr", root / "analyses", model_spec=tiny_model,
                    cache_dir=root / "cached_activations" / "demo")
    return root


@pytest.fixture()
def env(explained_workspace, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(explained_workspace))
    return explained_workspace


def stored(root) -> pd.DataFrame:
    return pd.read_parquet(root / "analyses" / SAE0 / "explanations.parquet").set_index("feature")


def test_the_dashboard_opens_with_the_explanation_and_its_scores(env):
    rows = stored(env)
    feature = int(rows[rows.status == "explained"].detection.idxmax())
    at = run_page("pages/2_Features.py")
    at.number_input(key="feature_id").set_value(feature).run()
    row = rows.loc[feature]
    assert any(md.value.startswith("**Explanation** (explained)") for md in at.markdown)
    assert metric(at, "detection") == f"{row.detection:.2f}"
    assert metric(at, "simulation") == f"{row.simulation:.2f}"
    shown = next(m for m in at.metric if m.label == "detection")
    assert shown.delta == f"{row.detection - row.baseline_detection:+.2f} vs random"


def test_features_sort_by_score(env):
    rows = stored(env).reset_index()
    at = run_page("pages/2_Features.py")
    at.selectbox(key="explanation_order").set_value("simulation").run()
    shown = table(at, "explanation", "simulation", "baseline_simulation")
    expected = rows.sort_values(["simulation", "feature"], ascending=[False, True], na_position="last").head(200)
    assert shown.feature.tolist() == expected.feature.tolist()


def test_features_are_found_by_words_of_their_explanations(env):
    rows = stored(env).reset_index()
    words = rows[rows.status == "explained"].explanation.iloc[0].split()[:2]
    at = run_page("pages/2_Features.py")
    at.radio(key="how").set_value("by explanation words").run()
    at.text_input(key="search_explanation").input(" ".join(words)).run()
    hits = table(at, "explanation", "detection")
    lowered = rows.explanation.str.lower()
    expected = rows[[all(w.lower() in text for w in words) for text in lowered]]
    assert sorted(hits.feature) == sorted(expected.feature.head(50)) and len(hits) > 0
    assert at.selectbox(key="explanation_choice").value == hits.feature.iloc[0]
    assert tables.explained_features(env / "analyses" / SAE0, "no-such-word-anywhere").empty


def test_compare_shows_both_saes_score_distributions_against_their_baselines(env):
    at = run_page("pages/5_Compare.py")
    figure = chart(at, "explanation_scores")
    a = stored(env)
    a = a[a.status == "explained"]
    first, baseline = figure["data"][0], figure["data"][1]
    assert np.allclose(np.sort(array(first["x"])), np.sort(a.detection.to_numpy()))
    assert np.allclose(np.sort(array(baseline["x"])), np.sort(a.baseline_detection.to_numpy()))
    summary = table(at, "SAE", "share beating baseline by 0.2")
    assert summary["share beating baseline by 0.2"].iloc[0] == pytest.approx(
        (a.detection >= a.baseline_detection + 0.2).mean())


def test_the_geometry_map_can_be_coloured_by_detection_score(env):
    at = run_page("pages/3_Geometry.py")
    at.radio(key="colour").set_value("explanation detection score").run()
    assert not at.exception
    marker = chart(at, "map")["data"][0]
    points = pd.read_parquet(env / "analyses" / SAE0 / "geometry_map.parquet")
    detection = stored(env).detection.reindex(points.feature).to_numpy()
    colours = np.array([np.nan if c is None else c for c in array(marker["marker"]["color"]).tolist()], dtype=float)
    assert np.allclose(colours, detection, equal_nan=True)
