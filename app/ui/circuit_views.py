"""The Circuits page's views of one stored circuit analysis (``analyses/circuits/<set>/``): its prompts, head
scores, composition, DLA, logit lens, patching, path patching, AtP agreement, SVD trace and feature circuit.

The page draws one view at a time (``VIEWS``), so opening it reads and plots only what that view needs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.ui import data
from app.ui import feature_circuit as feature_circuit_tab
from app.ui.theme import missing, plot
from app.ui.workspace import COMMANDS
from interp.figures.circuits import (
    atp_agreement_figure,
    atp_scatter_figure,
    composition_table_figure,
    dimensionality_box_figure,
    dla_positions_figure,
    edge_graph_figure,
    head_edges_from_svd,
    head_scores_figure,
    logit_lens_table_figure,
    patching_table_figure,
    path_patching_figure,
)
from interp.store.analysis_folder import AnalysisFolder

UNITS = {"induction": "nats", "ioi": "logits"}  # the unit of each prompt set's metric
PROMPT_SETS = {
    "induction": "a random token span, then the same span again (clean); the corrupt prompt replaces the first copy "
                 "by other random tokens, so nothing earlier predicts the second copy",
    "ioi": "IOI sentences (clean); the corrupt prompt (ABC) replaces the repeated subject by a third name, so no "
           "name is left to answer with",
}


def unit(summary: dict) -> str:
    return UNITS.get(summary.get("prompt_set", ""), "metric units")


def stored_prompts(folder: AnalysisFolder) -> pd.DataFrame | None:
    """The stored prompts as ``prompt, clean, corrupt`` (+ token columns when stored); None when the analysis
    predates ``prompts.parquet``. An older IOI table's ``text, corrupt_text`` are read as clean, corrupt."""
    if not folder.has("prompts"):
        return None
    frame = data.parquet(folder.table_path("prompts"))
    frame = frame.rename(columns={"text": "clean", "corrupt_text": "corrupt"})
    if "prompt" not in frame:
        frame.insert(0, "prompt", range(len(frame)))
    return frame


def first_tokens(folder: AnalysisFolder) -> list[str] | None:
    """The first clean prompt's tokens (what position axes are labelled with), None when not stored."""
    frame = stored_prompts(folder)
    if frame is None or "clean_tokens" not in frame or frame.empty:
        return None
    return [str(t) for t in frame.clean_tokens.iloc[0]]


def show_prompts(folder: AnalysisFolder, summary: dict) -> None:
    frame = stored_prompts(folder)
    kind = summary.get("prompt_set", "")
    st.caption(f"**{summary.get('n_prompts', '?')} prompt pairs** of {summary.get('n_positions', '?')} tokens: "
               + PROMPT_SETS.get(kind, "clean prompts and their corrupt counterparts")
               + f". Metric: {feature_circuit_tab.METRICS.get(kind, 'the prompt set metric')} ({unit(summary)}).")
    if frame is None:
        missing("This analysis was stored before the prompts were; rerun it to store them.", COMMANDS["circuits"])
        return
    shown = frame[["prompt", "clean", "corrupt"]].copy()
    if {"clean_tokens", "corrupt_tokens"} <= set(frame.columns):
        shown["differs at positions"] = [
            ", ".join(str(i) for i, (a, b) in enumerate(zip(c, k)) if a != b)
            for c, k in zip(frame.clean_tokens, frame.corrupt_tokens)
        ]
    st.dataframe(shown, hide_index=True, width="stretch", key="prompts")


def show_head_scores(folder: AnalysisFolder, summary: dict) -> None:
    plot(head_scores_figure(data.parquet(folder.table_path("head_scores"))), key="head_scores")
    st.caption("Scores on repeated random tokens (not on this prompt set): **previous_token** = mean attention to "
               "the position before, **induction** = to the token after the earlier copy of the current token, "
               "**duplicate_token** = to the earlier copy itself.")
    if folder.has("ioi_heads"):
        st.markdown("**IOI head roles** (per head, on the IOI prompts)")
        st.dataframe(data.parquet(folder.table_path("ioi_heads")), hide_index=True, width="stretch", key="ioi_heads")


def show_composition(folder: AnalysisFolder, summary: dict) -> None:
    plot(composition_table_figure(data.parquet(folder.table_path("composition")), summary.get("composition_baseline")),
         key="composition")
    st.caption("How much head B's query (Q), key (K) or value (V) input reads what head A writes, from the weights "
               "alone; the chance level is the mean score of random matrices of the same shapes.")


def show_dla(folder: AnalysisFolder, summary: dict) -> None:
    plot(dla_positions_figure(data.parquet(folder.table_path("dla")), first_tokens(folder)), key="dla")
    st.caption("Each head's direct contribution to the logit of the next token of the prompt (its output through "
               "the unembedding, final layer norm frozen), mean over the prompts; the last position has no next "
               "token and is left out.")


def show_logit_lens(folder: AnalysisFolder, summary: dict) -> None:
    plot(logit_lens_table_figure(data.parquet(folder.table_path("logit_lens")), first_tokens(folder)), key="logit_lens")
    st.caption("The log-probability of the next token when the residual stream before each layer is read out "
               "through the final layer norm and the unembedding, mean over the prompts.")


def effect_caption(summary: dict) -> str:
    metric = feature_circuit_tab.METRICS.get(summary.get("prompt_set", ""), "the prompt set's metric")
    return (f"**effect** = {metric} on the clean prompts with that one activation taken from the corrupt prompts, "
            f"minus its clean value ({unit(summary)}): a large negative effect marks an activation the task runs "
            "through.")


def show_patching(folder: AnalysisFolder, summary: dict) -> None:
    st.caption(effect_caption(summary))
    plot(patching_table_figure(data.parquet(folder.table_path("patch_residual")), "pos",
                               "Activation patching: residual stream before each layer", tokens=first_tokens(folder),
                               unit=unit(summary)).update_layout(height=420), key="patch_resid")
    plot(patching_table_figure(data.parquet(folder.table_path("patch_heads")), "head", "Activation patching: heads",
                               unit=unit(summary)), key="patch_heads")


def show_path_patching(folder: AnalysisFolder, summary: dict) -> None:
    plot(path_patching_figure(data.parquet(folder.table_path("path_patch")), unit(summary)), key="path_patch")
    st.caption(effect_caption(summary).replace("that one activation", "sender A's output reaching receiver B "
                                               "only through B's query, key or value input")
               + " Every other path stays clean.")


def show_atp(folder: AnalysisFolder, summary: dict) -> None:
    plot(atp_agreement_figure(data.parquet(folder.table_path("atp_agreement"))), key="atp_agreement")
    st.caption("Attribution patching (AtP) estimates every patching effect from one forward and backward pass; "
               "the bars are each estimate's Pearson correlation with exact head patching, with the heads moved a "
               "tenth of the way (0.1) or all the way (1) to their corrupt outputs. GradDrop is compared on "
               "|effect|.")
    plot(atp_scatter_figure(data.parquet(folder.table_path("patch_heads")),
                            data.parquet(folder.table_path("attribution_heads")), unit(summary)), key="atp_scatter")
    agreement = summary.get("rank_agreement", {})
    if agreement.get("top_edge"):
        st.markdown("**Head-to-head edges by three methods** (composition, path patching through the key, SVD of "
                    "the key signal): the top edge of each and the Spearman rank agreement of every pair of methods")
        top = agreement["top_edge"]
        st.dataframe(pd.DataFrame({"method": list(top), "top edge": list(top.values())}), hide_index=True,
                     key="top_edges")
        if isinstance(agreement.get("spearman"), dict):
            st.dataframe(pd.DataFrame({"methods": list(agreement["spearman"]),
                                       "Spearman": list(agreement["spearman"].values())}), hide_index=True,
                         key="rank_agreement")


def show_svd(folder: AnalysisFolder, summary: dict) -> None:
    if not folder.has("signal_dimensionality"):
        st.info(f"No SVD trace: {summary.get('svd_trace', {}).get('skipped', 'not stored for this analysis')}.")
        return
    plot(dimensionality_box_figure(data.parquet(folder.table_path("signal_dimensionality"))), key="svd_dims")
    st.dataframe(data.parquet(folder.table_path("svd_edges"), order="abs(contribution) desc"), hide_index=True,
                 width="stretch", key="svd_edges")


def show_graph(folder: AnalysisFolder, summary: dict) -> None:
    if not folder.has("svd_edges"):
        st.info("No communication graph: the SVD trace was not stored for this analysis.")
        return
    side = st.radio("Side", ["key", "query", "value"], horizontal=True, key="side")
    edges = head_edges_from_svd(data.parquet(folder.table_path("svd_edges")), side=side)
    if edges:
        plot(edge_graph_figure(edges), key="graph")
    else:
        st.info(f"No head-to-head edge carries ≥ 5% of the {side} signal.")


def show_feature_circuit(root: Path, folder: AnalysisFolder, summary: dict) -> None:
    if folder.has_json("feature_circuit"):
        feature_circuit_tab.show(root, folder, summary)
    else:
        missing("No SAE feature circuit for this prompt set.", COMMANDS["circuits"])


VIEWS = {
    "Prompts": show_prompts,
    "Head scores": show_head_scores,
    "Composition": show_composition,
    "DLA": show_dla,
    "Logit lens": show_logit_lens,
    "Patching": show_patching,
    "Path patching": show_path_patching,
    "AtP agreement": show_atp,
    "SVD decomposition": show_svd,
    "Communication graph": show_graph,
}
NEEDS = {"Composition": "composition", "DLA": "dla", "Logit lens": "logit_lens", "Patching": "patch_heads",
         "Path patching": "path_patch", "AtP agreement": "atp_agreement", "Head scores": "head_scores"}


def show(view: str, root: Path, folder: AnalysisFolder, summary: dict) -> None:
    """Draw one view of the stored analysis (``VIEWS`` or "Feature circuit")."""
    if view == "Feature circuit":
        show_feature_circuit(root, folder, summary)
    elif view in NEEDS and not folder.has(NEEDS[view]):
        missing(f"This analysis has no {view.lower()} table.", COMMANDS["circuits"])
    else:
        VIEWS[view](folder, summary)
