"""Compare: any two analysed SAEs: matching, MMCS histogram, features each has and the other lacks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.ui import data
from app.ui.dashboard import choose_analysis
from app.ui.theme import missing, page, plot
from app.ui.workspace import COMMANDS, UnsafePathError, inside, list_analyses, safe_path, workspace_root
from interp.features.compare import check_comparable
from interp.features.dictionary import DictionaryError
from interp.figures.compare import explanation_score_figure, matched_cosine_figure
from interp.store.analysis_folder import AnalysisFolder, analysis_id
from interp.store.jobs import Job, JobRunningError
from interp.store.run_folder import SAE_CONFIG, SAE_WEIGHTS


def stored(folder: Path, other: str) -> pd.DataFrame:
    """``folder``'s stored matches with the analysis ``other`` (empty when there are none)."""
    path = AnalysisFolder(folder).table_path("matches")
    return data.parquet(path, where="other_analysis = ?", params=(other,)) if path.exists() else pd.DataFrame()


def meta(folder: Path) -> dict:
    path = AnalysisFolder(folder).meta_path
    return data.read_json(path) if path.exists() else {}


def sae_folder(root: Path, folder: Path) -> Path:
    """The SAE an analysis was made from: ``meta.json`` "sae" inside the workspace, else ``runs/<run>/sae_<i>``."""
    recorded = meta(folder).get("sae")  # relative to the workspace (older analyses: absolute)
    candidates = [safe_path(root, recorded)] if recorded else []  # refuses a path leaving the workspace
    candidates.append(safe_path(root, Path("runs") / analysis_id(folder)))
    for candidate in candidates:
        if (candidate / SAE_CONFIG).exists():
            for name in (SAE_CONFIG, SAE_WEIGHTS):
                inside(root, candidate / name)  # a file linked out of the workspace is refused
            return candidate
    raise FileNotFoundError(f"the SAE folder of `{analysis_id(folder)}` is missing ({AnalysisFolder(folder).meta_path.name} records "
                            f"{recorded!r}; no runs/{analysis_id(folder)}/{SAE_CONFIG} either)")


def compute(root: Path, folder_a: Path, folder_b: Path) -> None:
    """The button's work: locate both SAEs, start the matching job (``python -m interp.pipeline.compare``), rerun."""
    try:
        sae_a, sae_b = sae_folder(root, folder_a), sae_folder(root, folder_b)
    except (UnsafePathError, FileNotFoundError) as error:
        st.error(f"Cannot compute here: {error}. Run the command above with both SAE folders at hand.")
        return
    job = AnalysisFolder(folder_a).match_job(analysis_id(folder_b))
    try:
        job.start("interp.pipeline.compare", [str(p) for p in (sae_a, sae_b, folder_a, folder_b)], cwd=root)
    except JobRunningError as error:
        st.error(f"{error}.")
        return
    st.rerun()


@st.fragment(run_every=2.0)
def follow(job: Job) -> None:
    """While the matching job runs: its pid, a Stop button and its log; the page reruns when it ends."""
    status = job.status()
    if status.state != "running":
        st.rerun()
    st.info(f"Matching features in the background (pid {status.pid}; Hungarian, O(d_sae^3): large SAEs take a "
            "while). The page shows the result when it is done.")
    if st.button("Stop matching", key="stop_matching"):
        job.stop()
        st.rerun()
    if job.log_tail():
        st.code(job.log_tail())


def explanation_scores(folders: dict[str, Path]) -> None:
    """Both SAEs' explanation scores against their random baselines (when both were explained)."""
    tables = {name: AnalysisFolder(folder).table_path("explanations") for name, folder in folders.items()}
    if not all(path.exists() for path in tables.values()):
        return
    with st.expander("Explanation scores, A vs B", expanded=True):
        score = st.selectbox("Score", ["detection", "detection_hard", "fuzzing", "simulation"], key="explain_score")
        frames = {name: data.parquet(path, where="status = 'explained'") for name, path in tables.items()}
        plot(explanation_score_figure(frames, score), key="explanation_scores")
        st.dataframe(pd.DataFrame([{
            "SAE": name, "explained": len(f), f"median {score}": f[score].median(),
            "median baseline": f[f"baseline_{score}"].median(),
            "share beating baseline by 0.2": (f[score] >= f[f"baseline_{score}"] + 0.2).mean()}
            for name, f in frames.items()]), hide_index=True, width="stretch", key="explanation_summary")


def labelled(matches: pd.DataFrame, mine: Path, other: Path) -> pd.DataFrame:
    labels = data.parquet(AnalysisFolder(mine).table_path("features"), columns="feature, label, frequency")
    other_labels = data.parquet(AnalysisFolder(other).table_path("features"),
                                columns="feature as other_feature, label as other_label")
    return matches.merge(labels, on="feature").merge(other_labels, on="other_feature", how="left")


page("Compare")
root = workspace_root()
options = list_analyses(root)
default_a = options[0] if options else None
# by default B is the first SAE of another run (the demo: MFR vs no MFR), else A's neighbour
other_runs = [o for o in options if default_a and o.split("/")[0] != default_a.split("/")[0]]
default_b = other_runs[0] if other_runs else (options[1] if len(options) > 1 else None)
a_col, b_col = st.columns(2)
with a_col:
    folder_a = choose_analysis(root, "sae_a", "SAE A", default=default_a)
with b_col:
    folder_b = choose_analysis(root, "sae_b", "SAE B", default=default_b)
if folder_a is None or folder_b is None:
    if not options:
        missing("No analysed SAEs in this workspace yet.", COMMANDS["features"].format(run_id="demo-mfr"))
    st.stop()
if folder_a == folder_b:
    st.warning("Pick two different SAEs.")
    st.stop()

id_a, id_b = analysis_id(folder_a), analysis_id(folder_b)
meta_a, meta_b = meta(folder_a), meta(folder_b)
notes = []
if meta_a.get("d_in") is not None and meta_b.get("d_in") is not None:
    try:
        notes = check_comparable(id_a, meta_a["d_in"], meta_a.get("hook"), id_b, meta_b["d_in"], meta_b.get("hook"))
    except DictionaryError as error:
        st.error(f"{error}.")
        st.stop()
for note in notes:
    st.warning(note)

explanation_scores({f"A {id_a}": folder_a, f"B {id_b}": folder_b})
a_to_b, b_to_a = stored(folder_a, id_b), stored(folder_b, id_a)
if a_to_b.empty or b_to_a.empty:
    command = f"workbench analyze compare runs/{id_a} runs/{id_b}"
    missing(f"No stored matching between `{id_a}` and `{id_b}`.", command)
    job = AnalysisFolder(folder_a).match_job(id_b)
    state = job.status().state
    if state == "running":
        follow(job)
        st.stop()
    if state in ("failed", "stopped"):
        st.error(f"The last matching job {state}. The end of its log:")
        st.code(job.log_tail() or "(empty log)")
    st.caption("Or compute it here, in the background. The Hungarian matching is O(d_sae^3): seconds for a few "
               "thousand features, long for 16k and more.")
    if st.button("Compute matching now", key="compute"):
        compute(root, folder_a, folder_b)
    st.stop()

threshold = st.slider("A feature counts as present in the other SAE when its matched cosine is at least",
                      0.0, 1.0, 0.7, 0.05, key="threshold")
missing_in_b = a_to_b[~(a_to_b.cosine >= threshold)]  # unmatched (NaN) count as missing
missing_in_a = b_to_a[~(b_to_a.cosine >= threshold)]
c1, c2, c3, c4 = st.columns(4)
c1.metric("MMCS A→B", f"{a_to_b.cosine.mean():.4f}", help="mean cosine of A's features to their Hungarian match in B")
c2.metric("MMCS B→A", f"{b_to_a.cosine.mean():.4f}")
c3.metric(f"missing in B (cos < {threshold:.2f})", f"{len(missing_in_b):,}")
c4.metric(f"missing in A (cos < {threshold:.2f})", f"{len(missing_in_a):,}")
st.caption(f"A = `{id_a}` ({len(a_to_b):,} features), B = `{id_b}` ({len(b_to_a):,} features).")
fig = matched_cosine_figure(a_to_b, b_to_a, threshold)
plot(fig, key="mmcs_hist")

table_ab, table_ba = labelled(a_to_b, folder_a, folder_b), labelled(b_to_a, folder_b, folder_a)
columns = ["feature", "label", "frequency", "other_feature", "cosine"]
left, right = st.columns(2)
with left:
    st.markdown(f"**In A, missing in B** ({len(missing_in_b)}; lowest cosine first, unmatched on top)")
    st.dataframe(table_ab[~(table_ab.cosine >= threshold)].sort_values("cosine", na_position="first")[columns],
                 hide_index=True, width="stretch", key="missing_table")
with right:
    st.markdown(f"**In B, missing in A** ({len(missing_in_a)}; lowest cosine first, unmatched on top)")
    st.dataframe(table_ba[~(table_ba.cosine >= threshold)].sort_values("cosine", na_position="first")[columns],
                 hide_index=True, width="stretch", key="missing_in_a_table")
st.markdown("**Matched pairs** (highest cosine first)")
st.dataframe(table_ab[table_ab.other_feature >= 0].sort_values("cosine", ascending=False)[
    ["feature", "label", "other_feature", "other_label", "cosine"]], hide_index=True, width="stretch",
    key="pairs_table")
