"""Links between pages in the same tab, with the state in the URL (``?analysis=…&feature=…``).

A row of a table is a link: ``linked_table`` shows a frame whose row click opens what the row names
(a feature's dashboard, a run, a prompt set) through ``st.switch_page`` with query parameters, so the
session (and its caches) stays and the address can be bookmarked or shared.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

APP = Path(__file__).resolve().parents[1]
PAGES = {"Home": "Home.py", "Training": "pages/1_Training.py", "Features": "pages/2_Features.py",
         "Geometry": "pages/3_Geometry.py", "Circuits": "pages/4_Circuits.py", "Compare": "pages/5_Compare.py"}


def feature_params(analysis: str, feature: int) -> dict[str, str]:
    """The Features page's URL state for one feature of one analysis (``<run_id>/sae_<i>``)."""
    return {"analysis": str(analysis), "feature": str(int(feature))}


def registered(page: str) -> str | None:
    """``page``'s path as Streamlit wants it (relative to the entry script) when the app knows that page;
    None when a page runs on its own (``AppTest.from_file`` on one page), where no other page exists."""
    ctx = get_script_run_ctx()
    if ctx is None or Path(ctx.main_script_path).resolve() != (APP / PAGES["Home"]).resolve():
        return None  # not the app: a page running alone
    return PAGES[page]


def open_page(page: str, params: dict[str, str]) -> None:
    """Go to ``page`` (a key of ``PAGES``) in this tab with ``params`` in its URL (a page running on its own can
    only open itself: its URL changes and it reruns)."""
    path = registered(page)
    if path is not None:
        st.switch_page(path, query_params=params)
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)
        st.rerun()


def feature_link(analysis: str, feature: int, label: str | None = None) -> None:
    """A same-tab link to one feature's dashboard."""
    page_link("Features", feature_params(analysis, feature), label or f"Open feature {int(feature)} of {analysis}")


def page_link(page: str, params: dict[str, str] | None = None, label: str | None = None,
              icon: str = ":material/arrow_forward:") -> None:
    """A same-tab link to ``page`` with ``params`` in its URL (a Material icon: Streamlit serves its font, so it
    draws without an emoji font, which a headless or minimal machine may lack)."""
    path = registered(page)
    if path is not None:
        st.page_link(path, label=label or page, query_params=params, icon=icon)
    else:  # a page running on its own: the same link as plain HTML (target _self keeps the tab)
        query = "&".join(f"{k}={v}" for k, v in (params or {}).items())
        st.markdown(f'<a href="/{page}{"?" + query if query else ""}" target="_self">{label or page}</a>',
                    unsafe_allow_html=True)


def linked_table(frame: pd.DataFrame, key: str, target: Callable[[pd.Series], tuple[str, dict] | None],
                 caption: str | None = "Click a row to open it.",
                 cell_target: Callable[[pd.Series, str], tuple[str, dict] | None] | None = None, **kwargs) -> None:
    """``st.dataframe`` whose selected row opens ``target(row)`` (``(page, params)``; None: not a link). With
    ``cell_target``, a clicked cell opens ``cell_target(row, column)`` (None there: the row's ``target``)."""
    if caption and not frame.empty:
        st.caption(caption)
    modes = ["single-row", "single-cell"] if cell_target is not None else "single-row"
    event = st.dataframe(frame, key=key, on_select="rerun", selection_mode=modes, hide_index=True,
                         width="stretch", **kwargs)
    rows = list(event.selection.rows) if event is not None else []
    cells = list(event.selection.get("cells", [])) if event is not None and cell_target is not None else []
    chosen = None
    if cells and int(cells[0][0]) < len(frame):
        row, column = frame.iloc[int(cells[0][0])], str(cells[0][1])
        chosen = cell_target(row, column) or target(row)
    elif rows and rows[0] < len(frame):
        chosen = target(frame.iloc[rows[0]])
    if chosen is not None:
        del st.session_state[key]  # the selection is spent: the page opened next starts with none
        open_page(*chosen)


def feature_table(frame: pd.DataFrame, key: str, analysis: str | None = None, feature: str = "feature",
                  analysis_column: str = "analysis", others: dict[str, str] | None = None, **kwargs) -> None:
    """A table of features whose row click opens that feature's dashboard (``analysis`` for every row, else
    each row's ``analysis_column``); rows whose feature is negative (SAE error nodes, unmatched) open nothing.
    ``others`` maps a column of another SAE's feature ids to that SAE's analysis: a click on such a cell opens
    that feature instead."""
    def open_feature(where, value):
        if where is None or pd.isna(where) or pd.isna(value) or int(value) < 0:
            return None
        return "Features", feature_params(where, int(value))

    def target(row: pd.Series):
        return open_feature(analysis or row.get(analysis_column), row[feature])

    def cell_target(row: pd.Series, column: str):
        return open_feature(others[column], row[column]) if column in others else None

    caption = "Click a row to open that feature's dashboard" + (
        f"; click an id in {', '.join(f'`{c}`' for c in others)} to open that SAE's feature." if others else ".")
    linked_table(frame, key, target, caption=caption, cell_target=cell_target if others else None, **kwargs)
