"""Circuits: attention patterns of a typed prompt (computed on submit), stored circuit analyses of a prompt set."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.ui import data
from app.ui.theme import missing, page, plot
from app.ui.workspace import COMMANDS, list_caches, workspace_root
from interp.figures.circuits import (edge_graph_figure, faithfulness_figure, feature_circuit_figure, head_edges_from_svd,
                                     head_scores_figure)

page("Circuits")
root = workspace_root()


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def model_for(spec: str):
    from interp.models import load_model

    return load_model(spec, device="cpu")


@st.cache_data(show_spinner=False, max_entries=32)
def prompt_attention(spec: str, prompt: str) -> tuple[list[str], list]:
    """Tokens and attention patterns ``[layer][head][q][k]`` of one short prompt (milliseconds on the demo model)."""
    from interp.attention import attention_patterns

    model = model_for(spec)
    tokens = model.to_tokens(prompt)[:, : model.cfg.n_ctx]
    pattern = attention_patterns(model, tokens)[:, 0]
    return [model.tokenizer.decode([t]) for t in tokens[0].tolist()], pattern.tolist()


def heat(frame: pd.DataFrame, index: str, columns: str, value: str, title: str) -> go.Figure:
    table = frame.pivot_table(index=index, columns=columns, values=value)
    fig = go.Figure(go.Heatmap(z=table.values, x=table.columns, y=table.index, colorscale="RdBu", zmid=0))
    return fig.update_layout(title=title, xaxis_title=columns, yaxis_title=index).update_yaxes(autorange="reversed")


st.subheader("Attention patterns of a prompt")
specs = sorted({c.model for c in list_caches(root)} | {"demo"})
with st.form("prompt_form"):
    spec = st.selectbox("Model", specs, key="model_spec")
    prompt = st.text_input("Prompt", "The cat sat on the mat. The cat sat on the", key="prompt")
    submitted = st.form_submit_button("Show attention")
if prompt.strip():
    try:
        tokens, patterns = prompt_attention(spec, prompt)
    except Exception as error:  # a model that does not load is the user's to fix, not a traceback
        st.error(f"Could not run model '{spec}': {error}")
    else:
        n_layers, n_heads = len(patterns), len(patterns[0])
        c1, c2 = st.columns(2)
        layer = c1.selectbox("Layer", list(range(n_layers)), key="layer")
        head = c2.selectbox("Head", list(range(n_heads)), key="head")
        labels = [f"{i}:{t!r}" for i, t in enumerate(tokens)]
        fig = go.Figure(go.Heatmap(z=patterns[layer][head], x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1))
        fig.update_layout(title=f"L{layer}H{head} attention ({len(tokens)} tokens)", height=480,
                          xaxis_title="key (attended to)", yaxis_title="query").update_yaxes(autorange="reversed")
        plot(fig, key="attention")

st.divider()
sets = sorted(p.parent.name for p in (root / "analyses" / "circuits").glob("*/summary.json"))
if not sets:
    missing("No stored circuit analyses yet.", COMMANDS["circuits"])
    st.stop()
name = st.selectbox("Stored prompt set", sets, key="prompt_set")
folder = root / "analyses" / "circuits" / name
summary = data.read_json(folder / "summary.json")
heads = summary.get("heads", {})
c1, c2, c3 = st.columns(3)
c1.metric("previous-token head", "L{}H{}".format(*heads["previous_token"]) if "previous_token" in heads else "–")
c2.metric("induction head", "L{}H{}".format(*heads["induction"]) if "induction" in heads else "–")
c3.metric("prompts", summary.get("n_prompts", "–"))

tabs = st.tabs(["Head scores", "SVD decomposition", "Communication graph", "Patching", "Feature circuit"])
with tabs[0]:
    plot(head_scores_figure(data.parquet(folder / "head_scores.parquet")), key="head_scores")
with tabs[1]:
    dims = data.parquet(folder / "signal_dimensionality.parquet")
    fig = go.Figure([go.Box(y=g["size"], name=f"L{l}H{h}") for (l, h), g in dims.groupby(["layer", "head"])])
    fig.update_layout(title="Signal dimensionality |S|: singular components of W_QK carrying each score",
                      yaxis_title="|S|")
    plot(fig, key="svd_dims")
    st.dataframe(data.parquet(folder / "svd_edges.parquet", order="abs(contribution) desc"), hide_index=True,
                 width="stretch", key="svd_edges")
with tabs[2]:
    side = st.radio("Side", ["key", "query", "value"], horizontal=True, key="side")
    edges = head_edges_from_svd(data.parquet(folder / "svd_edges.parquet"), side=side)
    if edges:
        plot(edge_graph_figure(edges), key="graph")
    else:
        st.info(f"No head-to-head edge carries ≥ 5% of the {side} signal.")
with tabs[3]:
    c1, c2 = st.columns(2)
    with c1:
        plot(heat(data.parquet(folder / "patch_residual.parquet"), "layer", "pos", "effect",
                  "Activation patching: residual stream"), key="patch_resid")
    with c2:
        plot(heat(data.parquet(folder / "patch_heads.parquet"), "layer", "head", "effect",
                  "Activation patching: heads"), key="patch_heads")
with tabs[4]:
    if (folder / "feature_circuit.json").exists():
        graph = data.read_json(folder / "feature_circuit.json")
        plot(feature_circuit_figure(graph), key="feature_circuit")
        if (folder / "feature_faithfulness.parquet").exists():
            plot(faithfulness_figure(data.parquet(folder / "feature_faithfulness.parquet")), key="feature_faithfulness")
        st.dataframe(data.parquet(folder / "feature_nodes.parquet", order="abs(effect) desc"), hide_index=True,
                     width="stretch", key="feature_nodes")
    else:
        missing("No SAE feature circuit for this prompt set.", COMMANDS["circuits"])
