"""Plotly figures for concept geometry: feature maps, eigen-spectra, lobe agreement, crystal quality."""

from __future__ import annotations

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


def crystal_figure(crystal: pd.Series, labels: dict[int, str] | None = None) -> go.Figure:
    """One quadruple ``a - b ~ c - d`` drawn in the plane of its own four points (``a_x … d_y`` columns of
    ``geometry_crystals``): the two sides as arrows, the two other sides dotted, every corner named."""
    corners = {c: (float(crystal[f"{c}_x"]), float(crystal[f"{c}_y"])) for c in "abcd"}
    ids = {c: int(crystal[c]) for c in "abcd"}
    name = {c: f"{ids[c]}" + (f" {labels[ids[c]]}" if labels and ids[c] in labels else "") for c in "abcd"}
    fig = go.Figure()
    for (tip, tail), colour in ((("a", "b"), "#1f77b4"), (("c", "d"), "#ff7f0e")):
        fig.add_annotation(x=corners[tip][0], y=corners[tip][1], ax=corners[tail][0], ay=corners[tail][1],
                           xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=3, arrowwidth=2,
                           arrowcolor=colour, text="")
        fig.add_trace(go.Scatter(x=[corners[tail][0], corners[tip][0]], y=[corners[tail][1], corners[tip][1]],
                                 mode="lines", line=dict(color=colour, width=2),
                                 name=f"{name[tip]} − {name[tail]}"))
    for p, q in (("a", "c"), ("b", "d")):
        fig.add_trace(go.Scatter(x=[corners[p][0], corners[q][0]], y=[corners[p][1], corners[q][1]], mode="lines",
                                 line=dict(color="grey", dash="dot", width=1), showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[corners[c][0] for c in "abcd"], y=[corners[c][1] for c in "abcd"],
                             mode="markers+text", text=[name[c] for c in "abcd"], textposition="top center",
                             marker=dict(size=9, color="black"), showlegend=False, hoverinfo="text"))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)  # equal scales: a parallelogram looks like one
    return fig.update_layout(
        title=f"Crystal {name['a']} − {name['b']} ≈ {name['c']} − {name['d']} "
              f"(error {float(crystal.parallelogram_error):.2f})",
        xaxis_title="PC1 of the four unit decoder rows", yaxis_title="PC2", height=380,
        legend=dict(orientation="h", y=-0.25))


def crystal_error_figure(crystals: pd.DataFrame, baseline: pd.DataFrame) -> go.Figure:
    """Parallelogram errors of the shown crystals against the same statistic on random quadruples (chance)."""
    bins = dict(start=0.0, end=float(max(crystals.parallelogram_error.max(), baseline.parallelogram_error.max(), 1e-9))
                * 1.01, size=0.05)
    fig = go.Figure([
        go.Histogram(x=baseline.parallelogram_error, xbins=bins, histnorm="probability", name="random quadruples",
                     marker_color="lightgrey"),
        go.Histogram(x=crystals.parallelogram_error, xbins=bins, histnorm="probability", name="crystals shown",
                     marker_color="#1f77b4", opacity=0.8),
    ])
    return fig.update_layout(
        title="Parallelogram error: crystals vs random quadruples of the same features", barmode="overlay",
        xaxis_title="parallelogram error |(a − b) − (c − d)| / mean side (0 = exact)",
        yaxis_title="share of quadruples", height=380, legend=dict(orientation="h", y=-0.3))
