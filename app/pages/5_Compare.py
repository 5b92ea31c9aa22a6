"""Compare: two SAEs (or members of an ensemble): matching, MMCS histogram, features one has and the other lacks."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app.ui import data
from app.ui.dashboard import choose_analysis
from app.ui.theme import missing, page, plot
from app.ui.workspace import COMMANDS, list_analyses, workspace_root

page("Compare")
root = workspace_root()
options = list_analyses(root)
a_col, b_col = st.columns(2)
with a_col:
    folder_a = choose_analysis(root, "sae_a", "SAE A", default=options[0] if options else None)
with b_col:
    folder_b = choose_analysis(root, "sae_b", "SAE B", default=options[1] if len(options) > 1 else None)
if folder_a is None or folder_b is None:
    if not options:
        missing("No analysed SAEs in this workspace yet.", COMMANDS["features"].format(run_id="demo-mfr"))
    st.stop()
if folder_a == folder_b:
    st.warning("Pick two different SAEs.")
    st.stop()

id_b = str(folder_b.relative_to(root / "analyses"))
matches_file = folder_a / "matches.parquet"
if not matches_file.exists():
    missing("These SAEs have no stored matching. Train them as one ensemble and analyse the run: matches are "
            "written for every pair of members.", "workbench analyze features runs/<run_id>")
    st.stop()
matches = data.parquet(matches_file, where="other_analysis = ?", params=(id_b,))
if matches.empty:
    missing(f"`{folder_a.relative_to(root)}` has no matching with `{id_b}` (matches exist only between members "
            "of one ensemble run).", "workbench analyze features runs/<run_id>")
    st.stop()

mmcs = float(matches.cosine.mean())
threshold = st.slider("A feature counts as present in B when its matched cosine is at least", 0.0, 1.0, 0.7, 0.05,
                      key="threshold")
missing_in_b = matches[matches.cosine < threshold]
c1, c2, c3 = st.columns(3)
c1.metric("MMCS (mean matched cosine)", f"{mmcs:.4f}")
c2.metric("features in A", f"{len(matches):,}")
c3.metric(f"missing in B (cos < {threshold:.2f})", f"{len(missing_in_b):,}")
fig = go.Figure(go.Histogram(x=matches.cosine, nbinsx=40))
fig.add_vline(x=threshold, line_dash="dash")
fig.update_layout(title="Matched cosine of A's features to B's (Hungarian matching)", xaxis_title="cosine",
                  yaxis_title="features")
plot(fig, key="mmcs_hist")

labels_a = data.parquet(folder_a / "features.parquet", columns="feature, label, frequency")
labels_b = data.parquet(folder_b / "features.parquet", columns="feature as other_feature, label as other_label")
table = matches.merge(labels_a, on="feature").merge(labels_b, on="other_feature", how="left")
left, right = st.columns(2)
with left:
    st.markdown(f"**In A, missing in B** ({len(missing_in_b)}; lowest cosine first)")
    st.dataframe(table[table.cosine < threshold].sort_values("cosine")[
        ["feature", "label", "frequency", "other_feature", "cosine"]], hide_index=True, width="stretch",
        key="missing_table")
with right:
    st.markdown("**Matched pairs** (highest cosine first)")
    st.dataframe(table.sort_values("cosine", ascending=False)[
        ["feature", "label", "other_feature", "other_label", "cosine"]], hide_index=True, width="stretch",
        key="pairs_table")
