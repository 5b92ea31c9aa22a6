"""The URL holds the view (``?analysis=…&feature=…``): a link sets the widgets once, then the widgets write the URL.

Features and Geometry open the same way (``open_analysis``) and write their state back the same way
(``hold_in_url``), so a dashboard can be bookmarked, shared and opened from any table's link.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.ui.dashboard import choose_analysis
from app.ui.theme import missing
from app.ui.workspace import COMMANDS, list_analyses, list_runs

LINKED_ANALYSIS, LINKED_FEATURE = "_linked_analysis", "_linked_feature"


def apply_link(root: Path, feature_key: str, with_feature: dict | None = None) -> None:
    """Copy a new link's ``analysis`` into the chooser (key ``analysis``) and its ``feature`` into
    ``feature_key`` (plus ``with_feature``'s widget values), once per link: a widget changed later wins."""
    params = st.query_params
    analysis, feature = params.get("analysis"), str(params.get("feature", ""))
    if analysis and analysis != st.session_state.get(LINKED_ANALYSIS):
        st.session_state[LINKED_ANALYSIS] = analysis
        if analysis in list_analyses(root):
            st.session_state["analysis"] = analysis
    if feature.isdigit() and feature != st.session_state.get(LINKED_FEATURE):
        st.session_state[LINKED_FEATURE] = feature
        st.session_state.update(with_feature or {})
        st.session_state[feature_key] = int(feature)


def open_analysis(root: Path, feature_key: str, what: str, with_feature: dict | None = None) -> Path:
    """The linked analysis folder (``apply_link``, then the chooser); without one, ``what`` is missing and
    the page stops with the command that makes it."""
    apply_link(root, feature_key, with_feature)
    folder = choose_analysis(root, "analysis", default=st.query_params.get("analysis"))
    if folder is None:
        if not st.session_state.get("analysis_typed", "").strip():  # a typed folder already said what is wrong
            runs = list_runs(root)
            missing(f"No {what} in this workspace yet.",
                    COMMANDS["features"].format(run_id=runs[0].run_id if runs else "demo-mfr"))
        st.stop()
    return folder


def hold_in_url(analysis: str, feature: int) -> None:
    """Write the shown feature into the URL (bookmark, share) and mark it as this session's own link."""
    st.query_params.update(analysis=analysis, feature=str(int(feature)))
    st.session_state[LINKED_ANALYSIS], st.session_state[LINKED_FEATURE] = analysis, str(int(feature))
