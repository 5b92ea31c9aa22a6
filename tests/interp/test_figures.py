"""The figure builders the pages call carry exactly the data they are given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from interp.circuits.patching import grid_frame
from interp.figures.circuits import (
    attention_pattern_figure,
    dimensionality_box_figure,
    patching_figure,
    patching_table_figure,
)
from interp.figures.compare import matched_cosine_figure
from interp.figures.geometry import feature_map_figure, galaxy_figure, lobe_agreement_figure
from interp.figures.training import metric_curve_figure, runs_overlay_figure
from interp.store.errors import InputError


def test_matched_cosine_figure_holds_both_directions_and_the_threshold():
    a_to_b = pd.DataFrame({"cosine": [0.9, 0.2, np.nan]})
    b_to_a = pd.DataFrame({"cosine": [0.8, 0.95]})
    fig = matched_cosine_figure(a_to_b, b_to_a, 0.7)
    assert [t.name for t in fig.data] == ["A→B", "B→A"]
    assert list(fig.data[1].x) == [0.8, 0.95] and fig.layout.shapes[0].x0 == 0.7


def test_metric_curve_draws_one_line_per_member_else_the_run_column():
    metrics = pd.DataFrame({"step": [1, 2, 3], "fvu": [0.5, 0.4, 0.3], "member0_fvu": [0.6, 0.5, 0.4],
                            "member1_fvu": [0.4, 0.3, 0.2], "loss": [3.0, None, 1.0]})
    per_member = metric_curve_figure(metrics, "fvu", "FVU")
    assert [t.name for t in per_member.data] == ["member0", "member1"] and list(per_member.data[1].y) == [0.4, 0.3, 0.2]
    run_level = metric_curve_figure(metrics, "loss", "loss")
    assert [t.name for t in run_level.data] == ["loss"] and run_level.data[0].connectgaps
    assert run_level.layout.yaxis.title.text.startswith("loss") and run_level.layout.xaxis.title.text == "training step"


def test_a_fraction_is_drawn_on_zero_to_one_even_when_it_is_all_zeros():
    metrics = pd.DataFrame({"step": [1, 2], "dead_fraction": [0.0, 0.0], "l0": [16.0, 16.0]})
    assert tuple(metric_curve_figure(metrics, "dead_fraction", "dead").layout.yaxis.range) == (0, 1)
    assert metric_curve_figure(metrics, "l0", "L0").layout.yaxis.range is None  # counts autoscale


def test_runs_overlay_draws_one_line_per_run_and_names_a_run_that_never_logged_the_metric():
    mfr = pd.DataFrame({"step": [10, 50, 100], "mmcs": [0.3, None, 0.7]})
    plain = pd.DataFrame({"step": [50, 100], "mmcs": [0.2, 0.5]})
    single = pd.DataFrame({"step": [10], "loss": [1.0]})
    fig = runs_overlay_figure({"mfr": mfr, "plain": plain, "single": single}, "mmcs", "MMCS")
    assert [t.name for t in fig.data] == ["mfr", "plain"]
    assert list(fig.data[0].x) == [10, 100] and list(fig.data[0].y) == [0.3, 0.7] and list(fig.data[1].y) == [0.2, 0.5]
    assert "single: not logged" in fig.layout.title.text and tuple(fig.layout.yaxis.range) == (0, 1)


def test_feature_map_colours_by_the_chosen_column_and_carries_feature_ids():
    points = pd.DataFrame({"feature": [0, 1, 2], "pca_x": [0.0, 1.0, 2.0], "pca_y": [1.0, 0.0, 1.0],
                           "cluster": [0, 1, 1], "log10_frequency": [-1.0, -2.0, -3.0], "label": ["a", "b", "c"]})
    fig = feature_map_figure(points, "pca", colour="log10_frequency")
    assert list(fig.data[0].customdata) == [0, 1, 2] and list(fig.data[0].marker.color) == [-1.0, -2.0, -3.0]
    assert list(fig.data[0].text) == ["0: a", "1: b", "2: c"]
    with pytest.raises(InputError, match="colour the map by"):
        feature_map_figure(points, "pca", colour="size")


def test_lobe_z_scores_and_galaxy_bars():
    lobes = pd.DataFrame({"affinity": ["phi", "phi", "jaccard"], "k": [2, 3, 2], "ami": [0.5, 0.6, 0.4],
                          "z": [3.0, 4.0, 1.0], "null_mean": [0.0, 0.0, 0.0]})
    fig = lobe_agreement_figure(lobes, score="z")
    assert {t.name: list(t.y) for t in fig.data} == {"jaccard": [1.0], "phi": [3.0, 4.0]}  # no null line for z
    galaxy = pd.DataFrame(
        {"analysis": ["r/sae_0"], "hook": ["h"], "power_law_slope": [1.2], "clustering_entropy": [0.7]}
    )
    bars = galaxy_figure(galaxy)
    assert [t.y[0] for t in bars.data] == [1.2, 0.7] and bars.data[0].x[0] == "r/sae_0<br>h"


def test_patching_table_figure_is_the_pivoted_table_with_layers_down():
    effects = torch.tensor([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]])  # [layer, pos]
    frame = grid_frame(effects, ("layer", "pos"), "effect").sample(frac=1.0, random_state=0)  # row order is not kept
    fig = patching_table_figure(frame, "pos", "Residual")
    heat = fig.data[0]
    assert np.allclose(np.asarray(heat.z), effects.numpy()) and list(heat.x) == [0, 1, 2] and list(heat.y) == [0, 1]
    assert heat.zmid == 0 and heat.colorbar.title.text == "effect"
    assert fig.layout.xaxis.title.text == "pos" and fig.layout.yaxis.title.text == "layer"
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.title.text == "Residual"
    from_tensor = patching_figure(effects, "pos", "layer", "Residual")  # the notebook's path draws the same map
    assert np.allclose(np.asarray(from_tensor.data[0].z), np.asarray(heat.z))
    with pytest.raises(ValueError):  # two effects for one cell are refused, not averaged
        patching_table_figure(pd.concat([frame, frame]), "pos", "Residual")


def test_attention_pattern_figure_labels_axes_with_positions_and_tokens():
    pattern = [[1.0, 0.0, 0.0], [0.3, 0.7, 0.0], [0.2, 0.2, 0.6]]
    tokens = ["the", " cat", "the"]
    fig = attention_pattern_figure(pattern, tokens, layer=1, head=2)
    heat = fig.data[0]
    assert np.allclose(np.asarray(heat.z), pattern)
    assert list(heat.x) == list(heat.y) == ["0:'the'", "1:' cat'", "2:'the'"]  # repeated tokens stay apart
    assert (heat.zmin, heat.zmax) == (0, 1) and fig.layout.title.text == "L1H2 attention (3 tokens)"
    assert fig.layout.xaxis.title.text.startswith("key") and fig.layout.yaxis.title.text == "query"
    with pytest.raises(InputError, match="does not match 2 tokens"):
        attention_pattern_figure(pattern, tokens[:2], 1, 2)


def test_dimensionality_box_figure_draws_one_box_per_head_with_its_sizes():
    frame = pd.DataFrame({"layer": [1, 0, 1, 0, 0], "head": [0, 1, 0, 1, 1], "size": [4, 1, 5, 2, 3]})
    fig = dimensionality_box_figure(frame)
    assert [t.type for t in fig.data] == ["box", "box"]
    assert {t.name: sorted(t.y) for t in fig.data} == {"L0H1": [1, 2, 3], "L1H0": [4, 5]}
    assert [t.name for t in fig.data] == ["L0H1", "L1H0"] and fig.layout.yaxis.title.text == "|S|"


def test_the_lobe_map_names_each_cluster_in_its_legend_and_keeps_feature_ids():
    points = pd.DataFrame(
        {
            "feature": [0, 1, 2, 3],
            "pca_x": [0.0, 1.0, 2.0, 3.0],
            "pca_y": [1.0, 0.0, 1.0, 0.0],
            "cluster": [1, 0, 1, 2],
            "log10_frequency": [-1.0] * 4,
            "label": list("abcd"),
        }
    )
    fig = feature_map_figure(points, "pca", colour="cluster")
    assert {t.name: sorted(t.customdata) for t in fig.data} == {"lobe 0": [1], "lobe 1": [0, 2], "lobe 2": [3]}
    assert fig.layout.xaxis.title.text == "PCA 1"
