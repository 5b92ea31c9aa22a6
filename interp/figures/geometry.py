"""Plotly figures for concept geometry: feature maps, eigen-spectra, lobe agreement, crystal quality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.store.errors import InputError


def feature_map_figure(points: pd.DataFrame, method: str = "umap", labels: pd.Series | None = None,
                       colour: str = "cluster") -> go.Figure:
    """Decoder directions in 2-D (``umap`` or ``pca`` columns of ``geometry_map``), coloured by ``cluster`` or
    ``log10_frequency`` or an explanation's ``detection`` score; each point carries its feature id (``customdata``) so
    a click can open it."""
    x, y = f"{method}_x", f"{method}_y"
    if x not in points:
        raise InputError(f"the map has no {method} coordinates; rerun `workbench analyze geometry` with it")
    scales = {"cluster": None, "log10_frequency": "log10 f", "detection": "detection"}
    if colour not in scales:
        raise InputError(f"colour the map by one of {list(scales)}, not {colour!r}")
    if labels is None and "label" in points:
        labels = points.label
    hover = points.feature.astype(str) if labels is None else points.feature.astype(str) + ": " + labels.astype(str)
    size = 6 if len(points) <= 2000 else 3
    if colour == "cluster":  # one trace per lobe: the legend names every colour
        fig = go.Figure(
            [
                go.Scattergl(
                    x=group[x],
                    y=group[y],
                    mode="markers",
                    marker=dict(size=size),
                    customdata=group.feature,
                    text=hover[group.index],
                    name=f"lobe {c}",
                    hovertemplate="%{text}<extra></extra>",
                )
                for c, group in points.groupby("cluster")
            ]
        )
        fig.update_layout(legend=dict(title="cluster"))
    else:
        marker = dict(
            size=size, color=points[colour], colorscale="Viridis", showscale=True, colorbar=dict(title=scales[colour])
        )
        fig = go.Figure(
            go.Scattergl(
                x=points[x],
                y=points[y],
                mode="markers",
                marker=marker,
                customdata=points.feature,
                text=hover,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    return fig.update_layout(
        title=f"{method.upper()} of unit decoder directions ({len(points)} features)",
        height=520,
        xaxis_title=f"{method.upper()} 1",
        yaxis_title=f"{method.upper()} 2",
    )


def spectrum_figure(spectrum: pd.DataFrame, slope: float | None = None) -> go.Figure:
    """Covariance eigenvalues of the decoder cloud on log-log axes, with the fitted power law when given."""
    fig = go.Figure(go.Scatter(x=spectrum["rank"], y=spectrum.eigenvalue, mode="lines+markers", name="eigenvalue"))
    if slope is not None:
        i = spectrum["rank"].to_numpy()
        anchor = spectrum.eigenvalue.iloc[len(i) // 4] * (i / i[len(i) // 4]) ** -slope
        fig.add_trace(go.Scatter(x=i, y=anchor, mode="lines", name=f"i^-{slope:.2f}"))
    return fig.update_layout(
        title="Eigenvalue spectrum of decoder directions",
        xaxis=dict(type="log", dtick=1, exponentformat="power", title="rank"),
        yaxis=dict(type="log", dtick=1, exponentformat="power", title="eigenvalue"),
        legend=dict(orientation="h", y=-0.25),
    )


def galaxy_figure(galaxy: pd.DataFrame) -> go.Figure:
    """Power-law slope and clustering entropy side by side, one group per analysis (its hook below its id)."""
    from plotly.subplots import make_subplots

    x = galaxy.analysis + "<br>" + galaxy.hook
    fig = make_subplots(1, 2, subplot_titles=["power-law slope of the eigenvalues", "clustering entropy"])
    fig.add_trace(go.Bar(x=x, y=galaxy.power_law_slope, name="power-law slope"), 1, 1)
    fig.add_trace(go.Bar(x=x, y=galaxy.clustering_entropy, name="clustering entropy"), 1, 2)
    fig.update_yaxes(title_text="slope α (λ_i ∝ i^-α)", row=1, col=1).update_yaxes(title_text="entropy", row=1, col=2)
    return fig.update_layout(title="By layer / SAE (two measures, two axes)", showlegend=False)


def lobe_agreement_figure(lobes: pd.DataFrame, score: str = "ami") -> go.Figure:
    """Agreement between co-occurrence lobes and geometric clusters per affinity and k: the AMI with the
    shuffled null, or (``score="z"``) its z-score against that null."""
    fig = go.Figure()
    for kind, rows in lobes.groupby("affinity"):
        fig.add_trace(go.Scatter(x=rows.k, y=rows[score], mode="lines+markers", name=kind))
    if score == "z":
        return fig.update_layout(
            title="Lobes: functional vs geometric clusters (AMI z-score vs null)",
            xaxis_title="clusters k",
            yaxis_title="z",
        )
    null = lobes.groupby("k").null_mean.mean()
    fig.add_trace(
        go.Scatter(x=null.index, y=null.values, mode="lines", name="shuffled null", line=dict(dash="dot", color="grey"))
    )
    return fig.update_layout(title="Lobes vs geometry (AMI)", xaxis_title="clusters k", yaxis_title="AMI")


def crystal_figure(points: np.ndarray, quadruple: tuple[int, int, int, int]) -> go.Figure:
    """One parallelogram ``a - b ~ c - d`` drawn in the PCA plane of its four points."""
    four = np.asarray(points)[list(quadruple)]
    centred = four - four.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    a, b, c, d = xy
    fig = go.Figure()
    for (p, q), name in (((b, a), "a - b"), ((d, c), "c - d")):
        fig.add_trace(go.Scatter(x=[p[0], q[0]], y=[p[1], q[1]], mode="lines+markers", name=name))
    fig.add_trace(
        go.Scatter(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="text",
            text=[str(i) for i in quadruple],
            textposition="top center",
            showlegend=False,
        )
    )
    return fig.update_layout(title="Crystal", xaxis_title="PC1", yaxis_title="PC2")
