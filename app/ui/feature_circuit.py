"""The Circuits page's feature-circuit tab: each site's SAE, how much of the circuit the SAEs' error nodes
carry (a warning above half), every node labelled and linked to its dashboard, the faithfulness curve."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.ui import data
from app.ui.links import feature_table, linked_table
from app.ui.theme import plot
from interp.figures.circuits import faithfulness_figure, feature_circuit_figure
from interp.store.analysis_folder import AnalysisFolder

METRICS = {"induction": "the mean log-probability of the correct next token over the repeated half",
           "ioi": "the mean logit difference logit(IO) − logit(S) at the last token"}
ERROR_SHARE_WARNING = 0.5


def site_name(hook: str) -> str:
    """``blocks.0.hook_attn_out`` -> ``L0 attn_out`` (the hook stays in the SAE table)."""
    layer, _, name = hook.removeprefix("blocks.").partition(".hook_")
    return f"L{layer} {name}" if name else hook


def shown_path(root: Path, path: str | None) -> str | None:
    """A stored path as the page shows it: relative to the workspace when it lies inside (an analysis run with an
    absolute ``--workspace`` stores absolute paths), else as stored."""
    if not isinstance(path, str) or not Path(path).is_absolute():
        return path
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return path


def labelled_nodes(root: Path, nodes: pd.DataFrame) -> pd.DataFrame:
    """The stored nodes with each feature's label from its SAE's dashboards (error nodes: "SAE error") and, where
    its SAE has them, its explanation; rows keep the stored index (largest |effect| first)."""
    frame = nodes.copy()
    frame["label"] = None
    explained = False
    if "analysis" in frame:
        for analysis, rows in frame[frame.feature >= 0].groupby("analysis"):
            folder = AnalysisFolder(root / "analyses" / analysis)
            if folder.has_dashboards:
                ids = tuple(int(i) for i in rows.feature.unique())
                labels = data.parquet(folder.table_path("features"), columns="feature, label",
                                      where=f"feature in ({', '.join('?' * len(ids))})", params=ids)
                frame.loc[rows.index, "label"] = rows.feature.map(dict(zip(labels.feature, labels.label))).to_numpy()
            if folder.has_explanations:
                explained = True
                texts = {i: data.explanation(folder.path, i) for i in rows.feature.unique()}
                frame.loc[rows.index, "explanation"] = [
                    None if texts[i].empty else texts[i].explanation.iloc[0] for i in rows.feature]
    frame.loc[frame.feature < 0, "label"] = "SAE error (what the dictionary does not reconstruct)"
    frame["site"] = frame.hook.map(site_name)
    frame["position"] = frame.pos.map(lambda p: "all" if p < 0 else str(p))
    columns = (["site", "position", "feature", "label"] + (["explanation"] if explained else []) + ["effect"]
               + (["analysis"] if "analysis" in frame else []))
    return frame.sort_values("effect", key=abs, ascending=False)[columns]


def node_names(stored: pd.DataFrame, labelled: pd.DataFrame) -> dict[str, str]:
    """The circuit figure's name of each node id: site, position, feature id and label (errors: "SAE error")."""
    names = {}
    for index, row in labelled.iterrows():
        where = f"{row.site}" + ("" if row.position == "all" else f" @{row.position}")
        label = row.label if isinstance(row.label, str) else ""
        names[stored.id[index]] = (f"{where} SAE error" if row.feature < 0
                                   else f"{where} #{int(row.feature)} {label[:24]}".rstrip())
    return names


def show(root: Path, folder: AnalysisFolder, summary: dict) -> None:
    """The tab's content for one stored prompt set."""
    stored = summary.get("feature_circuit", {})
    graph = data.read_json(folder.json_path("feature_circuit"))
    share = stored.get("error_share", graph.get("error_share"))
    metric = METRICS.get(summary.get("prompt_set", ""), "the prompt set's metric")
    if share is not None and share > ERROR_SHARE_WARNING:
        st.warning(f"SAE error nodes carry {share:.0%} of this circuit's total |effect|: most of it is what the "
                   "dictionaries do not reconstruct, not features. Train SAEs at the sites where the circuit runs "
                   "(`workbench demo` trains one per attention and MLP output).")
    c = st.columns(5)
    c[0].metric("nodes", stored.get("nodes", len(graph["nodes"])))
    c[1].metric("error nodes", stored.get("error_nodes", sum(n["feature"] < 0 for n in graph["nodes"])))
    c[2].metric("error share of the circuit", "–" if share is None else f"{share:.0%}",
                help="Σ|effect| of SAE error nodes / Σ|effect| of all the circuit's nodes")
    if "error_share_all_nodes" in stored:
        c[3].metric("error share, every node", f"{stored['error_share_all_nodes']:.0%}",
                    help="the same share over every feature and error node of every site, before the threshold")
    if "faithfulness" in stored:
        c[4].metric(
            "faithfulness",
            f"{stored['faithfulness']:.2f}",
            help=f"(m(C) − m(∅)) / (m(M) − m(∅)); completeness m(M∖C): {stored.get('completeness', float('nan')):.2f}",
        )
    st.caption(
        f"A node's **effect** is how much {metric} changes when that node alone takes its value on the "
        "corrupted prompts (integrated gradients, 10 steps), summed over prompts so the effects add up to "
        f"the change of the mean. Nodes kept: |effect| > {graph['node_threshold']}"
        + (
            "; effects summed over positions (position 'all': random-token prompts share no positions)."
            if graph.get("over_positions")
            else "."
        )
    )
    sites = pd.DataFrame(stored.get("sites") or [{"hook": stored.get("hook"), "sae": stored.get("sae")}])
    if not sites.empty:
        by_site = stored.get("error_share_by_site", {})
        sites.insert(0, "site", sites.hook.map(site_name))
        sites["sae"] = sites.sae.map(lambda path: shown_path(root, path))
        sites["error share (every node)"] = sites.hook.map(by_site)
        st.markdown("**The SAE at each site**")
        if "analysis" in sites:

            def open_sae(row):
                return ("Features", {"analysis": row.analysis}) if isinstance(row.analysis, str) else None

            linked_table(sites, "feature_sites", open_sae, caption="Click a site to browse its SAE's features.")
        else:
            st.dataframe(sites, hide_index=True, width="stretch", key="feature_sites")
    stored_nodes = data.parquet(folder.table_path("feature_nodes"))
    nodes = labelled_nodes(root, stored_nodes)
    plot(feature_circuit_figure(graph, node_names(stored_nodes, nodes) if "id" in stored_nodes else None),
         key="feature_circuit")
    st.markdown("**Nodes** (largest |effect| first; each feature opens its dashboard)")
    feature_table(nodes, "feature_nodes")
    if folder.has("feature_faithfulness"):
        plot(faithfulness_figure(data.parquet(folder.table_path("feature_faithfulness"))), key="feature_faithfulness")
