"""The figure builders the pages call carry exactly the data they are given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from interp.circuits.attention import composition_frame, dla_frame
from interp.circuits.patching import grid_frame
from interp.figures.circuits import (
    atp_agreement_figure,
    atp_scatter_figure,
    attention_grid_figure,
    attention_pattern_figure,
    composition_table_figure,
    dimensionality_box_figure,
    dla_positions_figure,
    feature_circuit_figure,
    logit_lens_table_figure,
    patching_figure,
    patching_table_figure,
    path_patching_figure,
)
from interp.figures.compare import matched_cosine_figure
from interp.figures.geometry import feature_map_figure, galaxy_figure, lobe_agreement_figure
from interp.figures.training import AXIS_TITLES, SHORT_TITLES, metric_curve_figure, runs_overlay_figure
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


def test_a_small_curve_titles_the_plot_area_and_keeps_its_y_title_short():
    """The chart's title starts over the plot area (x=0 of the paper), never over the y axis' title, and the y
    title is the short name (the full one outgrew a 280 px chart and ran into the title)."""
    metrics = pd.DataFrame({"step": [1, 2], "mmcs": [0.3, 0.4], "fvu": [0.5, 0.4]})
    for column in ("mmcs", "fvu"):
        fig = metric_curve_figure(metrics, column, column)
        assert (fig.layout.title.xref, fig.layout.title.x, fig.layout.title.xanchor) == ("paper", 0, "left")
        assert fig.layout.title.text == AXIS_TITLES[column] and fig.layout.yaxis.title.text == SHORT_TITLES[column]
        assert len(SHORT_TITLES[column]) < len(AXIS_TITLES[column]) and fig.layout.margin.r >= 40  # toolbar clear


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


def test_attention_grid_draws_every_head_and_frames_the_marked_ones():
    patterns = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).numpy()  # [layer, head, q, k]
    fig = attention_grid_figure(patterns, ["a", "b", "a", "c"], {(1, 2): "induction head"})
    assert len(fig.data) == 6 and all(t.coloraxis == "coloraxis" for t in fig.data)
    for trace in fig.data:  # each panel is its head's pattern, named L{layer}H{head}
        layer, head = int(trace.name[1]), int(trace.name[3])
        assert np.allclose(np.asarray(trace.z), patterns[layer, head]) and list(trace.x)[2] == "2:'a'"
    assert [a.text for a in fig.layout.annotations][5] == "<b>L1H2 · induction head</b>"
    (frame,) = fig.layout.shapes  # one frame, around the last panel (L1H2 is subplot 6)
    assert (frame.xref, frame.yref) == ("x6 domain", "y6 domain")
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0, 1)
    with pytest.raises(InputError, match="do not match 3 tokens"):
        attention_grid_figure(patterns, ["a", "b", "c"])


def test_head_pair_figures_put_each_pair_score_in_its_cell():
    g = torch.Generator().manual_seed(1)
    scores = {m: torch.rand(2, 3, 2, 3, generator=g) for m in "QKV"}
    fig = composition_table_figure(composition_frame(scores), baseline=0.05)
    assert [t.name for t in fig.data] == ["Q-composition", "K-composition", "V-composition"]
    k = fig.data[1]
    assert list(k.y) == ["L0H0", "L0H1", "L0H2"] and list(k.x) == ["L1H0", "L1H1", "L1H2"]
    assert np.allclose(np.asarray(k.z), scores["K"][0, :, 1, :].numpy())
    assert "chance level 0.050" in fig.layout.title.text
    effects = torch.randn(3, 2, 3, 2, 3, generator=g)  # [side, layer_a, head_a, layer_b, head_b]
    frame = grid_frame(effects, ("side", "layer_a", "head_a", "layer_b", "head_b"), "effect").assign(
        side=lambda f: f.side.map(dict(enumerate("qkv"))))
    fig = path_patching_figure(frame, "nats")
    assert np.allclose(np.asarray(fig.data[2].z), effects[2, 0, :, 1, :].numpy())
    assert fig.layout.coloraxis.colorbar.title.text == "effect (nats)" and fig.layout.coloraxis.cmid == 0


def test_dla_and_logit_lens_figures_label_positions_with_tokens():
    dla = torch.randn(2, 2, 5, 3, generator=torch.Generator().manual_seed(2))  # [layer, head, batch, pos]
    fig = dla_positions_figure(dla_frame(dla), ["<bos>", " a", " b"])  # the last position has no next token
    assert list(fig.data[0].y) == ["L0H0", "L0H1", "L1H0", "L1H1"] and list(fig.data[0].x) == ["0:'<bos>'", "1:' a'"]
    assert np.allclose(np.asarray(fig.data[0].z), dla.mean(2).reshape(4, 3)[:, :2].numpy())
    assert fig.data[0].colorbar.title.text == "DLA (logit)"
    lens = torch.randn(3, 3, generator=torch.Generator().manual_seed(3))  # [layer+1, pos]
    fig = logit_lens_table_figure(grid_frame(lens, ("layer", "pos"), "log_prob"), ["x", "y", "z"])
    assert [t.name for t in fig.data] == ["residual before L0", "residual before L1", "final residual"]
    assert np.allclose(np.asarray(fig.data[2].y), lens[2, :2].numpy())
    assert fig.layout.yaxis.title.text.endswith("(nats)")
    no_tokens = logit_lens_table_figure(grid_frame(lens, ("layer", "pos"), "log_prob"))
    assert list(no_tokens.data[0].x) == [0, 1] and no_tokens.layout.xaxis.title.text == "position in the prompt"


def test_patching_position_axis_names_every_token_and_the_unit():
    effects = torch.tensor([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]])
    fig = patching_table_figure(grid_frame(effects, ("layer", "pos"), "effect"), "pos", "Residual",
                                tokens=["<bos>", " a", " a"], unit="nats")
    assert list(fig.data[0].x) == ["0:'<bos>'", "1:' a'", "2:' a'"] and fig.layout.xaxis.dtick == 1
    assert fig.data[0].colorbar.title.text == "effect (nats)"


def test_atp_figures_carry_the_stored_agreement_and_each_head():
    table = pd.DataFrame({"scale": [0.1, 0.1, 1.0, 1.0], "method": ["atp", "atp*", "atp", "atp*"],
                          "pearson": [0.99, 0.98, 0.7, 0.8], "spearman": [0.9] * 4, "n": [8] * 4})
    fig = atp_agreement_figure(table)
    assert [list(t.y) for t in fig.data] == [[0.99, 0.98], [0.7, 0.8]] and list(fig.data[0].x) == ["atp", "atp*"]
    exact = grid_frame(torch.tensor([[1.0, -2.0]]), ("layer", "head"), "effect")
    estimate = grid_frame(torch.tensor([[0.5, -1.5]]), ("layer", "head"), "effect")
    points = atp_scatter_figure(exact, estimate, "logits").data[0]
    assert list(points.text) == ["L0H0", "L0H1"] and list(points.x) == [1.0, -2.0] and list(points.y) == [0.5, -1.5]


def test_feature_circuit_nodes_take_their_labels():
    graph = {"method": "ig", "edges": [{"source": "h/all/3", "target": "metric", "weight": 0.5},
                                       {"source": "h/all/-1", "target": "metric", "weight": -0.2}]}
    fig = feature_circuit_figure(graph, {"h/all/3": "L1 attn_out #3 · 'the'"})
    assert sorted(fig.data[0].node.label) == sorted(["L1 attn_out #3 · 'the'", "h/all/-1", "metric"])


def test_an_activation_histogram_under_two_decades_labels_1_2_5_of_each_decade():
    """A log axis labelled at decades alone shows one label (or none) for activations from 0.18 to 4."""
    from interp.figures.features import activation_histogram

    def bins(left, right):
        edges = np.geomspace(left, right, 9)
        return pd.DataFrame({"bin_left": edges[:-1], "bin_right": edges[1:], "count": np.arange(8)})

    assert activation_histogram(bins(0.18, 4.0)).layout.xaxis.dtick == "D2"
    assert activation_histogram(bins(1e-3, 10.0)).layout.xaxis.dtick == 1
