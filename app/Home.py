"""Home: the workspace at a glance (caches, SAE runs, analyses) and a quick start."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui.evaluation import eval_figures, eval_note
from app.ui.links import linked_table, page_link
from app.ui.theme import missing, page
from app.ui.workspace import COMMANDS, list_analyses, list_caches, list_runs, train_command, workspace_root
from interp.store.analysis_folder import AnalysisFolder, circuit_sets
from interp.store.run_folder import EVALUATION


def analysis_page(row: pd.Series) -> tuple[str, dict]:
    """Where a row of the analyses table leads: a prompt set's circuits, or an SAE's dashboards."""
    if row.analysis.startswith("circuits/"):
        return "Circuits", {"prompt_set": row.analysis.removeprefix("circuits/")}
    return "Features", {"analysis": row.analysis}


page("Workbench")
root = workspace_root()
# the folder's name, its full path only in the tooltip: a screenshot or a shared screen shows no home directory
st.caption(f"Workspace: `{root.name or root}`", help=f"Full path: {root}")

st.subheader("Activation caches")
caches = list_caches(root)
if caches:
    linked_table(pd.DataFrame([{"cache": c.cache_id, "model": c.model, "hooks": ", ".join(c.hooks),
                                "tokens": c.n_tokens, "status": c.status} for c in caches]), "caches",
                 lambda row: ("Training", {}), caption="Click a cache to train SAEs on it (Training page).")
    page_link("Training", label="Train SAEs on a cache (Training)", icon=":material/model_training:")
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
                         **eval_figures(member), "logged steps": run.n_steps_logged})
    linked_table(pd.DataFrame(rows), "runs", lambda row: ("Training", {"run": row.run}),
                 caption="Click a run to follow it on the Training page. FVU, L0 and dead fraction: "
                         + eval_note(runs[0].members) + f" ({EVALUATION} of each run).")
else:
    missing("No SAE run in this workspace yet.", train_command(caches[0].cache_id if caches else "demo"))

st.subheader("Analyses")
analyses = list_analyses(root)
circuits = circuit_sets(root / "analyses")
if analyses or circuits:
    linked_table(pd.DataFrame([{"analysis": a, "kind": "feature dashboards"
                                + (" + geometry" if AnalysisFolder(root / "analyses" / a).has("geometry_map") else "")}
                               for a in analyses] + [{"analysis": f"circuits/{c}", "kind": "circuits"}
                                                      for c in circuits]), "analyses", analysis_page,
                 caption="Click an analysis to open it (dashboards on Features, circuits on Circuits).")
else:
    run_id = runs[0].run_id if runs else "demo-mfr"
    missing("No analyses in this workspace yet.", COMMANDS["features"].format(run_id=run_id))

st.subheader("Quick start")
st.markdown(
    "Everything at once on the bundled model and corpus (about 10 minutes on 2 CPU cores):\n\n"
    "```bash\nworkbench demo --workspace demo-workspace\nworkbench app --workspace demo-workspace\n```\n"
    "Then open **Features** to browse dashboards, **Geometry** for the map of decoder directions, "
    "**Circuits** to type a prompt, **Compare** for the ensemble's matching, **Training** to launch a run.")
