"""Geometry: the 2-D map of decoder directions (click a point to open its dashboard), crystals, galaxy plots."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.ui import data
from app.ui.dashboard import choose_analysis, render
from app.ui.theme import missing, page, plot
from app.ui.workspace import COMMANDS, list_analyses, workspace_root
from interp.analysis_folder import AnalysisFolder

page("Geometry")
root = workspace_root()
folder = choose_analysis(root, "analysis")
if folder is None:
    if not st.session_state.get("analysis_typed", "").strip():
        missing("No analyses in this workspace yet.", COMMANDS["features"].format(run_id="demo-mfr"))
    st.stop()
run_id = folder.parent.name
analysis = AnalysisFolder(folder)
if not analysis.has("geometry_map"):
    missing(f"No geometry tables for `{folder.relative_to(root)}` yet.", COMMANDS["geometry"].format(run_id=run_id))
    st.stop()

points = data.parquet(analysis.table_path("geometry_map"))
features = data.parquet(analysis.table_path("features"), columns="feature, label, log10_frequency")
points = points.merge(features, on="feature", how="left")
left, right = st.columns([3, 1])
with right:
    layouts = ["UMAP", "PCA"] if "umap_x" in points else ["PCA"]
    layout = st.radio("Layout", layouts, key="layout")
    colour = st.radio("Colour by", ["lobe (cluster)", "log10 frequency"], key="colour")
    chosen = st.number_input("Open feature", 0, len(points) - 1, 0, key="open_feature")
x, y = ("umap_x", "umap_y") if layout == "UMAP" else ("pca_x", "pca_y")
by_cluster = colour.startswith("lobe")
marker = dict(size=6 if len(points) <= 2000 else 3, color=points.cluster if by_cluster else points.log10_frequency,
              colorscale="Turbo" if by_cluster else "Viridis", showscale=not by_cluster,
              colorbar=dict(title="log10 f") if not by_cluster else None)
fig = go.Figure(go.Scattergl(x=points[x], y=points[y], mode="markers", marker=marker, customdata=points.feature,
                             text=[f"{f}: {lab}" for f, lab in zip(points.feature, points.label)],
                             hovertemplate="%{text}<extra></extra>"))
fig.update_layout(title=f"{layout} of unit decoder directions ({len(points)} features)", height=520,
                  xaxis_title=x, yaxis_title=y)
with left:
    event = plot(fig, key="map", on_select="rerun", selection_mode="points")
selected = event.selection.points if event is not None and hasattr(event, "selection") else []
feature = int(selected[0]["customdata"]) if selected else int(chosen)
st.markdown(f"[Open feature {feature} on the Features page](/Features?analysis={folder.relative_to(root / 'analyses')}"
            f"&feature={feature})")
render(folder, feature, key="geo", compact=True)

st.divider()
st.subheader("Crystals (parallelograms and trapezoids of decoder directions)")
if analysis.has("geometry_crystals"):
    st.dataframe(data.parquet(analysis.table_path("geometry_crystals"), order="parallelogram_error").head(50),
                 hide_index=True, width="stretch", key="crystals")
if analysis.has("geometry_lobes"):
    lobes = data.parquet(analysis.table_path("geometry_lobes"))
    lobe_fig = go.Figure([go.Scatter(x=g.k, y=g.z, mode="lines+markers", name=a) for a, g in lobes.groupby("affinity")])
    lobe_fig.update_layout(title="Lobes: functional vs geometric clusters (AMI z-score vs null)",
                           xaxis_title="clusters k", yaxis_title="z")
    plot(lobe_fig, key="lobes")

st.subheader("Galaxy: power law and clustering entropy")
spectrum = data.parquet(analysis.table_path("geometry_spectrum"))
spec_fig = go.Figure(go.Scatter(x=spectrum["rank"], y=spectrum.eigenvalue, mode="lines+markers"))
spec_fig.update_layout(title="Eigenvalue spectrum of decoder directions", xaxis_type="log", yaxis_type="log",
                       xaxis_title="rank", yaxis_title="eigenvalue")
rows = []
for name in list_analyses(root):
    other = AnalysisFolder(root / "analyses" / name)
    if other.has("geometry_galaxy"):
        hook = data.read_json(other.meta_path).get("hook", "?") if other.meta_path.exists() else "?"
        rows.append({"analysis": name, "hook": hook, **data.parquet(other.table_path("geometry_galaxy")).iloc[0].to_dict()})
galaxy = pd.DataFrame(rows)
by_layer = go.Figure([go.Bar(x=galaxy.analysis + "<br>" + galaxy.hook, y=galaxy.power_law_slope, name="power-law slope"),
                      go.Bar(x=galaxy.analysis + "<br>" + galaxy.hook, y=galaxy.clustering_entropy,
                             name="clustering entropy")])
by_layer.update_layout(title="By layer / SAE", barmode="group", legend=dict(orientation="h", y=-0.3))
c1, c2 = st.columns(2)
with c1:
    plot(spec_fig, key="spectrum")
with c2:
    plot(by_layer, key="galaxy")
st.dataframe(galaxy, hide_index=True, width="stretch", key="galaxy_table")
