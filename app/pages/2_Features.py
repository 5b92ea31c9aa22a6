"""Features: find a feature (by id, by a token it fires on, by a logit it promotes) and show its dashboard."""

from __future__ import annotations

import streamlit as st

from app.ui import data
from app.ui.dashboard import choose_analysis, render
from app.ui.theme import missing, page
from app.ui.workspace import COMMANDS, list_runs, workspace_root
from interp.store import tables
from interp.store.analysis_folder import AnalysisFolder

page("Features")
root = workspace_root()
params = st.query_params
folder = choose_analysis(root, "analysis", default=params.get("analysis"))
if folder is None:
    if not st.session_state.get("analysis_typed", "").strip():
        runs = list_runs(root)
        missing("No feature dashboards in this workspace yet.",
                COMMANDS["features"].format(run_id=runs[0].run_id if runs else "demo-mfr"))
    st.stop()

d_sae = data.n_features(folder)
how = st.radio("Find a feature", ["by id", "by token it fires on", "by logit it promotes", "by explanation words"],
               horizontal=True, key="how")
feature = None
if how == "by id":
    start = int(params.get("feature", 0)) if str(params.get("feature", "0")).isdigit() else 0
    feature = int(st.number_input(f"Feature id (0 to {d_sae - 1})", 0, d_sae - 1, min(start, d_sae - 1),
                                  key="feature_id"))
elif how == "by explanation words":
    words = st.text_input("Words of the explanation (all must appear)", key="search_explanation")
    if words.strip():
        hits = data.explained_features(folder, words, limit=50)
        if hits.empty:
            st.warning(f"No stored explanation holds {words!r}.")
        else:
            st.dataframe(hits, hide_index=True, width="stretch", key="explanation_hits")
            feature = int(st.selectbox("Open feature", hits.feature.tolist(), key="explanation_choice"))
else:
    kind = "token" if how.startswith("by token") else "logit"
    token = st.text_input("Token (exact, surrounding spaces ignored)", key=f"search_{kind}")
    if token.strip():
        hits = data.search(folder, kind, token)
        if hits.empty:
            st.warning(f"No feature {'fires on' if kind == 'token' else 'promotes'} {token!r} in the stored tables.")
        else:
            st.dataframe(hits, hide_index=True, width="stretch", key="hits")
            feature = int(st.selectbox("Open feature", hits.feature.tolist(), key="hit_choice"))

with st.expander("Browse features (most frequent first)"):
    st.dataframe(data.feature_list(folder, limit=200), hide_index=True, width="stretch", key="browse")
if AnalysisFolder(folder).has_explanations:
    with st.expander("Browse features by explanation score"):
        order = st.selectbox("Sort by", tables.EXPLANATION_ORDER, key="explanation_order")
        st.dataframe(data.explained_features(folder, order_by=order, limit=200), hide_index=True, width="stretch",
                     key="browse_explained")

if feature is not None:
    st.divider()
    tables = render(folder, feature, key="main")
    st.markdown(f"[Test this feature on my text](/Probe?analysis={AnalysisFolder(folder).id}&feature={feature})")
    matches = tables.get("matches")
    if matches is not None:  # only this run's members; cross-run matches live on the Compare page
        matches = matches[matches.other_analysis.str.startswith(f"{folder.resolve().parent.name}/")]
    if matches is not None and not matches.empty:
        st.divider()
        st.subheader("Matched features in the other ensemble members")
        columns = st.columns(len(matches))
        for column, match in zip(columns, matches.itertuples()):
            other = AnalysisFolder(root / "analyses" / match.other_analysis)
            with column:
                st.markdown(f"`{match.other_analysis}` feature **{match.other_feature}** (cosine {match.cosine:.3f})")
                if other.has_dashboards:
                    render(other.path, int(match.other_feature), key=f"match_{match.other_analysis}", compact=True)
                else:
                    missing(f"No dashboards for {match.other_analysis}.", "workbench analyze features runs/"
                            + match.other_analysis.split("/")[0])
