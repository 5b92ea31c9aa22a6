"""Plotly figures of the evaluation suite: a metric against L0 (or width) for many SAEs, coloured by
architecture and MFR, with the Pareto frontier; each point carries its SAE's id for click-through."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

# the columns a reader looks at first (``<metric>.<name>`` of ``wide_eval_table``) and their labels
HEADLINE = {"core.l0": "L0", "core.explained_variance": "explained variance", "core.ce_loss_score": "CE loss score",
            "core.kl_div_score": "KL score", "core.l2_ratio": "shrinkage", "core.dead_fraction": "dead (core eval)",
            "sparse_probing.sae_top_1_test_accuracy": "probe k=1",
            "sparse_probing.sae_top_5_test_accuracy": "probe k=5",
            "sparse_probing.llm_test_accuracy": "probe full", "absorption.mean_absorption_fraction_score": "absorption",
            "absorption.meaningful": "absorption meaningful", "principled.sufficiency": "sufficiency",
            "principled.necessity": "necessity", "stability.shared_fraction_0_7": "shared >0.7",
            "stability.mmcs_live": "MMCS live", "stability.mmcs_all": "MMCS all",
            "explanations.detection_median": "explanation detection"}
# the explanation scores' own table: each median beside its random baseline's
EXPLANATION_COLUMNS = {
    "explanations.explained_fraction": "explained", "explanations.detection_median": "detection",
    "explanations.detection_baseline_median": "detection baseline",
    "explanations.detection_beats_baseline_0_2": "detection beats baseline +0.2",
    "explanations.fuzzing_median": "fuzzing", "explanations.fuzzing_baseline_median": "fuzzing baseline",
    "explanations.fuzzing_beats_baseline_0_2": "fuzzing beats baseline +0.2",
    "explanations.simulation_median": "simulation", "explanations.simulation_baseline_median": "simulation baseline",
    "explanations.simulation_beats_baseline_0_2": "simulation beats baseline +0.2"}
DEFAULT_PLOTS = ("core.explained_variance", "core.ce_loss_score", "sparse_probing.sae_top_1_test_accuracy",
                 "principled.sufficiency", "stability.shared_fraction_0_7", "stability.mmcs_live",
                 "explanations.detection_median")
HIGHER_IS_WORSE = {"core.dead_fraction", "absorption.mean_absorption_fraction_score", "core.l0"}


def family(row: pd.Series) -> str:
    """``topk · MFR λ=1`` or ``topk``: the colour of an SAE in the plots."""
    mfr = float(row.get("mfr_coefficient") or 0.0)
    return f"{row.get('architecture') or '?'}" + (f" · MFR λ={mfr:g}" if mfr > 0 else "")


def pareto_front(x: np.ndarray, y: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Indices of the points no other point beats on both axes (lower x, better y), sorted by x."""
    values = y if higher_is_better else -y
    order = np.lexsort((-values, x))  # by x, the best first among equal x (only it can be on the frontier)
    front, best = [], -np.inf
    for i in order:
        value = values[i]
        if np.isfinite(value) and value > best:
            front.append(i)
            best = value
    return np.array(front, dtype=int)


def pareto_figure(wide: pd.DataFrame, metric: str, x: str = "core.l0", title: str | None = None,
                  higher_is_better: bool = True) -> go.Figure:
    """``metric`` against ``x`` for every SAE row of ``wide`` (``wide_eval_table``), one trace per family,
    the Pareto frontier dashed; ``customdata`` is the SAE id."""
    fig = go.Figure()
    rows = wide.dropna(subset=[c for c in (metric, x) if c in wide.columns]) if {metric, x} <= set(wide.columns) \
        else wide.iloc[0:0]
    for name, group in rows.assign(family=rows.apply(family, axis=1) if len(rows) else []).groupby("family"):
        fig.add_trace(go.Scatter(x=group[x], y=group[metric], mode="markers+text" if len(rows) <= 6 else "markers",
                                 name=name,
                                 text=group.sae, textposition="top center", customdata=group.sae,
                                 marker={"size": 12},
                                 hovertemplate="%{customdata}<br>%{x:.3g}, %{y:.4g}<extra></extra>"))
    if len(rows) > 1:
        front = pareto_front(rows[x].to_numpy(float), rows[metric].to_numpy(float), higher_is_better)
        if len(front) > 1:
            fig.add_trace(go.Scatter(x=rows[x].to_numpy()[front], y=rows[metric].to_numpy()[front], mode="lines",
                                     line={"dash": "dash", "color": "gray"}, name="Pareto frontier", hoverinfo="skip"))
    names = HEADLINE | {"d_sae": "width (latents)"}
    return fig.update_layout(title=title or f"{names.get(metric, metric)} vs {names.get(x, x)}",
                             xaxis_title=names.get(x, x), yaxis_title=names.get(metric, metric),
                             legend={"title": "architecture · MFR", "orientation": "h", "y": -0.25})
