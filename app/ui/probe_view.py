"""The Probe page's clickable parts: the token strip (one small button per token, coloured by a feature's
activation; the clicked token's index goes in the URL as ``?token=``) and feature tables whose cells open a
dashboard in the same tab (a member's matched feature opens that member's)."""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
import streamlit as st

from app.ui.links import feature_params, open_page

STRIP_TOKENS = 256  # tokens drawn as buttons at once; a longer text is shown a part at a time
VISIBLE = {"\n": "↵", "\t": "⇥", " ": "\u00a0"}
ESCAPED = set(string.punctuation)  # Streamlit renders a button's label as Markdown
STRIP_CSS = (".st-key-{key} button{{min-height:0;padding:1px 2px;margin:0;border-radius:3px;border:1px solid "
             "#e3e3e3;background:#fff;color:#111;line-height:1.35}}.st-key-{key} button p{{font-family:ui-monospace,"
             "Menlo,Consolas,monospace;font-size:14px;white-space:pre}}.st-key-{key} button:hover{{border-color:#111}}")


def token_label(token: str) -> str:
    """A token as a button label: whitespace made visible, Markdown's punctuation escaped; never empty."""
    text = "".join(VISIBLE.get(c, "\\" + c if c in ESCAPED else c) for c in token)
    return text or "∅"


def strip_parts(n_tokens: int, size: int = STRIP_TOKENS) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``size`` tokens covering ``n_tokens``."""
    return [(start, min(start + size, n_tokens)) for start in range(0, n_tokens, size)]


def strip_css(key: str, alphas: np.ndarray, start: int, selected: int | None) -> str:
    """The strip's style: each button's background orange with opacity ``alphas[i - start]``, the selected one
    outlined (``!important``: Streamlit's ``:focus`` rule removes the outline of the button just clicked)."""
    rules = [STRIP_CSS.format(key=key)]
    rules += [f".st-key-tok_{start + i} button{{background:rgba(255,120,0,{a:.2f})}}"
              for i, a in enumerate(alphas) if a >= 0.01]
    if selected is not None:
        rules.append(f".st-key-tok_{selected} button" + "{outline:2px solid #1f77b4 !important;outline-offset:1px}")
    return "<style>" + "".join(rules) + "</style>"


def _choose(state_key: str, position: int) -> None:
    st.session_state[state_key] = position


def token_strip(tokens: list[str], acts: np.ndarray, scale: float, selected: int | None, state_key: str,
                key: str = "strip") -> None:
    """The tokens of ``[start, stop)`` (the part holding ``selected``; a chooser when there are several) as
    buttons; a click stores its position in ``st.session_state[state_key]``."""
    parts = strip_parts(len(tokens))
    part = 0
    if len(parts) > 1:
        here = next((i for i, (a, b) in enumerate(parts) if selected is not None and a <= selected < b), 0)
        part = st.selectbox(f"The text has {len(tokens):,} tokens; clickable part", range(len(parts)), index=here,
                            format_func=lambda i: f"tokens {parts[i][0]} to {parts[i][1] - 1}", key=f"{key}_part")
    start, stop = parts[part]
    alphas = np.clip(np.asarray(acts[start:stop], dtype=np.float64) / scale, 0, 1) if scale > 0 else \
        np.zeros(stop - start)
    st.html(strip_css(key, alphas, start, selected))
    with st.container(horizontal=True, gap="xxsmall", key=key):
        for i in range(start, stop):
            st.button(token_label(tokens[i]), key=f"tok_{i}", help=f"token {i} {tokens[i]!r}: {float(acts[i]):.3f}",
                      on_click=_choose, args=(state_key, i))


def with_member_matches(frame: pd.DataFrame, matches: pd.DataFrame, codes: dict, position: int) -> pd.DataFrame:
    """``frame`` (a ``feature`` column) with, per member in ``codes`` other than its own, the stored matched
    feature (``<member> match``, -1: none), its cosine and its activation on token ``position``."""
    out = frame.copy()
    for member, rows in matches.groupby("other_analysis", sort=True) if not matches.empty else []:
        if member not in codes:
            continue
        by_feature = rows.set_index("feature")
        other = by_feature.other_feature.reindex(out.feature).fillna(-1).astype(int).to_numpy()
        short = member.split("/")[-1]
        out[f"{short} match"] = other
        out[f"{short} cos"] = by_feature.cosine.reindex(out.feature).to_numpy()
        row = codes[member][position].toarray().ravel() if position is not None else None
        if row is not None:
            out[f"{short} act"] = np.where(other >= 0, row[np.maximum(other, 0)], np.nan)
    return out


def member_columns(frame: pd.DataFrame, matches: pd.DataFrame) -> dict[str, str]:
    """Which column of ``frame`` holds which member's feature ids (``<member> match`` -> analysis id)."""
    return {f"{m.split('/')[-1]} match": m for m in matches.other_analysis.unique()
            if f"{m.split('/')[-1]} match" in frame.columns} if not matches.empty else {}


def column_formats(frame: pd.DataFrame) -> dict:
    """Compact number formats for a probe table's columns (ids plain, shares in percent, values to 3 places)."""
    formats = {}
    for column in frame.columns:
        if column == "feature" or column.endswith(" match"):
            formats[column] = st.column_config.NumberColumn(format="%d")
        elif column == "share":
            formats[column] = st.column_config.NumberColumn(format="percent")
        elif column == "logit_effect":
            formats[column] = st.column_config.NumberColumn(format="%+.3f")
        elif pd.api.types.is_float_dtype(frame[column]):
            formats[column] = st.column_config.NumberColumn(format="%.3f")
    return formats


def feature_cells(frame: pd.DataFrame, key: str, analysis: str, members: dict[str, str] | None = None,
                  caption: bool = True, **kwargs) -> None:
    """A table of features whose cell click opens a dashboard in this tab: a member's match column opens that
    member's feature, any other cell the row's ``feature`` of ``analysis``."""
    members = members or {}
    if caption and not frame.empty:
        st.caption("Click a feature id to open its dashboard" + (", a member's match to open that member's."
                                                                 if members else "."))
    event = st.dataframe(frame, key=key, on_select="rerun", selection_mode="single-cell", hide_index=True,
                         width="stretch", column_config=column_formats(frame), **kwargs)
    cells = event.selection.cells if event is not None else []
    if not cells or not 0 <= cells[0][0] < len(frame):
        return
    row, column = cells[0]
    where, value = (members[column], frame[column].iloc[row]) if column in members else \
        (analysis, frame["feature"].iloc[row])
    if pd.isna(value) or int(value) < 0:
        return
    del st.session_state[key]  # the selection is spent: coming back, the table starts with none
    open_page("Features", feature_params(where, int(value)))
