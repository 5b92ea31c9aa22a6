"""Evaluate: every evaluated SAE side by side: the metric table and each metric against L0 (or width),
coloured by architecture and MFR; click a point to open that SAE's features."""

from __future__ import annotations

import streamlit as st

from app.ui import data
from app.ui.measurements import core_note
from app.ui.theme import missing, page, plot
from app.ui.workspace import list_analyses, workspace_root
from interp.figures.evals import DEFAULT_PLOTS, EXPLANATION_COLUMNS, HEADLINE, HIGHER_IS_WORSE, pareto_figure
from interp.store.analysis_folder import eval_table_path, wide_eval_table

page("Evaluate")
root = workspace_root()
path = eval_table_path(root / "analyses")
if not path.exists():
    missing("No evaluations in this workspace yet.", "workbench eval runs/demo-mfr runs/demo-plain")
    st.stop()
wide = wide_eval_table(data.eval_results(path))
groups = sorted({(m, h) for m, h in zip(wide.model, wide.hook)})
if len(groups) > 1:
    st.info(f"These SAEs read {len(groups)} different model/hook sites; they are shown one site at a time, "
            "since their metrics are not comparable across sites.")
    labels = [f"{m} · {h}" for m, h in groups]
    model, hook = groups[labels.index(st.selectbox("Site", labels, key="site"))]
    wide = wide[(wide.model == model) & (wide.hook == hook)]
saes = st.multiselect("SAEs", wide.sae.tolist(), default=wide.sae.tolist(), key="saes")
wide = wide[wide.sae.isin(saes)]
if wide.empty:
    st.warning("Pick at least one SAE.")
    st.stop()

shown = [c for c in HEADLINE if c in wide.columns]
st.dataframe(wide[["sae", "architecture", "mfr_coefficient", *shown]].rename(columns=HEADLINE), hide_index=True,
             width="stretch", key="table")
st.caption(core_note(wide))
explained = [c for c in EXPLANATION_COLUMNS if c in wide.columns]
if explained:
    st.markdown("**Explanation scores** (`workbench explain`): medians over the explained latents, each beside its "
                "random baseline (another latent's explanation scored on the same held-out windows)")
    st.dataframe(wide.loc[wide[explained].notna().any(axis=1), ["sae", *explained]].rename(
        columns=EXPLANATION_COLUMNS), hide_index=True, width="stretch", key="explanations")
if "absorption.meaningful" in wide and (wide["absorption.meaningful"] == 0).any():
    st.warning("Absorption is flagged not meaningful for some SAEs (SAEBench's caveat: it needs a model that can "
               "spell, >= 1B parameters, 20 letters the probe finds, and >= 16k latents); see each SAE's "
               "`eval/absorption.json`, `eval_result_unstructured.caveat`.")
with st.expander("Every metric"):
    st.dataframe(wide, hide_index=True, width="stretch", key="all_metrics")

numeric = [c for c in wide.columns if "." in c and wide[c].notna().any()]
x_axis = st.radio("Against", ["core.l0", "d_sae"], horizontal=True, key="x_axis",
                  format_func=lambda c: {"core.l0": "L0", "d_sae": "width (latents)"}[c])
default = [c for c in DEFAULT_PLOTS if c in numeric]
chosen = st.multiselect("Metrics to plot", numeric, default=default, key="plotted")
columns = st.columns(2)
analysed = set(list_analyses(root))
for i, metric in enumerate(chosen):
    with columns[i % 2]:
        fig = pareto_figure(wide, metric, x_axis, title=HEADLINE.get(metric, metric),
                            higher_is_better=metric not in HIGHER_IS_WORSE)
        event = plot(fig, key=f"pareto_{metric}", on_select="rerun", selection_mode="points")
        points = event.selection.points if event and event.selection else []
        if points and points[0].get("customdata") in analysed:
            st.switch_page("pages/2_Features.py", query_params={"analysis": points[0]["customdata"]})
        elif points:
            st.warning(f"`{points[0].get('customdata')}` has no feature dashboards; make them with "
                       f"`workbench analyze features runs/{str(points[0].get('customdata')).split('/')[0]}`.")
st.caption("Click a point to open that SAE's features. Dashed: the Pareto frontier (no SAE is better on both axes).")
