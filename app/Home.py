"""Home: the workspace at a glance (caches, SAE runs, analyses) and a quick start."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui.theme import missing, page
from app.ui.workspace import COMMANDS, list_analyses, list_caches, list_runs, train_command, workspace_root
from interp.store.analysis_folder import AnalysisFolder, circuit_sets

page("Workbench")
root = workspace_root()
st.caption(f"Workspace: `{root}`")

st.subheader("Activation caches")
caches = list_caches(root)
if caches:
    st.dataframe(pd.DataFrame([{"cache": c.cache_id, "model": c.model, "hooks": ", ".join(c.hooks),
                                "tokens": c.n_tokens, "status": c.status} for c in caches]),
                 hide_index=True, width="stretch", key="caches")
else:
    missing("No activation cache in this workspace yet.", COMMANDS["cache"])

st.subheader("SAE runs")
runs = list_runs(root)
if runs:
    rows = []
    for run in runs:
        for i, member in enumerate(run.members or [{}]):
            rows.append({"run": run.run_id, "member": i if run.members else None, "state": run.state,
                         "architecture": run.architecture,
                         "d_sae": run.d_sae, "ensemble": run.n_members, "MFR λ": run.mfr,
                         "FVU": member.get("fvu"), "L0": member.get("l0"),
                         "dead fraction": member.get("dead_fraction"), "logged steps": run.n_steps_logged})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="runs")
else:
    missing("No SAE run in this workspace yet.", train_command(caches[0].cache_id if caches else "demo"))

st.subheader("Analyses")
analyses = list_analyses(root)
circuits = circuit_sets(root / "analyses")
if analyses or circuits:
    st.dataframe(pd.DataFrame([{"analysis": a, "kind": "feature dashboards"
                                + (" + geometry" if AnalysisFolder(root / "analyses" / a).has("geometry_map") else "")}
                               for a in analyses] + [{"analysis": f"circuits/{c}", "kind": "circuits"}
                                                      for c in circuits]),
                 hide_index=True, width="stretch", key="analyses")
else:
    run_id = runs[0].run_id if runs else "demo-mfr"
    missing("No analyses in this workspace yet.", COMMANDS["features"].format(run_id=run_id))

st.subheader("Quick start")
st.markdown(
    "Everything at once on the bundled model and corpus (a few minutes on 2 CPU cores):\n\n"
    "```bash\nworkbench demo --workspace demo-workspace\nworkbench app --workspace demo-workspace\n```\n"
    "Then open **Features** to browse dashboards, **Geometry** for the map of decoder directions, "
    "**Circuits** to type a prompt, **Compare** for the ensemble's matching, **Training** to launch a run.")
