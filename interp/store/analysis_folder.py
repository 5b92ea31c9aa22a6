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

from interp.store.io import read_json, write_json, write_safetensors, write_tables
from interp.store.jobs import Job

META = "meta"  # how the dashboards were made: sae, cache, hook, n_tokens, n_blocks, d_sae, d_in, config
SUMMARY = "summary"  # a circuit analysis's summary
CIRCUITS = "circuits"  # analyses/circuits/<set>/
GRAPHS = "graphs"  # analyses/graphs/<slug>/: one attribution graph each
GRAPH = "attribution_graph"  # its tensors (.safetensors) and metadata, scores, checks (.json)
GRAPH_NODES, GRAPH_EDGES, GRAPH_CHECKS = "graph_nodes", "graph_edges", "graph_checks"  # its tables
CIRCUIT_TRACER = "circuit_tracer"  # the export circuit-tracer's viewer serves: <slug>.json + graph-metadata.json
CIRCUIT_TRACER_INDEX = "graph-metadata.json"
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

    # an attribution graph (analyses/graphs/<slug>/)
    @property
    def graph_tensors_path(self) -> Path:
        return self.path / f"{GRAPH}.safetensors"

    @property
    def has_graph(self) -> bool:
        return self.graph_tensors_path.exists() and self.json_path(GRAPH).exists()

    def write_graph(self, tensors: dict, meta: dict) -> AnalysisFolder:
        """The graph's tensors and its metadata (the JSON last: a reader that finds it finds the tensors)."""
        write_safetensors(self.graph_tensors_path, tensors)
        write_json(self.json_path(GRAPH), meta, durable=True)
        return self

    def read_graph(self) -> tuple[dict, dict]:
        """``(tensors, meta)`` of a stored graph (safetensors and JSON only)."""
        from safetensors.torch import load_file  # torch only when a graph is read, not when the app lists folders

        meta = read_json(self.json_path(GRAPH), f"attribution graph of {self.path}")
        return load_file(str(self.graph_tensors_path)), meta

    def circuit_tracer_dir(self) -> Path:
        return self.path / CIRCUIT_TRACER

    def write_circuit_tracer(self, slug: str, graph_json: dict) -> Path:
        """circuit-tracer's graph files: ``<slug>.json`` and the index its viewer lists graphs from."""
        folder = self.circuit_tracer_dir()
        write_json(folder / f"{slug}.json", graph_json, sort_keys=False)
        write_json(folder / CIRCUIT_TRACER_INDEX, {"graphs": [graph_json["metadata"]]}, sort_keys=False)
        return folder / f"{slug}.json"


def list_analyses(root: Path | str) -> list[str]:
    """Analysis ids (``<run_id>/sae_<i>``) under ``root`` (an ``analyses/`` folder) that hold dashboards."""
    root = Path(root)
    table = AnalysisFolder(root).table_path(KINDS["dashboards"]).name
    return sorted(str(p.parent.relative_to(root)) for p in root.glob(f"**/{table}"))


def graph_slugs(root: Path | str) -> list[str]:
    """Names of the stored attribution graphs under ``root`` (an ``analyses/`` folder)."""
    return sorted(p.parent.name for p in (Path(root) / GRAPHS).glob(f"*/{GRAPH}.json"))


def circuit_sets(root: Path | str) -> list[str]:
    """Names of the stored circuit analyses under ``root`` (an ``analyses/`` folder)."""
    summary = AnalysisFolder(root).summary_path.name
    return sorted(p.parent.name for p in (Path(root) / CIRCUITS).glob(f"*/{summary}"))
