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
# which analyses a folder holds, by the table each one always writes
KINDS = {"dashboards": "features", "geometry": "geometry_map", "matches": "matches", "evaluation": "eval_summary"}
EXPLANATIONS = "explanations"  # every feature's explanation, scores and baselines (interp.explain)
EXPLAIN_EXAMPLES = "explain_examples"  # the training and held-out windows they were made and scored on
EXPLAIN_RUN = "explain_run"  # how: example and explainer configs, token counts (the resume check)
EXPLAIN_PARTS = "explanations.parts"  # finished chunks of features of an unfinished run, one table each


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

    # explanations: written in chunks of features so that a killed run resumes without redoing finished ones
    @property
    def has_explanations(self) -> bool:
        return self.has(EXPLANATIONS)

    def explanation_part_path(self, index: int) -> Path:
        return self.path / EXPLAIN_PARTS / f"part_{index:05d}.parquet"

    def explanation_parts(self) -> dict[int, Path]:
        """The finished chunks of an unfinished explanation run, by chunk index."""
        return {int(p.stem.split("_")[1]): p for p in sorted((self.path / EXPLAIN_PARTS).glob("part_*.parquet"))}

    def write_explanation_part(self, index: int, frame) -> Path:
        return write_parquet(frame, self.explanation_part_path(index))

    def clear_explanation_parts(self) -> None:
        for path in self.explanation_parts().values():
            path.unlink(missing_ok=True)
        if (self.path / EXPLAIN_PARTS).exists():
            (self.path / EXPLAIN_PARTS).rmdir()


def list_analyses(root: Path | str) -> list[str]:
    """Analysis ids (``<run_id>/sae_<i>``) under ``root`` (an ``analyses/`` folder) that hold dashboards."""
    root = Path(root)
    table = AnalysisFolder(root).table_path(KINDS["dashboards"]).name
    return sorted(str(p.parent.relative_to(root)) for p in root.glob(f"**/{table}"))


def circuit_sets(root: Path | str) -> list[str]:
    """Names of the stored circuit analyses under ``root`` (an ``analyses/`` folder)."""
    summary = AnalysisFolder(root).summary_path.name
    return sorted(p.parent.name for p in (Path(root) / CIRCUITS).glob(f"*/{summary}"))
