"""Features: find a feature (by id, by a token it fires on, by a logit it promotes) and show its dashboard."""

from __future__ import annotations

import streamlit as st

from app.ui import data
from app.ui.dashboard import render
from app.ui.links import feature_link, feature_table
from app.ui.theme import missing, page
from app.ui.url_state import hold_in_url, open_analysis
from app.ui.workspace import workspace_root
from interp.store import tables
from interp.store.analysis_folder import AnalysisFolder, analysis_id
from interp.store.matches import has_liveness

page("Features")
root = workspace_root()
folder = open_analysis(root, "feature_id", "feature dashboards", with_feature={"how": "by id"})

d_sae = data.n_features(folder)
here = analysis_id(folder)
how = st.radio("Find a feature", ["by id", "by token it fires on", "by logit it promotes", "by explanation words"],
               horizontal=True, key="how")
feature = None
if how == "by id":
    if st.session_state.get("feature_id", 0) > d_sae - 1:  # a link past this SAE's width
        st.session_state["feature_id"] = d_sae - 1
    feature = int(st.number_input(f"Feature id (0 to {d_sae - 1})", 0, d_sae - 1, key="feature_id"))
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
            feature_table(hits, "hits", analysis=here)
            feature = int(st.selectbox("Open feature", hits.feature.tolist(), key="hit_choice"))

with st.expander("Browse features (most frequent first)"):
    feature_table(data.feature_list(folder, limit=200), "browse", analysis=here)
if AnalysisFolder(folder).has_explanations:
    with st.expander("Browse features by explanation score"):
        order = st.selectbox("Sort by", tables.EXPLANATION_ORDER, key="explanation_order")
        st.dataframe(data.explained_features(folder, order_by=order, limit=200), hide_index=True, width="stretch",
                     key="browse_explained")

if feature is not None:
    hold_in_url(here, feature)  # the address holds the view: bookmark, share
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
            shown, cosine = int(match.other_feature), match.cosine
            with column:
                if not has_liveness(matches):
                    st.caption("Stored without firing counts (dead latents not told apart): rerun "
                               f"`workbench analyze features runs/{here.split('/')[0]}`.")
                elif not match.alive:
                    st.info("This feature never fires in the dashboards' tokens (dead): a match says nothing "
                            "about a shared feature.")
                elif not match.other_alive:
                    st.warning(f"Its match over all latents, feature {shown} (cosine {cosine:.3f}), never fires "
                               "(dead): not a shared feature. Shown: its match among live features.")
                    shown, cosine = int(match.live_other_feature), match.live_cosine
                if shown < 0:
                    st.markdown(f"`{match.other_analysis}`: no live feature left to match.")
                    continue
                st.markdown(f"`{match.other_analysis}` feature **{shown}** (cosine {cosine:.3f})")
                feature_link(match.other_analysis, shown, label=f"Open {match.other_analysis} feature {shown}")
                if other.has_dashboards:
                    render(other.path, shown, key=f"match_{match.other_analysis}", compact=True)
                else:
                    missing(f"No dashboards for {match.other_analysis}.", "workbench analyze features runs/"
                            + match.other_analysis.split("/")[0])
