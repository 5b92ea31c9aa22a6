"""Circuits: a typed prompt's attention (every head, the detected ones framed) and IO − S logit difference, computed
on submit; then one view at a time of a stored circuit analysis (its prompts, head scores, composition, DLA, logit
lens, patching, path patching, AtP agreement, SVD trace, feature circuit)."""

from __future__ import annotations

import streamlit as st

from app.ui import circuit_views, data
from app.ui.theme import missing, page, plot
from app.ui.workspace import COMMANDS, UnsafePathError, list_caches, model_spec, workspace_root
from interp.figures.circuits import attention_grid_figure, attention_pattern_figure
from interp.store.analysis_folder import AnalysisFolder, circuit_sets
from interp.store.errors import InputError  # CircuitInputError's base: opening the page imports no torch

page("Circuits")
root = workspace_root()


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def model_for(spec: str):
    from interp.models.loading import load_model

    return load_model(spec, device="cpu")


@st.cache_data(show_spinner=False, max_entries=32)
def prompt_attention(spec: str, prompt: str) -> tuple[list[str], list, list[tuple[str, float]], str]:
    """Tokens, attention patterns ``[layer][head][q][k]``, the top next tokens of one prompt and the model's name
    (milliseconds on the demo model). A prompt longer than the context is refused, not cut."""
    from interp.circuits.attention import prompt_tokens, top_next_tokens

    model = model_for(spec)
    tokens = prompt_tokens(model, prompt)
    pattern, top = top_next_tokens(model, tokens)
    return ([model.tokenizer.decode([t]) for t in tokens[0].tolist()], pattern[:, 0].tolist(), top,
            model.cfg.model_name)


@st.cache_data(show_spinner="Finding the model's previous-token and induction heads…", max_entries=4)
def live_heads(spec: str) -> dict[str, list[int]]:
    """The model's top previous-token and induction heads on repeated random tokens (as the stored analyses)."""
    from interp.circuits.attention import detected_heads, head_scores_on_repeated_tokens

    model = model_for(spec)
    return detected_heads(head_scores_on_repeated_tokens(model, 16, min(20, (model.cfg.n_ctx - 1) // 2)))


@st.cache_data(show_spinner=False, max_entries=32)
def typed_ioi(spec: str, prompt: str) -> dict | str:
    """``ioi_logit_diff`` of a typed prompt, or the one-line reason it has none."""
    from interp.circuits.prompts import ioi_logit_diff

    try:
        return ioi_logit_diff(model_for(spec), prompt)
    except InputError as error:
        return str(error)


def marked_heads(spec: str, model_name: str) -> dict[tuple[int, int], str]:
    """The heads to frame in the grid: this model's previous-token and induction heads, and the roles the stored
    analyses of the same model found (name movers, the repeated-name signal)."""
    live = live_heads(spec)
    marked = {tuple(live[role]): ROLE_NAMES[role] for role in ("induction", "previous_token")}  # induction first
    for name in circuit_sets(root / "analyses"):
        summary = data.read_json(AnalysisFolder.circuits(root / "analyses", name).summary_path)
        if summary.get("model") == model_name:
            for role, head in summary.get("heads", {}).items():
                marked.setdefault(tuple(head), ROLE_NAMES.get(role, role))
    return marked


def share(p: float) -> str:
    """A probability as a percentage, small ones in scientific notation (never a bare 0.0 %)."""
    return f"{p:.1%}" if p >= 0.001 else f"{p:.1e}"


ROLE_NAMES = {
    "previous_token": "previous-token head",
    "induction": "induction head",
    "name_mover": "name mover",
    "s_signal": "repeated-name signal",
}
EXAMPLE_PROMPTS = {
    "Induction: a repeated line": "Now is the winter of our discontent made glorious summer by this sun of York. "
    "Now is the winter of our discontent made glorious summer by this sun of",
    "IOI: who gets the ring?": "When Romeo and Juliet went to the court, Romeo gave a ring to",
    "IOI: a template the demo model never trained on":
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
        tokens, patterns, top, model_name = prompt_attention(allowed, shown[1])
    except UnsafePathError as error:
        st.error(f"Refused: {error}")
    except InputError as error:
        st.error(str(error))
    except Exception as error:  # a model that does not load is the user's to fix, not a traceback
        st.error(f"Could not run model '{shown[0]}': {error}")
    else:
        ioi = typed_ioi(allowed, shown[1])
        if isinstance(ioi, dict):
            st.markdown(
                f"**IO − S logit difference** after the last token: logit(' {ioi['io']}') − logit(' {ioi['s']}') = "
                f"**{ioi['logit_diff']:+.2f}** (p(IO) {share(ioi['p_io'])}, p(S) {share(ioi['p_s'])}; IO: the name "
                "that occurs once, S: the repeated subject)"
            )
        else:
            st.caption(f"No IO − S logit difference: {ioi}")
        marked = marked_heads(allowed, model_name)
        st.caption("Most likely next tokens: " + ", ".join(f"`{t!r}` {p:.0%}" for t, p in top))
        plot(attention_grid_figure(patterns, tokens, marked), key="attention_grid")
        st.caption("Rows: layers, columns: heads; in each panel the rows are queries and the columns the keys they "
                   "attend to (hover for the tokens). Framed in red: " + (", ".join(
                       f"L{l}H{h} {role}" for (l, h), role in marked.items()) or "no head detected")
                   + " (found on repeated random tokens and by the stored analyses of this model).")
        n_layers, n_heads = len(patterns), len(patterns[0])
        options = [(l, h) for l in range(n_layers) for h in range(n_heads)]
        first = next(iter(marked), (n_layers - 1, 0))  # the induction head
        layer, head = st.selectbox(
            "Head in detail", options, index=options.index(first) if first in options else 0, key="head",
            format_func=lambda lh: f"L{lh[0]}H{lh[1]}" + (f" · {marked[lh]}" if lh in marked else ""),
        )
        plot(attention_pattern_figure(patterns[layer][head], tokens, layer, head), key="attention")

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

views = [*circuit_views.VIEWS, "Feature circuit"]
linked_view = st.query_params.get("view")
if linked_view in views and linked_view != st.session_state.get("_linked_view"):  # ?view=… sets the choice once
    st.session_state["_linked_view"] = st.session_state["view"] = linked_view
view = st.radio("Show", views, horizontal=True, key="view", label_visibility="collapsed")
st.query_params["view"] = view
circuit_views.show(view, root, folder, summary)
