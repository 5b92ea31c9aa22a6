"""One look for every page: a plotly template, the page config, and errors with guidance."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

COLORWAY = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
TEMPLATE = "workbench"
PLOT_CONFIG = {"displaylogo": False}
# Streamlit's wide layout keeps 5rem side and 6rem top padding: at 1280x800 with the sidebar open that
# leaves ~810 px for content and pushes the first chart below the fold. Trim it.
COMPACT_CSS = ("<style>[data-testid='stMainBlockContainer']{padding:2.5rem 2rem 3rem 2rem;max-width:none}"
               "h1{padding-top:0.25rem}</style>")


def _register() -> None:
    if TEMPLATE not in pio.templates:
        base = pio.templates["plotly_white"]
        pio.templates[TEMPLATE] = go.layout.Template(base).update(layout=dict(
            colorway=COLORWAY, font=dict(family="Inter, Segoe UI, sans-serif", size=13),
            margin=dict(l=50, r=45, t=50, b=45), height=360,  # r: a gutter for the vertical toolbar
            coloraxis=dict(colorscale="Viridis"), title=dict(x=0.02, font=dict(size=15)),
            modebar=dict(orientation="v"),  # a vertical toolbar never covers the title
            legend=dict(orientation="h", y=-0.25)))  # below the plot: a right-hand legend sits under the toolbar
    pio.templates.default = TEMPLATE


def page(title: str, icon: str = "🔬") -> None:
    """Page config and title; every page calls it first."""
    st.set_page_config(page_title=f"{title} · workbench", page_icon=icon, layout="wide")
    _register()
    st.html(COMPACT_CSS)
    st.title(title)


def plot(fig: go.Figure, key: str | None = None, **kwargs):
    """Render a figure in the workbench theme (figures from ``interp.figures`` included)."""
    fig.update_layout(template=TEMPLATE)
    return st.plotly_chart(fig, width="stretch", key=key, theme=None, config=PLOT_CONFIG, **kwargs)


def missing(what: str, command: str) -> None:
    """Say that a result does not exist yet and give the exact command that makes it."""
    st.error(f"{what} Make it with:")
    st.code(command, language="bash")


def refuse(error: Exception) -> None:
    st.error(f"{error}")
