"""``AnalysisFolder``: the owner of an analysis folder, the only module that spells its file names.

Two kinds live under a workspace's ``analyses/``: an SAE's analyses ``analyses/<run_id>/sae_<i>/``
(dashboard, geometry, evaluation and matching tables, plus ``meta.json``) and a circuit analysis of
a prompt set ``analyses/circuits/<set>/`` (tables plus ``summary.json`` and graph JSON files).
Every table is ``<name>.parquet`` and every JSON document ``<name>.json``; tables and columns are
listed in ``interp/ANALYSES.md`` and ``interp/CIRCUITS.md``. Writers are atomic (``interp.store.io``);
imports stay light (no torch) so that the app's readers can use this module.

Dashboards and geometry are each whole or absent. ``write_analysis`` removes the kind's record
(``meta.json`` for dashboards, ``geometry.json`` for geometry) first, writes the tables, removes the
kind's tables the new options no longer make, and writes the record last, listing every table with
its sha256 and size and the options that made it. Readers trust only the tables a record lists
(``has``, ``verified_path``: sizes always, checksums once per file version), so a kill at any moment
leaves the previous complete analysis readable or none, never a mix; geometry made from dashboards
counts that were since rewritten is stale, hence absent.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from interp.store.errors import InputError
from interp.store.io import (
    FileReadError,
    fsync_directory,
    read_json,
    sha256_file,
    write_json,
    write_parquet,
    write_safetensors,
)
from interp.store.jobs import Job
from interp.store.names import is_release_spec, release_analysis_id

META = "meta"  # how the dashboards were made: sae, cache, hook, n_tokens, n_blocks, d_sae, d_in, config
SUMMARY = "summary"  # a circuit analysis's summary
CIRCUITS = "circuits"  # analyses/circuits/<set>/
GRAPHS = "graphs"  # analyses/graphs/<slug>/: one attribution graph each
GRAPH = "attribution_graph"  # its tensors (.safetensors) and metadata, scores, checks (.json)
GRAPH_NODES, GRAPH_EDGES, GRAPH_CHECKS = "graph_nodes", "graph_edges", "graph_checks"  # its tables
CIRCUIT_TRACER = "circuit_tracer"  # the export circuit-tracer's viewer serves: <slug>.json + graph-metadata.json
CIRCUIT_TRACER_INDEX = "graph-metadata.json"
EVAL_DIR = "eval"  # analyses/<run_id>/sae_<i>/eval/<metric>.json: SAEBench-layout evaluation outputs
EVAL_RESULTS = "eval_results"  # analyses/eval_results.parquet: every evaluated SAE's metrics, one row per value
# which analyses a folder holds, by the table each one always writes
KINDS = {"dashboards": "features", "geometry": "geometry_map", "matches": "matches", "evaluation": "eval_summary"}
RECORDS = {"dashboards": META, "geometry": "geometry"}  # kinds written whole or not at all -> their record
DASHBOARD_TABLES = ("features", "examples", "histograms", "logits", "neighbours", "cooccurrence",
                    "cooccurrence_counts")
GEOMETRY_PREFIX = "geometry_"
COUNTS = "cooccurrence_counts"  # the dashboards table geometry's lobes are computed from


class IncompleteAnalysisError(InputError):
    """A table no complete analysis vouches for (interrupted, stale, damaged or copied in part)."""


def recorded_kind(table: str) -> str | None:
    """The recorded kind a table belongs to (``dashboards`` / ``geometry``), or None for a table kept alone."""
    if table in DASHBOARD_TABLES:
        return "dashboards"
    return "geometry" if table.startswith(GEOMETRY_PREFIX) else None


_checked: dict[tuple[str, int, int], str] = {}  # (path, mtime_ns, size) -> sha256: each file version hashed once
_checked_lock = threading.Lock()


def _digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _checked_lock:
        known = _checked.get(key)
    if known is None:
        known = sha256_file(path)
        with _checked_lock:
            _checked[key] = known
    return known


@dataclass(frozen=True)
class AnalysisRecord:
    """A complete analysis of one kind: its tables (name -> sha256 and bytes) and what made it (``values``:
    the whole record, e.g. dashboards' sae, cache, hook, n_tokens, n_blocks, d_sae, d_in, logits, config)."""

    kind: str
    tables: dict[str, dict]
    values: dict
EXPLANATIONS = "explanations"  # every feature's explanation, scores and baselines (interp.explain)
EXPLAIN_EXAMPLES = "explain_examples"  # the training and held-out windows they were made and scored on
EXPLAIN_RUN = "explain_run"  # how: example and explainer configs, token counts (the resume check)
EXPLAIN_PARTS = "explanations.parts"  # finished chunks of features of an unfinished run, one table each


def analysis_id(folder: Path | str) -> str:
    """``<run_id>/sae_<i>``: the last two parts of an SAE or analysis folder (resolved); for a SAELens
    release SAE, ``saelens/<release>--<sae_id>``."""
    if is_release_spec(folder):
        return release_analysis_id(folder)
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

    @classmethod
    def graph(cls, out_root: Path | str, slug: str) -> AnalysisFolder:
        return cls(Path(out_root) / GRAPHS / slug)

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

    def record_path(self, kind: str) -> Path:
        return self.json_path(RECORDS[kind])

    def record(self, kind: str) -> AnalysisRecord | None:
        """The complete analysis of ``kind`` here, or None (never made, interrupted, damaged record, or geometry
        computed from dashboards counts that have since been rewritten)."""
        path = self.record_path(kind)
        try:
            values = read_json(path, f"{kind} record") if path.exists() else None
        except InputError:
            return None
        if not isinstance(values, dict) or not isinstance(values.get("tables"), dict) or not all(
                isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("bytes"), int)
                for e in values["tables"].values()):
            return None  # no record, or one older versions wrote without its table list
        if kind == "geometry" and values.get("counts_sha256") is not None:
            dashboards = self.record("dashboards")
            counts = dashboards.tables.get(COUNTS) if dashboards else None
            if counts is None or counts["sha256"] != values["counts_sha256"]:
                return None  # its lobes came from counts that are no longer these dashboards'
        return AnalysisRecord(kind, values["tables"], values)

    def _entry(self, table: str) -> dict | None:
        kind = recorded_kind(table)
        record = self.record(kind) if kind else None
        return record.tables.get(table) if record else None

    def has(self, table: str) -> bool:
        """Whether the table is here and, for dashboards and geometry, listed by its complete analysis at its
        recorded size (``verified_path`` also checks its checksum)."""
        path = self.table_path(table)
        if not path.exists():
            return False
        if recorded_kind(table) is None:
            return True
        entry = self._entry(table)
        return entry is not None and path.stat().st_size == entry["bytes"]

    def expects(self, table: str) -> bool:
        """Whether a reader should find the table: listed by its kind's complete record (reading it then reports
        any damage), or, for a table kept alone, present."""
        return self._entry(table) is not None if recorded_kind(table) else self.table_path(table).exists()

    def verified_path(self, table: str) -> Path:
        """The table's file once its record vouches for it (listed, same size, same sha256); else
        ``IncompleteAnalysisError`` naming the file and the command that remakes it."""
        path = self.table_path(table)
        kind = recorded_kind(table)
        if kind is None:
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing")
            return path
        entry = self._entry(table)
        remake = "workbench analyze features" if kind == "dashboards" else "workbench analyze geometry"
        if entry is None:
            raise IncompleteAnalysisError(f"{path} is not part of a complete {kind} analysis (interrupted, stale or "
                                          f"copied in part); run `{remake}` for this SAE again")
        if not path.exists() or path.stat().st_size != entry["bytes"] or _digest(path) != entry["sha256"]:
            raise IncompleteAnalysisError(f"{path} is missing or fails its checksum (damaged since the {kind} "
                                          f"analysis wrote it); run `{remake}` for this SAE again")
        return path

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

    def partial(self, kind: str) -> list[str]:
        """Tables of ``kind`` on disk that no complete record lists (what an interrupted run left)."""
        record = self.record(kind)
        listed = set(record.tables) if record else set()
        return [name for name in self.tables() if recorded_kind(name) == kind and name not in listed]

    # reading
    def meta(self) -> dict:
        """The dashboards' record (``meta.json``), or ``{}`` without complete dashboards here."""
        record = self.record("dashboards")
        return record.values if record else {}

    def read_json(self, name: str) -> dict:
        return read_json(self.json_path(name), f"{name} of analysis {self.path}")

    def read_table(self, name: str, columns: list[str] | None = None):
        import pandas as pd

        return pd.read_parquet(self.verified_path(name), columns=columns)

    # writing (atomic)
    def write_tables(self, tables: dict, by_feature: bool = True) -> AnalysisFolder:
        """Each frame as a table of this folder; ``by_feature``: rows sorted by feature for fast lookups. Tables
        of a recorded kind go through ``write_analysis`` instead."""
        recorded = sorted(name for name in tables if recorded_kind(name))
        if recorded:
            raise ValueError(f"tables {recorded} belong to a recorded analysis: write them with write_analysis")
        self.path.mkdir(parents=True, exist_ok=True)
        for name, frame in tables.items():
            write_parquet(frame, self.table_path(name), by_feature)
        return self

    def write_analysis(self, kind: str, tables: dict, values: dict, by_feature: bool = True) -> AnalysisRecord:
        """Replace this folder's ``kind`` analysis by ``tables`` whole: record removed first, tables written,
        the kind's tables not in ``tables`` removed, the record (``values`` + every table's sha256 and size)
        written last. The caller holds the folder's writer lock (``interp.store.locks.writing``)."""
        wrong = sorted(name for name in tables if recorded_kind(name) != kind)
        if wrong:
            raise ValueError(f"tables {wrong} are not {kind} tables")
        self.path.mkdir(parents=True, exist_ok=True)
        record = self.record_path(kind)
        if record.exists():
            record.unlink()
            fsync_directory(self.path)  # from here on the kind is absent until its new record lands
        listed = {}
        for name, frame in tables.items():
            path = write_parquet(frame, self.table_path(name), by_feature)
            listed[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for name in self.tables():
            if recorded_kind(name) == kind and name not in tables:
                os.unlink(self.table_path(name))  # made by earlier options: never left to be read as current
        write_json(record, {**values, "tables": listed}, durable=True)
        return AnalysisRecord(kind, listed, {**values, "tables": listed})

    def write_json(self, name: str, payload: dict, sort_keys: bool = True) -> Path:
        if name in RECORDS.values():
            raise ValueError(f"{name}.json is an analysis record: write_analysis writes it")
        return write_json(self.json_path(name), payload, sort_keys=sort_keys)

    # a circuit analysis (analyses/circuits/<set>/): whole or absent, its summary written last
    def begin_circuits(self) -> dict[str, tuple[int, int]]:
        """Mark this prompt set's analysis absent before any of its files is rewritten: the summary (what lists the
        set) removed first, then the files the earlier run's summary lists as its own (nothing else: ``--out`` may
        name a folder that holds other files). A killed rerun then leaves the set absent, never an old summary over
        a mix of old and new tables. Returns what else the folder holds (name -> inode, mtime) for
        ``finish_circuits``; the caller holds the writer lock."""
        self.path.mkdir(parents=True, exist_ok=True)
        earlier = []
        if self.summary_path.exists():
            try:
                listed = read_json(self.summary_path, "circuit summary").get("files", [])
                earlier = [name for name in listed if isinstance(name, str) and Path(name).name == name]
            except (FileReadError, AttributeError):  # a damaged summary: remove it, keep the files it cannot name
                earlier = []
            self.summary_path.unlink()
            fsync_directory(self.path)
        for name in earlier:
            if name.endswith((".parquet", ".json")):
                (self.path / name).unlink(missing_ok=True)
        return self._file_versions()

    def _file_versions(self) -> dict[str, tuple[int, int]]:
        """Tables and JSON files here, name -> (inode, mtime): an atomic rewrite (a rename) changes both."""
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in self.path.iterdir()
                if p.is_file() and p.suffix in (".parquet", ".json") and p.name != self.summary_path.name}

    def finish_circuits(self, summary: dict, before: dict[str, tuple[int, int]]) -> Path:
        """The summary, durably and last, listing the files written since ``begin_circuits`` returned ``before``
        (the next rerun removes those first): from here on the prompt set is listed (``circuit_sets``) and whole."""
        made = sorted(name for name, version in self._file_versions().items() if before.get(name) != version)
        return write_json(self.summary_path, {**summary, "files": made}, sort_keys=False, durable=True)

    # an attribution graph (analyses/graphs/<slug>/)
    @property
    def graph_tensors_path(self) -> Path:
        return self.path / f"{GRAPH}.safetensors"

    @property
    def has_graph(self) -> bool:
        return self.graph_tensors_path.exists() and self.json_path(GRAPH).exists()

    def write_graph(self, tensors: dict, meta: dict) -> AnalysisFolder:
        """The graph's tensors and its metadata (scores, supernodes, ...) whole or not at all: the old JSON removed
        first, the new one written last, so a reader that finds it finds the tensors made with it."""
        self.discard_graph()
        write_safetensors(self.graph_tensors_path, tensors)
        write_json(self.json_path(GRAPH), meta, durable=True)
        return self

    def discard_graph(self) -> None:
        """Mark the graph absent (its JSON removed) before any of its files is rewritten."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.json_path(GRAPH).exists():
            self.json_path(GRAPH).unlink()
            fsync_directory(self.path)

    def read_graph_meta(self) -> dict:
        """A stored graph's metadata (its JSON: prompt, format version, summary) without its tensors."""
        return read_json(self.json_path(GRAPH), f"attribution graph of {self.path}")

    def read_graph(self) -> tuple[dict, dict]:
        """``(tensors, meta)`` of a stored graph (safetensors and JSON only)."""
        from safetensors.torch import load_file  # torch only when a graph is read, not when the app lists folders

        meta = self.read_graph_meta()
        return load_file(str(self.graph_tensors_path)), meta

    def circuit_tracer_dir(self) -> Path:
        return self.path / CIRCUIT_TRACER

    def write_circuit_tracer(self, slug: str, graph_json: dict) -> Path:
        """circuit-tracer's graph files: ``<slug>.json`` and the index its viewer lists graphs from."""
        folder = self.circuit_tracer_dir()
        write_json(folder / f"{slug}.json", graph_json, sort_keys=False)
        write_json(folder / CIRCUIT_TRACER_INDEX, {"graphs": [graph_json["metadata"]]}, sort_keys=False)
        return folder / f"{slug}.json"

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
    """Analysis ids (``<run_id>/sae_<i>``) under ``root`` (an ``analyses/`` folder) whose dashboards are complete
    (their record written; a table damaged since is then reported by name when read, not hidden)."""
    root = Path(root)
    record = AnalysisFolder(root).record_path("dashboards").name
    return sorted(str(p.parent.relative_to(root)) for p in root.glob(f"**/{record}")
                  if AnalysisFolder(p.parent).record("dashboards") is not None)


def graph_slugs(root: Path | str) -> list[str]:
    """Names of the stored attribution graphs under ``root`` (an ``analyses/`` folder)."""
    return sorted(p.parent.name for p in (Path(root) / GRAPHS).glob(f"*/{GRAPH}.json"))


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
