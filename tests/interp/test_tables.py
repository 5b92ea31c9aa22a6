"""DuckDB queries over dashboards written from planted synthetic features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from interp.features.dashboards import DashboardConfig, dashboard_tables, feature_dashboards
from interp.features.dictionary import DictionaryError
from interp.store.analysis_folder import AnalysisFolder
from interp.store.io import ROW_GROUP_ROWS, write_tables
from interp.store.tables import feature_dashboard, feature_list, list_analyses, search_by_logit, search_by_token
from tests.interp.test_features import (
    D_SAE,
    PROMOTED,
    TRIGGER,
    PlantedDictionary,
    decode,
    planted_stream,
    planted_unembed,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyses")
    dictionary = PlantedDictionary(torch.eye(16)[:D_SAE].contiguous())
    data = feature_dashboards(dictionary, planted_stream(), DashboardConfig(n_top=5, left=3, right=2))
    AnalysisFolder(root / "run" / "sae_0").write_analysis(
        "dashboards", dashboard_tables(data, dictionary.W_dec, decode, W_U=planted_unembed()), {})
    return root / "run" / "sae_0"


def test_feature_list_filters_and_sorts(folder):
    everything = feature_list(folder, order_by="frequency")
    assert list(everything.feature) == sorted(
        range(D_SAE), key=lambda f: (-everything.set_index("feature").frequency[f], f)
    )
    cut = everything.frequency.median()
    assert (feature_list(folder, min_frequency=cut).frequency >= cut).all()
    assert list(feature_list(folder, label_contains="t13").feature) == [3]
    assert len(feature_list(folder, limit=2, offset=1)) == 2


def test_feature_dashboard_returns_only_that_feature(folder):
    rows = feature_dashboard(folder, 4)
    assert set(rows) >= {"features", "examples", "histograms", "logits", "neighbours", "cooccurrence"}
    assert all((frame.feature == 4).all() for frame in rows.values())
    assert (rows["examples"].query("kind == 'top'").token_id == TRIGGER[4]).all()


def test_a_compact_dashboard_reads_only_the_tables_asked_for(folder):
    full, compact = feature_dashboard(folder, 2), feature_dashboard(folder, 2, names=("features", "examples"))
    assert set(compact) == {"features", "examples"}
    for name in compact:
        pd.testing.assert_frame_equal(compact[name], full[name])
    with pytest.raises(ValueError, match="no dashboard table"):
        feature_dashboard(folder, 2, names=("examples", "secrets"))


def test_tables_are_sorted_by_feature_in_row_groups_a_lookup_can_skip(tmp_path):
    """The layout that keeps one-feature lookups constant-time: disjoint feature ranges per row group."""
    rng = np.random.default_rng(0)
    n = 5 * ROW_GROUP_ROWS + 17
    frame = pd.DataFrame({"feature": rng.integers(0, 3000, n), "value": rng.normal(size=n)})
    write_tables({"examples": frame}, tmp_path)
    meta = pq.ParquetFile(tmp_path / "examples.parquet").metadata
    assert meta.num_row_groups == 6
    ranges = [
        (meta.row_group(i).column(0).statistics.min, meta.row_group(i).column(0).statistics.max)
        for i in range(meta.num_row_groups)
    ]
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))
    back = pd.read_parquet(tmp_path / "examples.parquet")
    pd.testing.assert_frame_equal(back, frame.sort_values("feature", kind="stable").reset_index(drop=True))


def test_search_by_token_and_by_logit_find_the_planted_feature(folder):
    for f in range(D_SAE):
        assert search_by_token(folder, f"t{TRIGGER[f]}").feature.iloc[0] == f
        assert search_by_logit(folder, f"t{PROMOTED[f]}").feature.iloc[0] == f


def test_bad_queries_raise_clear_errors(folder, tmp_path):
    with pytest.raises(DictionaryError, match="out of range"):
        feature_dashboard(folder, D_SAE)
    with pytest.raises(FileNotFoundError, match="workbench analyze features"):
        feature_list(tmp_path)
    with pytest.raises(ValueError, match="cannot order"):
        feature_list(folder, order_by="label; drop table x")
    assert list_analyses(folder.parent.parent) == ["run/sae_0"]


def test_figures_show_the_planted_feature(folder):
    from interp.figures.features import activation_histogram, example_heatmap, frequency_histogram, logit_bars

    rows = feature_dashboard(folder, 2)
    bars = logit_bars(rows["logits"])
    positive = next(t for t in bars.data if t.name == "promotes")
    assert positive.y[int(np.argmax(positive.x))].endswith(repr(f"t{PROMOTED[2]}"))
    names = [name for trace in bars.data for name in trace.y]
    assert list(bars.layout.yaxis.tickvals) == names and len(set(names)) == len(rows["logits"])  # every bar named
    top = rows["examples"].query("kind == 'top'")
    heat = example_heatmap(top).data[0]
    assert all(heat.text[i][c] == f"t{TRIGGER[2]}" and np.nanargmax(heat.z[i]) == c for i, c in enumerate(top.center))
    assert sum(activation_histogram(rows["histograms"]).data[0].y) == rows["features"].n_fires[0]
    assert len(frequency_histogram(feature_list(folder)).data[0].x) == D_SAE


def test_the_table_layer_loads_without_torch_or_scipy():
    """The app's pages query tables through ``interp.store.tables``; importing it must not pull in torch or scipy."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])  # this checkout's interp, not an installed one
    code = "import sys, interp.store.tables; print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
