"""``AnalysisFolder``: the owner of an analysis folder, the only module that spells its file names.

Two kinds live under a workspace's ``analyses/``: an SAE's analyses ``analyses/<run_id>/sae_<i>/``
(dashboard, geometry, evaluation and matching tables, plus ``meta.json``) and a circuit analysis of
a prompt set ``analyses/circuits/<set>/`` (tables plus ``summary.json`` and graph JSON files).
Every table is ``<name>.parquet`` and every JSON document ``<name>.json``; tables and columns are
listed in ``interp/ANALYSES.md`` and ``interp/CIRCUITS.md``. Writers are atomic (``interp.store.io``);
imports stay light (no torch) so that the app's readers can use this module.
"""

from __future__ import annotations

from pathlib import Path

from interp.store.io import read_json, write_json, write_parquet, write_tables
from interp.store.jobs import Job

META = "meta"  # how the dashboards were made: sae, cache, hook, n_tokens, n_blocks, d_sae, d_in, config
SUMMARY = "summary"  # a circuit analysis's summary
CIRCUITS = "circuits"  # analyses/circuits/<set>/
EVAL_DIR = "eval"  # analyses/<run_id>/sae_<i>/eval/<metric>.json: SAEBench-layout evaluation outputs
EVAL_RESULTS = "eval_results"  # analyses/eval_results.parquet: every evaluated SAE's metrics, one row per value
# which analyses a folder holds, by the table each one always writes
KINDS = {"dashboards": "features", "geometry": "geometry_map", "matches": "matches", "evaluation": "eval_summary"}


def analysis_id(folder: Path | str) -> str:
    """``<run_id>/sae_<i>``: the last two parts of an SAE or analysis folder (resolved)."""
    folder = Path(folder).resolve()
    return f"{folder.parent.name}/{folder.name}"


class AnalysisFolder:
    """One analysis folder: its tables and JSON documents by name, what it holds, atomic writes."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def of_sae(cls, out_root: Path | str, sae_folder: Path | str) -> AnalysisFolder:
        """``<out_root>/<run_id>/sae_<i>``: where the analyses of an SAE folder go."""
        return cls(Path(out_root) / analysis_id(sae_folder))

    @classmethod
    def circuits(cls, out_root: Path | str, prompt_set: str) -> AnalysisFolder:
        return cls(Path(out_root) / CIRCUITS / prompt_set)

    @property
    def id(self) -> str:
        return analysis_id(self.path)

    def __fspath__(self) -> str:  # readers taking a folder path accept the object itself
        return str(self.path)

    def __repr__(self) -> str:
        return f"AnalysisFolder({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, AnalysisFolder) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    # names -> files
    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def json_path(self, name: str) -> Path:
        return self.path / f"{name}.json"

    @property
    def meta_path(self) -> Path:
        return self.json_path(META)

    @property
    def summary_path(self) -> Path:
        return self.json_path(SUMMARY)

    # what is there
    def match_job(self, other: str) -> Job:
        """The app's job matching this SAE with the analysis ``other`` (``<run>/sae_<i>``), in ``jobs/``."""
        return Job.in_folder(self.path / "jobs" / f"match-{other.replace('/', '--')}")

    def has(self, table: str) -> bool:
        return self.table_path(table).exists()

    def has_json(self, name: str) -> bool:
        return self.json_path(name).exists()

    def tables(self) -> list[str]:
        """Names of the tables present, sorted."""
        return sorted(p.stem for p in self.path.glob("*.parquet"))

    def table_files(self) -> list[Path]:
        return sorted(self.path.glob("*.parquet"))

    def present(self) -> list[str]:
        """Which analyses this folder holds: ``dashboards``, ``geometry``, ``matches``, ``evaluation``, ``circuits``."""
        kinds = [kind for kind, table in KINDS.items() if self.has(table)]
        return kinds + (["circuits"] if self.summary_path.exists() else [])

    @property
    def has_dashboards(self) -> bool:
        return self.has(KINDS["dashboards"])

    # reading
    def meta(self) -> dict:
        """``meta.json``, or ``{}`` when the dashboards were not made here."""
        return read_json(self.meta_path, "analysis metadata") if self.meta_path.exists() else {}

    def read_json(self, name: str) -> dict:
        return read_json(self.json_path(name), f"{name} of analysis {self.path}")

    def read_table(self, name: str, columns: list[str] | None = None):
        import pandas as pd

        return pd.read_parquet(self.table_path(name), columns=columns)

    # writing (atomic)
    def write_tables(self, tables: dict, by_feature: bool = True) -> AnalysisFolder:
        """Each frame as a table of this folder; ``by_feature``: rows sorted by feature for fast lookups."""
        write_tables(tables, self.path, by_feature)
        return self

    def write_json(self, name: str, payload: dict, sort_keys: bool = True) -> Path:
        return write_json(self.json_path(name), payload, durable=name == META, sort_keys=sort_keys)

    def write_meta(self, payload: dict) -> Path:
        return self.write_json(META, payload)

    # evaluation outputs (``interp.pipeline.evals``), one JSON per metric in SAEBench's layout
    def eval_path(self, metric: str) -> Path:
        return self.path / EVAL_DIR / f"{metric}.json"

    def has_eval(self, metric: str) -> bool:
        return self.eval_path(metric).exists()

    def evals(self) -> list[str]:
        """The metrics evaluated here, sorted."""
        return sorted(p.stem for p in (self.path / EVAL_DIR).glob("*.json"))

    def read_eval(self, metric: str) -> dict:
        return read_json(self.eval_path(metric), f"{metric} evaluation of analysis {self.path}")

    def write_eval(self, metric: str, payload: dict) -> Path:
        """Atomically and durably: a metric whose file exists is done, so an interrupted evaluation resumes after it."""
        return write_json(self.eval_path(metric), payload, durable=True)


def list_analyses(root: Path | str) -> list[str]:
    """Analysis ids (``<run_id>/sae_<i>``) under ``root`` (an ``analyses/`` folder) that hold dashboards."""
    root = Path(root)
    table = AnalysisFolder(root).table_path(KINDS["dashboards"]).name
    return sorted(str(p.parent.relative_to(root)) for p in root.glob(f"**/{table}"))


def evaluated_analyses(root: Path | str) -> list[str]:
    """Analysis ids under ``root`` (an ``analyses/`` folder) that hold at least one evaluation output."""
    root = Path(root)
    return sorted({str(p.parent.parent.relative_to(root)) for p in root.glob(f"*/*/{EVAL_DIR}/*.json")})


def eval_table_path(root: Path | str) -> Path:
    """``<root>/eval_results.parquet``: the workspace's table of every evaluation result."""
    return Path(root) / f"{EVAL_RESULTS}.parquet"


def write_eval_table(root: Path | str, frame) -> Path:
    return write_parquet(frame, eval_table_path(root), by_feature=False)


def read_eval_table(root: Path | str):
    """The workspace's evaluation table, or None when nothing was evaluated."""
    import pandas as pd

    path = eval_table_path(root)
    return pd.read_parquet(path) if path.exists() else None


EVAL_INDEX = ["sae", "run_id", "architecture", "mfr_coefficient", "d_sae", "model", "hook"]


def wide_eval_table(table):
    """The long evaluation table as one row per SAE and one column per ``<metric>.<name>``."""
    import pandas as pd

    if table is None or table.empty:
        return pd.DataFrame(columns=EVAL_INDEX)
    table = table.assign(column=table.metric + "." + table.name).fillna({"model": "?", "hook": "?", "run_id": "?"})
    wide = table.groupby([*EVAL_INDEX, "column"], dropna=False, sort=True)["value"].first().unstack("column")
    return wide.reset_index().dropna(axis=1, how="all").rename_axis(columns=None)


def circuit_sets(root: Path | str) -> list[str]:
    """Names of the stored circuit analyses under ``root`` (an ``analyses/`` folder)."""
    summary = AnalysisFolder(root).summary_path.name
    return sorted(p.parent.name for p in (Path(root) / CIRCUITS).glob(f"*/{summary}"))
