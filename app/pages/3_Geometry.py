"""Geometry: the 2-D map of decoder directions (click a point to open its dashboard), crystals, galaxy plots."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import data
from app.ui.dashboard import render
from app.ui.links import feature_link, feature_params, page_link
from app.ui.theme import missing, page, plot
from app.ui.url_state import hold_in_url, open_analysis
from app.ui.workspace import COMMANDS, list_analyses, workspace_root
from interp.features.crystals import chance_share, without_hubs
from interp.figures.geometry import (
    crystal_error_figure,
    crystal_figure,
    feature_map_figure,
    galaxy_figure,
    lobe_agreement_figure,
    spectrum_figure,
)
from interp.store.analysis_folder import AnalysisFolder, analysis_id

HUB_PERCENT, RARE_FIRES = 10.0, 10  # the hub filter's defaults, said on the page
CORNERS = list("abcd")


def crystals_section(analysis: AnalysisFolder, features: pd.DataFrame, here: str, run_id: str) -> None:
    """The stored crystals without hub features, each error beside chance (random quadruples of the same
    features), the chosen one drawn with its four features linked."""
    crystals = data.parquet(analysis.table_path("geometry_crystals"), order="parallelogram_error")
    by_id = features.set_index("feature")
    stored_baseline = analysis.has("geometry_crystal_baseline")
    absent = [what for what, there in (("the random baseline (the chance level of the error)", stored_baseline),
                                       ("each crystal's drawing", "a_x" in crystals)) if not there]
    if absent:  # tables an older `workbench analyze geometry` did not write: said once, up front
        st.warning(f"These crystals were stored by an older `workbench analyze geometry`, without "
                   f"{' and without '.join(absent)}. Rerun `{COMMANDS['geometry'].format(run_id=run_id)}` to add "
                   f"{'them' if len(absent) > 1 else 'it'}.")
    c1, c2 = st.columns(2)
    percent = c1.number_input("Hide crystals with a feature firing on more than this % of tokens", 0.0, 100.0,
                              HUB_PERCENT, step=1.0, key="hub_percent",
                              help=f"Dense hub features sit in many quadruples and crowd out the rest "
                                   f"(default {HUB_PERCENT:g} %)")
    rare = c2.number_input("…or on fewer than this many tokens", 0, 1 << 30, RARE_FIRES, key="rare_fires",
                           help=f"A feature that fired a handful of times has an untrained direction "
                                f"(default {RARE_FIRES})")
    shown = without_hubs(crystals, by_id.frequency, percent / 100, int(rare), by_id.n_fires).reset_index(drop=True)
    st.caption(f"{len(crystals) - len(shown)} of the {len(crystals)} stored crystals hidden: they hold a feature "
               f"firing on more than {percent:g} % of tokens or on fewer than {int(rare)} "
               f"(defaults {HUB_PERCENT:g} % and {RARE_FIRES}).")
    if shown.empty:
        st.info("No crystal left: raise the frequency limit or lower the firing count.")
        return
    baseline = pd.DataFrame()
    if stored_baseline:
        baseline = without_hubs(data.parquet(analysis.table_path("geometry_crystal_baseline")), by_id.frequency,
                                percent / 100, int(rare), by_id.n_fires)
    columns = [*CORNERS, "parallelogram_error", "trapezoid_cosine", "cluster"]
    table = shown[columns].copy()
    for corner in CORNERS:
        table.insert(table.columns.get_loc(corner) + 1, f"{corner} label", table[corner].map(by_id.label))
    if stored_baseline and baseline.empty:
        st.info("No random quadruple of the baseline is left after this filter: loosen it for the chance level.")
    elif not baseline.empty:
        table.insert(table.columns.get_loc("parallelogram_error") + 1, "random as good",
                     chance_share(table.parallelogram_error, baseline.parallelogram_error))
        st.markdown(
            f"**Chance level**: {len(baseline):,} random quadruples of the same features (same filter) have a median "
            f"parallelogram error of **{baseline.parallelogram_error.median():.2f}** (best 5 %: "
            f"{baseline.parallelogram_error.quantile(0.05):.2f}). *random as good*: the share of them with an "
            "error at or below the crystal's (0 = better than every random quadruple).")
    st.caption("Click a row to draw that crystal; its four features link to their dashboards below the drawing."
               if "a_x" in shown else "Click a row to pick a crystal; its four features link to their dashboards "
               "below.")
    event = st.dataframe(table, key="crystals", on_select="rerun", selection_mode="single-row", hide_index=True,
                         width="stretch", height=280,
                         column_config={"random as good": st.column_config.NumberColumn(format="%.3f"),
                                        "parallelogram_error": st.column_config.NumberColumn(format="%.3f"),
                                        "trapezoid_cosine": st.column_config.NumberColumn(format="%.3f")})
    rows = event.selection.rows if event is not None else []
    chosen = shown.iloc[rows[0] if rows and rows[0] < len(shown) else 0]
    left, right = st.columns(2)
    with left:
        if "a_x" in shown:  # else said in the warning above
            plot(crystal_figure(chosen, by_id.label.to_dict()), key="crystal")
        links = st.columns(4)
        for column, corner in zip(links, CORNERS):
            with column:
                feature_id = int(chosen[corner])
                page_link("Features", feature_params(here, feature_id), label=f"{corner}: {feature_id} "
                          f"{by_id.label.get(feature_id, '')}", icon=":material/open_in_browser:")
    with right:
        if not baseline.empty:
            plot(crystal_error_figure(shown, baseline), key="crystal_errors")


page("Geometry")
root = workspace_root()
folder = open_analysis(root, "open_feature", "analyses")
run_id = folder.parent.name
analysis = AnalysisFolder(folder)
if not analysis.has("geometry_map"):
    missing(f"No geometry tables for `{folder.relative_to(root)}` yet.", COMMANDS["geometry"].format(run_id=run_id))
    st.stop()

points = data.parquet(analysis.table_path("geometry_map"))
features = data.parquet(analysis.table_path("features"), columns="feature, label, log10_frequency, frequency, n_fires")
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
    crystals_section(analysis, features, here, run_id)
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
