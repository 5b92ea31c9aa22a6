"""Circuits: attention patterns of a typed prompt (computed on submit), stored circuit analyses of a prompt set."""

from __future__ import annotations

import streamlit as st

from app.ui import data
from app.ui import feature_circuit as feature_circuit_tab
from app.ui.theme import missing, page, plot
from app.ui.workspace import COMMANDS, UnsafePathError, list_caches, model_spec, workspace_root
from interp.circuits.attention import CircuitInputError
from interp.figures.circuits import (
    attention_pattern_figure,
    dimensionality_box_figure,
    edge_graph_figure,
    head_edges_from_svd,
    head_scores_figure,
    patching_table_figure,
)
from interp.store.analysis_folder import AnalysisFolder, circuit_sets

page("Circuits")
root = workspace_root()


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def model_for(spec: str):
    from interp.models.loading import load_model

    return load_model(spec, device="cpu")


@st.cache_data(show_spinner=False, max_entries=32)
def prompt_attention(spec: str, prompt: str) -> tuple[list[str], list, list[tuple[str, float]]]:
    """Tokens, attention patterns ``[layer][head][q][k]`` and the top next tokens of one prompt
    (milliseconds on the demo model). A prompt longer than the context is refused, not cut."""
    from interp.circuits.attention import prompt_tokens, top_next_tokens

    model = model_for(spec)
    tokens = prompt_tokens(model, prompt)
    pattern, top = top_next_tokens(model, tokens)
    return [model.tokenizer.decode([t]) for t in tokens[0].tolist()], pattern[:, 0].tolist(), top


EXAMPLE_PROMPTS = {
    "Induction: a repeated line": "Now is the winter of our discontent made glorious summer by this sun of York. "
    "Now is the winter of our discontent made glorious summer by this sun of",
    "IOI: who gets the ring?": "When Romeo and Juliet went to the court, Romeo gave a ring to",
    "IOI: a held-out template (the demo model does not solve these)":
        "Once Hero and Paris had reached the palace, Paris offered a letter to",
    "Induction: repeated common words":
        "The cat sat on the mat and the dog ran to the door. The cat sat on the mat and the dog ran to the",
}

st.subheader("Attention patterns of a prompt")
specs = sorted({c.model for c in list_caches(root) if c.usable} | {"demo"})
st.session_state.setdefault("prompt", next(iter(EXAMPLE_PROMPTS.values())))
st.selectbox(
    "Example prompt",
    list(EXAMPLE_PROMPTS),
    key="example",
    on_change=lambda: st.session_state.update(prompt=EXAMPLE_PROMPTS[st.session_state["example"]]),
)
with st.form("prompt_form"):
    spec = st.selectbox("Model", specs, key="model_spec")
    prompt = st.text_input("Prompt", key="prompt")
    submitted = st.form_submit_button("Show attention")
if submitted:  # a model is loaded on this click only, never when the page opens
    st.session_state["shown"] = (spec, prompt)
shown = st.session_state.get("shown")
if shown and not shown[1].strip():
    st.warning("Type a prompt to see its attention patterns.")
elif shown:
    try:
        allowed = model_spec(root, shown[0])  # named by a workspace file: demo, a pretrained name, a folder inside
        tokens, patterns, top = prompt_attention(allowed, shown[1])
    except UnsafePathError as error:
        st.error(f"Refused: {error}")
    except CircuitInputError as error:
        st.error(str(error))
    except Exception as error:  # a model that does not load is the user's to fix, not a traceback
        st.error(f"Could not run model '{shown[0]}': {error}")
    else:
        n_layers, n_heads = len(patterns), len(patterns[0])
        c1, c2 = st.columns(2)
        layer = c1.selectbox("Layer", list(range(n_layers)), index=n_layers - 1, key="layer")
        head = c2.selectbox("Head", list(range(n_heads)), key="head")
        plot(attention_pattern_figure(patterns[layer][head], tokens, layer, head), key="attention")
        st.caption("Most likely next tokens: " + ", ".join(f"`{t!r}` {p:.0%}" for t, p in top))

st.divider()
sets = circuit_sets(root / "analyses")
if not sets:
    missing("No stored circuit analyses yet.", COMMANDS["circuits"])
    st.stop()
linked = st.query_params.get("prompt_set")
if linked in sets and linked != st.session_state.get("_linked_set"):  # a link (?prompt_set=…) sets the box once
    st.session_state["_linked_set"] = st.session_state["prompt_set"] = linked
name = st.selectbox("Stored prompt set", sets, key="prompt_set")
st.query_params["prompt_set"] = name
folder = AnalysisFolder.circuits(root / "analyses", name)
summary = data.read_json(folder.summary_path)
heads = summary.get("heads", {})
ROLE_NAMES = {
    "previous_token": "previous-token head",
    "induction": "induction head",
    "name_mover": "name mover",
    "s_signal": "repeated-name signal",
}
columns = st.columns(len(heads) + 2)
for column, (role, (layer, head)) in zip(columns, heads.items()):
    column.metric(ROLE_NAMES.get(role, role), f"L{layer}H{head}")
columns[len(heads)].metric("prompts", summary.get("n_prompts", "–"))
if "ioi" in summary:
    columns[-1].metric(
        "IO − S logit diff",
        f"{summary['ioi']['logit_diff']:.2f}",
        help=f"accuracy {summary['ioi']['accuracy']:.0%} (logit IO > logit S)",
    )
if folder.has("ioi_heads"):
    with st.expander("IOI head roles (per head)"):
        st.dataframe(data.parquet(folder.table_path("ioi_heads")), hide_index=True, width="stretch", key="ioi_heads")

tabs = st.tabs(["Head scores", "SVD decomposition", "Communication graph", "Patching", "Feature circuit"])
with tabs[0]:
    plot(head_scores_figure(data.parquet(folder.table_path("head_scores"))), key="head_scores")
with tabs[1]:
    plot(dimensionality_box_figure(data.parquet(folder.table_path("signal_dimensionality"))), key="svd_dims")
    st.dataframe(
        data.parquet(folder.table_path("svd_edges"), order="abs(contribution) desc"),
        hide_index=True,
        width="stretch",
        key="svd_edges",
    )
with tabs[2]:
    side = st.radio("Side", ["key", "query", "value"], horizontal=True, key="side")
    edges = head_edges_from_svd(data.parquet(folder.table_path("svd_edges")), side=side)
    if edges:
        plot(edge_graph_figure(edges), key="graph")
    else:
        st.info(f"No head-to-head edge carries ≥ 5% of the {side} signal.")
with tabs[3]:
    metric_text = feature_circuit_tab.METRICS.get(summary.get("prompt_set", ""), "the prompt set's metric")
    st.caption(
        f"**effect** = {metric_text} on the clean prompts with that one activation taken from the corrupted "
        "prompts, minus its clean value: a large negative effect marks an activation the task runs through."
    )
    c1, c2 = st.columns(2)
    with c1:
        plot(
            patching_table_figure(
                data.parquet(folder.table_path("patch_residual")),
                "pos",
                "Activation patching: residual stream before each layer",
            ).update_layout(xaxis_title="position in the prompt"),
            key="patch_resid",
        )
    with c2:
        plot(
            patching_table_figure(data.parquet(folder.table_path("patch_heads")), "head", "Activation patching: heads"),
            key="patch_heads",
        )
with tabs[4]:
    if folder.has_json("feature_circuit"):
        feature_circuit_tab.show(root, folder, summary)
    else:
        missing("No SAE feature circuit for this prompt set.", COMMANDS["circuits"])
