"""Compare: first each ensemble's members side by side (MFR vs no MFR: MMCS over live features, shares above
0.7 / 0.9, one histogram each), then any two analysed SAEs: their matching with dead latents apart, the
features each has and the other lacks, and a pair view (two dashboards side by side)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.ui import data
from app.ui.compare_view import LIVE_HELP, shared_initialisation, stored, summary_metrics, within_runs
from app.ui.dashboard import choose_analysis, render
from app.ui.links import feature_table
from app.ui.theme import missing, page, plot
from app.ui.workspace import COMMANDS, UnsafePathError, inside, list_analyses, safe_path, workspace_root
from interp.figures.compare import explanation_score_figure, matched_cosine_figure
from interp.store.analysis_folder import AnalysisFolder, analysis_id
from interp.store.errors import DictionaryError
from interp.store.jobs import Job, JobRunningError
from interp.store.matches import has_liveness, match_summary
from interp.store.run_folder import SAE_CONFIG, SAE_WEIGHTS


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
    raise FileNotFoundError(
        f"the SAE folder of `{analysis_id(folder)}` is missing ({AnalysisFolder(folder).meta_path.name} records "
        f"{recorded!r}; no runs/{analysis_id(folder)}/{SAE_CONFIG} either)"
    )


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
    st.info(
        f"Matching features in the background (pid {status.pid}; Hungarian, O(d_sae^3): large SAEs take a "
        "while). The page shows the result when it is done."
    )
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
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "SAE": name,
                        "explained": len(f),
                        f"median {score}": f[score].median(),
                        "median baseline": f[f"baseline_{score}"].median(),
                        "share beating baseline by 0.2": (f[score] >= f[f"baseline_{score}"] + 0.2).mean(),
                    }
                    for name, f in frames.items()
                ]
            ),
            hide_index=True,
            width="stretch",
            key="explanation_summary",
        )


def labelled(matches: pd.DataFrame, mine: Path, other: Path) -> pd.DataFrame:
    labels = data.parquet(AnalysisFolder(mine).table_path("features"), columns="feature, label, frequency")
    other_labels = data.parquet(
        AnalysisFolder(other).table_path("features"), columns="feature as other_feature, label as other_label"
    )
    return matches.merge(labels, on="feature").merge(other_labels, on="other_feature", how="left")


page("Compare")
root = workspace_root()
options = list_analyses(root)
st.subheader("Within each run: how much do an ensemble's members share?")
st.caption(
    "Each run's first two members matched to each other. MFR is meant to make them agree; without MFR "
    f"the members agree only as much as training makes them. {LIVE_HELP[0].upper() + LIVE_HELP[1:]}."
)
within_runs(root, options)

st.divider()
st.subheader("Any two SAEs")
# by default the first ensemble's two members (the within-run story), else the first two analyses
default_a = options[0] if options else None
siblings = [o for o in options if default_a and o != default_a and o.split("/")[0] == default_a.split("/")[0]]
default_b = siblings[0] if siblings else (options[1] if len(options) > 1 else None)
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
# torch comes with this import: only here, after the within-run comparison above is on screen
from interp.features.compare import check_comparable  # noqa: E402

if meta_a.get("d_in") is not None and meta_b.get("d_in") is not None:
    try:
        notes = check_comparable(id_a, meta_a["d_in"], meta_a.get("hook"), id_b, meta_b["d_in"], meta_b.get("hook"))
    except DictionaryError as error:
        st.error(f"{error}.")
        st.stop()
for note in notes + [n for n in [shared_initialisation(root, id_a, id_b)] if n]:
    st.warning(note)

explanation_scores({f"A {id_a}": folder_a, f"B {id_b}": folder_b})
a_to_b, b_to_a = stored(folder_a, id_b), stored(folder_b, id_a)
if a_to_b.empty or b_to_a.empty or not (has_liveness(a_to_b) and has_liveness(b_to_a)):
    command = f"workbench analyze compare runs/{id_a} runs/{id_b}"
    what = (
        "No stored matching"
        if a_to_b.empty or b_to_a.empty
        else "The stored matching has no firing counts (dead latents not told apart)"
    )
    missing(f"{what} between `{id_a}` and `{id_b}`.", command)
    job = AnalysisFolder(folder_a).match_job(id_b)
    state = job.status().state
    if state == "running":
        follow(job)
        st.stop()
    if state in ("failed", "stopped"):
        st.error(f"The last matching job {state}. The end of its log:")
        st.code(job.log_tail() or "(empty log)")
    st.caption(
        "Or compute it here, in the background. The Hungarian matching is O(d_sae^3): seconds for a few "
        "thousand features, long for 16k and more."
    )
    if st.button("Compute matching now", key="compute"):
        compute(root, folder_a, folder_b)
    st.stop()

threshold = st.slider(
    "A live feature counts as present in the other SAE when its live match has a cosine of at least",
    0.0,
    1.0,
    0.7,
    0.05,
    key="threshold",
)
summary_ab, summary_ba = match_summary(a_to_b, (threshold, 0.9)), match_summary(b_to_a, (threshold, 0.9))
live_ab, live_ba = a_to_b[a_to_b.alive.astype(bool)], b_to_a[b_to_a.alive.astype(bool)]
missing_in_b = live_ab[~(live_ab.live_cosine >= threshold)]  # live, and no live match that close (NaN: none left)
missing_in_a = live_ba[~(live_ba.live_cosine >= threshold)]
for name, summary in (("A→B", summary_ab), ("B→A", summary_ba)):
    summary_metrics(summary, st.columns(4), (threshold, 0.9), name)
st.caption(
    f"A = `{id_a}` ({len(a_to_b):,} latents, {summary_ab['n_dead']:,} dead), B = `{id_b}` ({len(b_to_a):,} "
    f"latents, {summary_ba['n_dead']:,} dead). Missing in B: live features of A whose live match in B is below "
    f"{threshold:.2f} ({len(missing_in_b):,}); missing in A likewise ({len(missing_in_a):,}). Dead latents are "
    "neither shared nor missing."
)
plot(matched_cosine_figure(live_ab, live_ba, threshold, column="live_cosine"), key="mmcs_hist")

table_ab, table_ba = labelled(a_to_b, folder_a, folder_b), labelled(b_to_a, folder_b, folder_a)
columns = ["feature", "label", "frequency", "live_other_feature", "live_cosine"]
left, right = st.columns(2)
with left:
    st.markdown(f"**In A, missing in B** ({len(missing_in_b)}; lowest cosine first, unmatched on top)")
    feature_table(
        table_ab[table_ab.feature.isin(missing_in_b.feature)].sort_values("live_cosine", na_position="first")[columns],
        "missing_table",
        analysis=id_a,
        others={"live_other_feature": id_b},
    )
with right:
    st.markdown(f"**In B, missing in A** ({len(missing_in_a)}; lowest cosine first, unmatched on top)")
    feature_table(
        table_ba[table_ba.feature.isin(missing_in_a.feature)].sort_values("live_cosine", na_position="first")[columns],
        "missing_in_a_table",
        analysis=id_b,
        others={"live_other_feature": id_a},
    )
pairs = (
    table_ab[table_ab.alive.astype(bool) & (table_ab.live_other_feature >= 0)]
    .drop(columns="other_label")
    .merge(
        data.parquet(
            AnalysisFolder(folder_b).table_path("features"),
            columns="feature as live_other_feature, label as other_label",
        ),
        on="live_other_feature",
        how="left",
    )
    .sort_values("live_cosine", ascending=False)
)
st.markdown("**Matched pairs of live features** (highest cosine first)")
feature_table(
    pairs[["feature", "label", "live_other_feature", "other_label", "live_cosine"]], "pairs_table", analysis=id_a,
    others={"live_other_feature": id_b},
)

st.subheader("Pair view")
if not pairs.empty:
    chosen = int(
        st.selectbox("A's feature (its live match in B beside it)", pairs.feature.tolist(), key="pair_feature")
    )
    partner = pairs.set_index("feature").loc[chosen]
    left, right = st.columns(2)
    with left:
        st.markdown(f"`{id_a}` feature **{chosen}**")
        render(folder_a, chosen, key="pair_a", compact=True)
    with right:
        st.markdown(f"`{id_b}` feature **{int(partner.live_other_feature)}** (cosine {partner.live_cosine:.3f})")
        render(folder_b, int(partner.live_other_feature), key="pair_b", compact=True)
