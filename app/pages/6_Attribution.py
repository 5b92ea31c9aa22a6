"""Attribution graphs: a stored graph's nodes by layer and position, edges by weight, pruning sliders, its
supernodes (listed with their scores; nodes coloured or collapsed by group); a clicked node shows its edges and,
for a feature, its transcoder's dashboard when one was made."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.ui import dashboard, data
from app.ui.feature_circuit import shown_path
from app.ui.theme import missing, page, plot
from app.ui.workspace import workspace_root
from interp.figures.attribution import attribution_graph_figure, collapse_supernodes, with_supernodes
from interp.store.analysis_folder import AnalysisFolder, graph_slugs

page("Attribution graphs")
root = workspace_root()
analyses = root / "analyses"
slugs = graph_slugs(analyses)
if not slugs:
    missing("No attribution graph in this workspace yet.",
            'workbench analyze graph --prompt "When Romeo and Juliet went to the court, Romeo gave a ring to" '
            "-t runs/demo-transcoder-L0 -t runs/demo-transcoder-L1")
    st.stop()

slug = st.selectbox("Graph", slugs)
folder = AnalysisFolder.graph(analyses, slug)
stale = data.stale_graph(folder.path)
if stale is not None:  # older token/BOS conventions: its edges mean something else, so it is not drawn
    st.error(f"The graph '{slug}' is not drawn: {stale.reason}. Rebuild it with:")
    st.code(stale.command, language="bash")
    st.stop()
graph, summary = data.attribution_graph(folder.path)
st.markdown(f"**Prompt:** {graph.prompt!r}")
left, middle, right = st.columns(3)
left.metric("Replacement score", f"{summary.get('replacement_score', float('nan')):.3f}")
middle.metric("Completeness score", f"{summary.get('completeness_score', float('nan')):.3f}")
check = summary.get("intervention", {})
right.metric("Real-model correlation (top edges)", f"{check.get('real_correlation', float('nan')):.3f}")
for note in summary.get("notes", []):
    st.info(note)

one, two = st.columns(2)
node_threshold = one.slider("Node threshold (share of influence kept)", 0.1, 1.0,
                            float(summary.get("node_threshold", 0.8)), 0.01)
edge_threshold = two.slider("Edge threshold (share of influence kept)", 0.1, 1.0,
                            float(summary.get("edge_threshold", 0.98)), 0.01)
nodes, edges = data.pruned_graph(folder.path, node_threshold, edge_threshold)
GROUPING_NAMES = {"decoder": "decoder cosine", "lobes": "lobes (stored geometry)",
                  "crystals": "crystals (stored geometry)"}
GROUPING_HELP = {"decoder": "write the same decoder direction", "lobes": "share a co-occurrence lobe of the "
                 "transcoder's geometry analysis", "crystals": "belong to one crystal of the transcoder's geometry"}
groupings = summary.get("supernode_groupings") or {"decoder": {"groups": summary.get("supernodes", []), "notes": []}}
order = [g for g in GROUPING_NAMES if g in groupings] + sorted(set(groupings) - set(GROUPING_NAMES))  # JSON sorts keys
by = st.radio("Group features by", order, format_func=lambda g: GROUPING_NAMES.get(g, g), horizontal=True,
              key="grouping", help="Every grouping also needs the features to fire together on the prompt; each "
              "group is scored by intervention the same way.")
supernodes = groupings[by]["groups"]
for note in groupings[by].get("notes", []):
    st.info(note)
groups = [[int(n) for n in group["nodes"]] for group in supernodes]
view = st.radio("Supernodes", ["separate", "coloured", "collapsed"], index=1 if groups else 0, horizontal=True,
                key="view", disabled=not groups, help=f"Groups of feature nodes of one layer that "
                f"{GROUPING_HELP.get(by, 'are alike')} and fire together on the prompt (at the stored thresholds).")
drawn_nodes, drawn_edges = nodes, edges
if groups and view == "coloured":
    drawn_nodes = with_supernodes(nodes, groups)
elif groups and view == "collapsed":
    drawn_nodes, drawn_edges = collapse_supernodes(nodes, edges, groups)
event = plot(attribution_graph_figure(drawn_nodes, drawn_edges, graph.token_strings), key="graph",
             on_select="rerun", selection_mode="points")
if supernodes:
    st.markdown(f"**Supernodes** ({len(supernodes)} groups)")
    st.dataframe(pd.DataFrame([{"supernode": g["group"], "layer": g["layer"], "members": ", ".join(g["members"]),
                                "removing the group": g["group_change"],
                                "sum of removing each": g["sum_of_member_changes"], "score (ratio)": g["ratio"]}
                               for g in supernodes]), hide_index=True)
    st.caption("Score: the top logit's change in the real model when the whole group is removed, over the sum of "
               "its changes when each member is removed alone (1: the group acts as one additive node).")
elif "supernodes" in summary:
    st.caption(f"No supernodes: no two kept features of a layer {GROUPING_HELP.get(by, 'are alike')} and fire "
               "together here.")
points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
    getattr(getattr(event, "selection", None), "points", []) or []
clicked = [int(p["customdata"]) for p in points if p.get("customdata") is not None]
labels = {int(row.node): row.label for row in nodes.itertuples()}
order = sorted(labels, key=lambda n: -float(nodes.set_index("node").at[n, "influence"]))
default = order.index(clicked[0]) if clicked and clicked[0] in order else 0
chosen = st.selectbox("Node (or click one in the graph)", order, index=default, format_func=lambda n: labels[n])

if chosen is not None:
    node = int(chosen)
    info = graph.describe(node)
    incoming = edges[edges["target"] == node].assign(
        source=lambda f: f["source"].map(lambda n: graph.describe(n)["label"])
    )
    outgoing = edges[edges["source"] == node].assign(
        target=lambda f: f["target"].map(lambda n: graph.describe(n)["label"])
    )
    a, b = st.columns(2)
    a.markdown("**Incoming edges (kept)**")
    a.dataframe(incoming.sort_values("weight", key=abs, ascending=False)[["source", "weight"]], hide_index=True)
    b.markdown("**Outgoing edges (kept)**")
    b.dataframe(outgoing.sort_values("weight", key=abs, ascending=False)[["target", "weight"]], hide_index=True)
    if info["kind"] == "feature":
        source = summary.get("transcoders", {}).get(str(info["layer"]), "")
        analysis = AnalysisFolder.of_sae(analyses, source) if source else None
        if analysis is not None and analysis.has_dashboards:
            st.markdown(f"**Dashboard of feature {info['feature']}** ({analysis.id})")
            dashboard.render(analysis.path, info["feature"], key=f"graph_{node}", compact=True)
        elif source:
            missing(
                f"No dashboards for this feature's transcoder ({Path(source).parent.name}) yet.",
                f"workbench analyze features {source} --hook {graph.transcoders.get(info['layer'], '')}",
            )

with st.expander("Checks by intervention (top edges)"):
    if folder.has("graph_checks"):
        st.dataframe(pd.DataFrame(data.parquet(folder.table_path("graph_checks"))), hide_index=True)
    st.caption(
        "Removing the source changes the target by minus the edge weight in the replacement model "
        "(frozen attention and norms); the real model's change measures how far the linear picture holds."
    )
with st.expander("Top paths into the top logit"):
    for path in summary.get("top_paths", []):
        st.write(
            " → ".join(
                f"{node}" + (f" ({w:+.2f})" if i < len(path["weights"]) else "")
                for i, (node, w) in enumerate(zip(path["nodes"], path["weights"] + [0.0]))
            )
        )
st.caption(
    f"circuit-tracer's viewer reads `{shown_path(root, str(folder.circuit_tracer_dir()))}` (`<slug>.json` + "
    "its graph index) unchanged."
)
