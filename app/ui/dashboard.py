"""One feature's dashboard, drawn from the stored tables (shared by Features and Compare)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.ui import data
from app.ui.links import feature_table
from app.ui.theme import plot
from app.ui.tokens import highlight
from app.ui.workspace import UnsafePathError, list_analyses, safe_path
from interp.figures.features import activation_histogram, logit_bars
from interp.store.analysis_folder import AnalysisFolder, analysis_id


def choose_analysis(root: Path, key: str, label: str = "SAE analysis", default: str | None = None) -> Path | None:
    """A select box over the workspace's analyses, or a typed folder (checked to stay inside the workspace)."""
    options = list_analyses(root)
    chosen, example = None, "analyses/<run_id>/sae_0"
    if options:
        index = options.index(default) if default in options else 0
        selected = st.selectbox(label, options, index=index, key=key)
        chosen, example = root / "analyses" / selected, f"analyses/{selected}"
    typed = st.text_input(f"{label}: or type a folder inside the workspace", key=f"{key}_typed",
                          placeholder=example)
    if not typed.strip():
        return chosen
    try:
        folder = safe_path(root, typed)
    except UnsafePathError as error:
        st.error(f"Refused: {error}")
        return None
    if not AnalysisFolder(folder).has_dashboards:
        st.error(f"`{typed}` holds no feature dashboards ({AnalysisFolder(folder).table_path('features').name}). "
                 "Make them with:")
        st.code("workbench analyze features runs/<run_id>", language="bash")
        return None
    return folder


SCORE_LABELS = {"detection": "detection", "detection_hard": "detection, hard negatives", "fuzzing": "fuzzing",
                "simulation": "simulation"}


def _plain(text: str) -> str:
    """``text`` shown literally in markdown (explanations quote tokens such as ``'*'`` or ``'['``)."""
    return "".join("\\" + c if c in "\\`*_{}[]<>()#+-.!|~$" else c for c in text)


def explanation_card(folder: Path, feature: int) -> pd.DataFrame:
    """The feature's explanation and its held-out scores, each with its change over the random baseline."""
    row = data.explanation(folder, feature)
    if row.empty:
        st.caption(f"No explanations yet: `workbench analyze explain runs/{Path(folder).parent.name}`")
        return row
    r = row.iloc[0]
    st.markdown(f"**Explanation** ({r.status}): {_plain(str(r.explanation))}")
    if r.status == "explained":
        cols = st.columns(len(SCORE_LABELS))
        for col, (name, label) in zip(cols, SCORE_LABELS.items()):
            score, base = r[name], r[f"baseline_{name}"]
            if pd.isna(score):
                col.metric(label, "n/a", help="no windows of this kind held out for this feature")
            else:
                col.metric(label, f"{score:.2f}", None if pd.isna(base) else f"{score - base:+.2f} vs random",
                           help=f"random explanation (other features'): {base:.2f}")
    return row


def summary(row: pd.Series) -> None:
    cols = st.columns(4)
    cols[0].metric("frequency", f"{row.frequency:.4%}")
    cols[1].metric("firings", f"{int(row.n_fires):,}")
    cols[2].metric("mean activation", f"{row.mean_activation:.3f}")
    cols[3].metric("max activation", f"{row.max_activation:.3f}")


def contexts(examples: pd.DataFrame, kind: str = "top", limit: int = 10) -> None:
    """Top (or quantile) contexts, tokens coloured by activation relative to the feature's largest."""
    rows = examples[examples.kind == kind].head(limit)
    if rows.empty:
        st.info("This feature never fired in the cached tokens: no contexts to show.")
        return
    scale = float(examples.activation.max())
    html = "".join(
        f'<div style="display:flex;gap:8px;align-items:baseline"><code style="min-width:4.5em">{r.activation:.3f}'
        f"</code>{highlight(list(r.context_tokens), list(r.context_acts), scale, int(r.center))}</div>"
        for r in rows.itertuples())
    st.html(html)


def histogram(hist: pd.DataFrame, feature: int, key: str) -> None:
    if hist.empty:
        st.info("No activations above zero: empty histogram.")
        return
    fig = activation_histogram(hist, feature)
    plot(fig, key=key)


def logits(table: pd.DataFrame, key: str) -> None:
    if table.empty:
        st.info("No logit effects stored (the analysis ran without the model's unembedding).")
        return
    fig = logit_bars(table)
    plot(fig, key=key)


def render(folder: Path, feature: int, key: str, compact: bool = False) -> dict[str, pd.DataFrame]:
    """The dashboard of ``feature`` in ``folder``; returns the tables it showed (tests compare them)."""
    tables = data.dashboard(folder, feature, compact)
    here = analysis_id(folder)
    row = tables["features"].iloc[0]
    st.markdown(f"**Feature {feature}**: label *{row.label}*")
    explained = explanation_card(folder, feature)
    if not explained.empty:
        tables["explanations"] = explained
    summary(row)
    examples = tables.get("examples", pd.DataFrame(columns=["kind", "activation"]))
    st.markdown("**Top activating contexts**")
    contexts(examples, "top", 5 if compact else 10)
    if compact:
        return tables
    left, right = st.columns(2)
    with left:
        histogram(tables.get("histograms", pd.DataFrame()), feature, key=f"{key}_hist")
        st.markdown("**Nearest features** (decoder cosine)")
        if "neighbours" in tables:
            feature_table(
                tables["neighbours"][["other", "cosine"]], f"{key}_neighbours", analysis=here, feature="other"
            )
        else:
            st.info("No neighbour table stored.")
    with right:
        logits(tables.get("logits", pd.DataFrame(columns=["sign"])), key=f"{key}_logits")
        st.markdown("**Co-occurring features**")
        if "cooccurrence" in tables:
            feature_table(
                tables["cooccurrence"][["other", "count", "jaccard", "phi"]],
                f"{key}_cooc",
                analysis=here,
                feature="other",
            )
        else:
            st.info("No co-occurrence table (analysis ran with `--cooccurrence none`).")
    with st.expander("Contexts by activation quantile"):
        contexts(examples, "quantile", 16)
    return tables
