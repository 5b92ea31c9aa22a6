"""The app's plotly template: legends default to below the plot, where the vertical toolbar cannot cover them."""

from __future__ import annotations

import plotly.graph_objects as go

from app.ui import theme


def test_a_figure_without_its_own_legend_layout_gets_it_below_the_plot():
    theme._register()
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], name="lobe 0"))
    fig.update_layout(template=theme.TEMPLATE, legend=dict(title="cluster"))  # as the geometry map sets it
    legend = fig.layout.template.layout.legend
    assert legend.orientation == "h" and legend.y < 0
    assert fig.layout.legend.title.text == "cluster" and fig.layout.legend.orientation is None  # the template's
