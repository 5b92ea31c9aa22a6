"""Probe: type a text and see which features fire on each token; steer, clamp or ablate a feature and compare
the model's continuation with the default one from the same seed. The model runs only on a click."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.ui import data
from app.ui.dashboard import choose_analysis
from app.ui.links import feature_params, page_link
from app.ui.live import probed, site_of, steered
from app.ui.probe_view import feature_cells, member_columns, token_strip, with_member_matches
from app.ui.theme import missing, page, plot
from app.ui.workspace import COMMANDS, UnsafePathError, list_runs, workspace_root
from interp.figures.probe import METRICS, activation_along_text, dose_response_figure, kl_along_text, logit_change_bars
from interp.store.analysis_folder import AnalysisFolder
from interp.store.errors import InputError

EXAMPLE = "Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds"
MATCHED = ["feature", "other_analysis", "other_feature", "cosine"]  # of the stored matching, what is shown
FAILURES = (InputError, UnsafePathError, FileNotFoundError)  # bad input or a workspace it cannot use: a note

page("Probe")
root = workspace_root()
params = st.query_params
folder = choose_analysis(root, "probe_analysis", default=params.get("analysis"))
if folder is None:
    if not st.session_state.get("probe_analysis_typed", "").strip():
        runs = list_runs(root)
        missing("No analysed SAE in this workspace yet.",
                COMMANDS["features"].format(run_id=runs[0].run_id if runs else "demo-mfr"))
    st.stop()
try:
    site = site_of(root, folder)
except FAILURES as error:
    st.error(f"Cannot run this SAE: {error}")
    st.stop()
d_sae = data.n_features(folder)
analysis_key = AnalysisFolder(folder).id
st.caption(f"SAE `{site.sae.relative_to(root)}` at `{site.hook}` of model `{site.spec}`; nothing runs until you click.")

with st.form("probe_form"):
    text = st.text_area("Your text", EXAMPLE, height=100, key="probe_text")
    submitted = st.form_submit_button("Probe")
if submitted:  # the model is loaded on this click only, never when the page opens
    st.session_state["probed_text"] = text
result = None
if "probed_text" in st.session_state:
    try:
        result, own = probed(str(root), str(folder), st.session_state["probed_text"])
    except FAILURES as error:
        st.error(str(error))
    for note in result.notes if result is not None else []:
        st.info(note)

if result is not None:
    # torch comes with this import: only after a probe ran (the model is loaded by then), never before the title
    from interp.features.probe import specific_features

    codes = result.codes[own]
    start = params.get("feature")
    if start is not None and not (str(start).isdigit() and int(start) < d_sae):
        st.warning(f"Feature {start} of the link is not one of this SAE's {d_sae} features (0 to {d_sae - 1}); "
                   "showing the text's most active feature.")
    default = int(start) if str(start).isdigit() and int(start) < d_sae else int(codes.max(0).toarray().argmax())
    feature = int(st.number_input(f"Colour the tokens by feature (0 to {d_sae - 1})", 0, d_sae - 1, default,
                                  key="colour_feature"))
    acts = result.feature(own, feature)
    n_tokens = len(result.tokens)
    linked = params.get("token")
    if linked is not None and linked != st.session_state.get("_linked_token"):  # a link (?token=…) sets it once
        st.session_state["_linked_token"] = linked
        if str(linked).isdigit() and int(linked) < n_tokens:
            st.session_state["probe_token"] = int(linked)
        else:
            st.warning(f"Token {linked} of the link is not one of the text's {n_tokens} tokens (0 to "
                       f"{n_tokens - 1}); showing the token where the feature peaks.")
    position = st.session_state.get("probe_token")
    if position is None or not 0 <= position < n_tokens:
        position = int(acts.argmax())
    st.markdown(f"**Tokens coloured by feature {feature}** (darker: stronger; up to {float(acts.max()):.3g}). "
                "Click a token to list its features.")
    token_strip(result.tokens, acts, float(acts.max()), position, "probe_token")
    st.query_params["token"] = str(position)  # the address holds the clicked token: bookmark, share
    st.session_state["_linked_token"] = str(position)
    matches = data.parquet(AnalysisFolder(folder).table_path("matches"), columns=", ".join(MATCHED)) \
        if AnalysisFolder(folder).has("matches") else pd.DataFrame(columns=MATCHED)  # a one-SAE run: none
    matches = matches[matches.other_analysis.isin(list(result.codes))]  # the members of the run, probed with it
    others = {}
    for match in matches[matches.feature == feature].itertuples():  # each member of the run, probed with it
        if match.other_feature >= 0:
            others[f"{match.other_analysis} #{match.other_feature} (cos {match.cosine:.2f})"] = result.feature(
                match.other_analysis, int(match.other_feature))
    plot(activation_along_text(result.tokens, acts, feature, others), key="along")
    page_link("Features", feature_params(analysis_key, feature), f"Open feature {feature}'s dashboard",
              icon=":material/open_in_new:")

    with st.expander("Features most specific to this text (mean activation here over the corpus mean)"):
        stored = data.parquet(AnalysisFolder(folder).table_path("features"), columns="feature, mean_activation, "
                              "frequency", order="feature")
        corpus_mean = (stored.mean_activation * stored.frequency).to_numpy()
        specific = with_member_matches(specific_features(result, own, corpus_mean, 20), matches, result.codes, None)
        feature_cells(specific, "specific", analysis_key, member_columns(specific, matches))

    nxt = result.next_ids[position]
    st.subheader(f"Features of token {position}: `{result.tokens[position]!r}`")
    columns = ["feature", "label", "activation", "share", "logit_effect"]
    tables = {by: with_member_matches(result.token_features(own, position, by, 20)[columns], matches, result.codes,
                                      position) for by in ("activation", "logit_effect")}
    st.caption("Click a feature id to open its dashboard" + (", a member's match to open that member's."
                                                             if member_columns(tables["activation"], matches) else "."))
    st.markdown("**By activation**")
    feature_cells(tables["activation"], "by_activation", analysis_key, member_columns(tables["activation"], matches),
                  caption=False)
    st.markdown(f"**By direct effect on the next token's logit** (next: `{result.tokens[position + 1]!r}`)"
                if position + 1 < len(result.tokens) else f"**By direct effect on the logit of the model's "
                f"prediction** (token id {nxt})")
    feature_cells(tables["logit_effect"], "by_effect", analysis_key, member_columns(tables["logit_effect"], matches),
                  caption=False)

st.divider()
st.subheader("Steer, clamp or ablate a feature")
with st.form("steer_form"):
    c1, c2, c3 = st.columns(3)
    method = c1.radio("Method", ["add", "clamp", "ablate"], horizontal=True, key="method",
                      help="add: x + c·d_i; clamp: set the feature to v, keeping the SAE's error; ablate: clamp to 0")
    start = params.get("feature")
    steer_feature = int(c2.number_input(f"Feature (0 to {d_sae - 1})", 0, d_sae - 1,
                                        int(start) if str(start).isdigit() and int(start) < d_sae else 0,
                                        key="steer_feature"))
    value = float(c3.slider("Coefficient c (add) or value v (clamp)", -50.0, 50.0, 8.0, 0.5, key="coefficient"))
    prompt = st.text_input("Prompt", "To be, or not to be, that is the", key="steer_prompt")
    c4, c5, c6 = st.columns(3)
    n_tokens = int(c4.slider("Tokens to generate", 1, 64, 24, key="n_tokens"))
    temperature = float(c5.slider("Temperature", 0.0, 2.0, 1.0, 0.1, key="temperature"))
    seed = int(c6.number_input("Seed", 0, 2**31 - 1, 0, key="seed"))
    steer_now = st.form_submit_button("Steer")
if steer_now:
    st.session_state["steer_args"] = (steer_feature, method, value, prompt, n_tokens, temperature, seed)
if "steer_args" in st.session_state:
    f, m, v, p, n, t, s = st.session_state["steer_args"]
    sweep = tuple(float(x) for x in np.linspace(0.0, 2 * v if v else 16.0, 9))
    try:
        out, curve, kl_tokens = steered(str(root), str(folder), f, m, v, p, n, t, s, sweep)
    except FAILURES as error:
        st.error(str(error))
    else:
        left, right = st.columns(2)
        left.markdown("**Default**")
        left.code(p + out.default_text, language=None, wrap_lines=True)
        right.markdown(f"**{m} feature {f}" + (f" ({v:g})**" if m != "ablate" else "**"))
        right.code(p + out.steered_text, language=None, wrap_lines=True)
        left, right = st.columns(2)
        with left:
            plot(logit_change_bars(out.logit_changes), key="logit_changes")
        with right:
            plot(kl_along_text(out.kl, kl_tokens, len(out.prompt_ids)), key="kl")
            if curve is not None:
                metric = st.selectbox("Dose-response metric", list(METRICS), format_func=METRICS.get, key="metric")
                plot(dose_response_figure(curve, metric), key="dose_response")
        st.dataframe(out.logit_changes, hide_index=True, width="stretch", key="changes_table")
