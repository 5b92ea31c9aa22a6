"""Geometry: the 2-D map of decoder directions (click a point to open its dashboard), crystals, galaxy plots."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import data
from app.ui.dashboard import render
from app.ui.links import feature_link, feature_table
from app.ui.theme import missing, page, plot
from app.ui.url_state import hold_in_url, open_analysis
from app.ui.workspace import COMMANDS, list_analyses, workspace_root
from interp.figures.geometry import feature_map_figure, galaxy_figure, lobe_agreement_figure, spectrum_figure
from interp.store.analysis_folder import AnalysisFolder, analysis_id

page("Geometry")
root = workspace_root()
folder = open_analysis(root, "open_feature", "analyses")
run_id = folder.parent.name
analysis = AnalysisFolder(folder)
if not analysis.has("geometry_map"):
    missing(f"No geometry tables for `{folder.relative_to(root)}` yet.", COMMANDS["geometry"].format(run_id=run_id))
    st.stop()

points = data.parquet(analysis.table_path("geometry_map"))
features = data.parquet(analysis.table_path("features"), columns="feature, label, log10_frequency")
points = points.merge(features, on="feature", how="left")
colours = {"lobe (cluster)": "cluster", "log10 frequency": "log10_frequency"}
if analysis.has_explanations:  # dead and too rare features have no score: they stay uncoloured
    scores = data.parquet(analysis.table_path("explanations"), columns="feature, detection")
    points = points.merge(scores, on="feature", how="left")
    colours["explanation detection score"] = "detection"
left, right = st.columns([3, 1])
with right:
    layouts = ["UMAP", "PCA"] if "umap_x" in points else ["PCA"]
    layout = st.radio("Layout", layouts, key="layout")
    colour = st.radio("Colour by", list(colours), key="colour")
    if st.session_state.get("open_feature", 0) > len(points) - 1:
        st.session_state["open_feature"] = 0
    # one source of truth: a click on the map writes this field (on_select below), typing overrides the click
    feature = int(st.number_input("Open feature", 0, len(points) - 1, key="open_feature",
                                  help="Type an id, or click a point on the map"))


def clicked() -> None:
    """A click on the map opens that point's feature (before the rerun, so the field shows it)."""
    selected = st.session_state["map"].selection.points
    if selected:
        value = selected[0]["customdata"]
        st.session_state["open_feature"] = int(value[0] if isinstance(value, list) else value)


fig = feature_map_figure(points, layout.lower(), colour=colours[colour])
with left:
    plot(fig, key="map", on_select=clicked, selection_mode="points")
here = analysis_id(folder)
hold_in_url(here, feature)
feature_link(here, feature, label=f"Open feature {feature}'s full dashboard on the Features page")
render(folder, feature, key="geo", compact=True)

st.divider()
st.subheader("Crystals (parallelograms and trapezoids of decoder directions)")
if analysis.has("geometry_crystals"):
    feature_table(data.parquet(analysis.table_path("geometry_crystals"), order="parallelogram_error").head(50),
                  "crystals", analysis=here, feature="a")
if analysis.has("geometry_lobes"):
    lobe_fig = lobe_agreement_figure(data.parquet(analysis.table_path("geometry_lobes")), score="z")
    plot(lobe_fig, key="lobes")

st.subheader("Galaxy: power law and clustering entropy")
own = data.parquet(analysis.table_path("geometry_galaxy")) if analysis.has("geometry_galaxy") else pd.DataFrame()
spec_fig = spectrum_figure(data.parquet(analysis.table_path("geometry_spectrum")),
                           float(own.power_law_slope.iloc[0]) if not own.empty else None)  # the fit the table reports
rows = []
for name in list_analyses(root):
    other = AnalysisFolder(root / "analyses" / name)
    if other.has("geometry_galaxy"):
        hook = other.meta().get("hook", "?")  # the dashboards' checked record ({} without one)
        rows.append(
            {"analysis": name, "hook": hook, **data.parquet(other.table_path("geometry_galaxy")).iloc[0].to_dict()}
        )
galaxy = pd.DataFrame(rows)
by_layer = galaxy_figure(galaxy)
c1, c2 = st.columns(2)
with c1:
    plot(spec_fig, key="spectrum")
with c2:
    plot(by_layer, key="galaxy")
st.dataframe(galaxy, hide_index=True, width="stretch", key="galaxy_table")
