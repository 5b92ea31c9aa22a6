"""Cached readers: Parquet through DuckDB (``interp.store.tables``), JSON and metrics, keyed by file mtime.

A file that cannot be read (truncated, not Parquet, bad JSON) stops the page with ``st.error``
naming the file and the command that rewrites it, never a traceback.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow
import streamlit as st

from app.ui.workspace import UnsafePathError, inside, workspace_root
from interp.store import tables
from interp.store.analysis_folder import AnalysisFolder
from interp.store.errors import InputError
from interp.store.run_folder import RunFolder

# a damaged file, or a table no complete analysis lists (InputError: IncompleteAnalysisError, RunFileError, ...)
UNREADABLE = (tables.TableError, InputError, duckdb.Error, pyarrow.ArrowException, json.JSONDecodeError,
              UnicodeDecodeError, PermissionError, IsADirectoryError, NotADirectoryError)


def readable(reader):
    """Refuse a path that resolves outside the workspace, and turn an unreadable file under ``reader`` into an
    ``st.error`` with guidance; either stops the page."""
    @functools.wraps(reader)
    def guarded(path, *args, **kwargs):
        try:
            inside(workspace_root(), path)
        except UnsafePathError as error:
            st.error(f"Refused: {error}")
            st.stop()
        try:
            return reader(path, *args, **kwargs)
        except UNREADABLE as error:
            st.error(f"Cannot read `{path}`: {error}\n\nThe file is damaged or was not "
                     "written by the workbench. Rewrite it with the command that made it (e.g. `workbench analyze "
                     "features runs/<run_id>` for dashboards, `workbench analyze geometry ...` for maps).")
            st.stop()

    return guarded


def _stamp(path: Path) -> float:
    """Part of every cache key, so a rewritten file is read again."""
    return path.stat().st_mtime_ns if path.exists() else 0.0


def _stamp_folder(folder: Path) -> float:
    return max((p.stat().st_mtime_ns for p in AnalysisFolder(folder).table_files()), default=0)


@st.cache_data(show_spinner=False, max_entries=256)
def _parquet(path: str, stamp: float, where: str = "", params: tuple = (), columns: str = "*",
             order: str = "") -> pd.DataFrame:
    sql = f"select {columns} from read_parquet(?)" + (f" where {where}" if where else "") + \
          (f" order by {order}" if order else "")
    return tables.query(sql, [path, *params])


@readable
def parquet(path: Path, where: str = "", params: tuple = (), columns: str = "*", order: str = "") -> pd.DataFrame:
    """Rows of one Parquet file (filters pushed down by DuckDB); ``where`` is ours, values go in ``params``."""
    if not path.exists():
        raise FileNotFoundError(path)
    AnalysisFolder(path.parent).verified_path(path.stem)  # dashboards and geometry: only what their record lists
    return _parquet(str(path), _stamp(path), where, tuple(params), columns, order)


@st.cache_data(show_spinner=False, max_entries=64)
def _features(folder: str, stamp: float, min_frequency: float, label: str, order_by: str, limit: int) -> pd.DataFrame:
    return tables.feature_list(folder, min_frequency=min_frequency, label_contains=label or None,
                               order_by=order_by, limit=limit)


@readable
def feature_list(folder: Path, min_frequency: float = 0.0, label: str = "", order_by: str = "frequency",
                 limit: int = 200) -> pd.DataFrame:
    return _features(str(folder), _stamp_folder(folder), min_frequency, label, order_by, limit)


@st.cache_data(show_spinner=False, max_entries=32)
def _n_features(folder: str, stamp: float) -> int:
    return tables.n_features(folder)


@readable
def n_features(folder: Path) -> int:
    return _n_features(str(folder), _stamp_folder(folder))


COMPACT = ("features", "examples")  # what a side-by-side (compact) dashboard shows


@st.cache_data(show_spinner=False, max_entries=256)
def _dashboard(folder: str, stamp: float, feature: int, compact: bool) -> dict[str, pd.DataFrame]:
    if compact:
        return tables.feature_dashboard(folder, feature, names=COMPACT)
    out = tables.feature_dashboard(folder, feature)
    if AnalysisFolder(folder).has("matches"):
        out["matches"] = tables.matched_features(folder, feature)
    return out


@readable
def dashboard(folder: Path, feature: int, compact: bool = False) -> dict[str, pd.DataFrame]:
    """Every stored table row about one feature (``interp.store.tables.feature_dashboard``) plus its matches;
    ``compact``: only its summary and examples."""
    return _dashboard(str(folder), _stamp_folder(folder), int(feature), compact)


@st.cache_data(show_spinner=False, max_entries=64)
def _search(folder: str, stamp: float, kind: str, token: str) -> pd.DataFrame:
    return tables.search_by_token(folder, token) if kind == "token" else tables.search_by_logit(folder, token)


@readable
def search(folder: Path, kind: str, token: str) -> pd.DataFrame:
    """Features that fire on (``kind='token'``) or promote (``kind='logit'``) a token."""
    return _search(str(folder), _stamp_folder(folder), kind, token)


@st.cache_data(show_spinner=False, max_entries=256)
def _explanation(folder: str, stamp: float, feature: int) -> pd.DataFrame:
    return tables.explanation_of(folder, feature)


@readable
def explanation(folder: Path, feature: int) -> pd.DataFrame:
    """The feature's stored explanation and scores (one row), or an empty frame when none were made."""
    if not AnalysisFolder(folder).has_explanations:
        return pd.DataFrame()
    return _explanation(str(folder), _stamp_folder(folder), int(feature))


@st.cache_data(show_spinner=False, max_entries=64)
def _explained(folder: str, stamp: float, words: str, order_by: str, limit: int) -> pd.DataFrame:
    return tables.explained_features(folder, words, order_by, limit=limit)


@readable
def explained_features(folder: Path, words: str = "", order_by: str = "detection", limit: int = 200) -> pd.DataFrame:
    """Features by explanation words, best score first (``interp.store.tables.explained_features``)."""
    return _explained(str(folder), _stamp_folder(folder), words, order_by, limit)


@st.cache_data(show_spinner=False, max_entries=64)
def _json(path: str, stamp: float) -> dict:
    value = json.loads(Path(path).read_text())
    if not isinstance(value, dict):
        raise InputError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


@readable
def read_json(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(path)
    return _json(str(path), _stamp(path))


@st.cache_data(show_spinner=False, max_entries=16)
def _metrics(path: str, stamp: float) -> pd.DataFrame:
    rows = list(RunFolder(Path(path).parent).read_metrics().rows)  # checked; a line cut short by a kill skipped
    frame = pd.json_normalize(rows, sep="_") if rows else pd.DataFrame()
    if "members" in frame:
        for i in range(max((len(m) for m in frame["members"] if isinstance(m, list)), default=0)):
            for key in ("fvu", "l0", "dead_fraction", "mse"):
                frame[f"member{i}_{key}"] = [m[i].get(key) if isinstance(m, list) and len(m) > i else None
                                             for m in frame["members"]]
        frame = frame.drop(columns="members")
    return frame


@readable
def metrics(run: Path) -> pd.DataFrame:
    """``metrics.jsonl`` as a frame (one row per logged step; ``member<i>_<metric>`` columns for ensembles)."""
    path = RunFolder(run).metrics_path
    if not path.exists():
        return pd.DataFrame()
    inside(workspace_root(), path)  # a link out of the workspace is refused, not read
    return _metrics(str(path), _stamp(path))


@st.cache_resource(show_spinner=False, max_entries=8)
def _graph(folder: str, stamp: float):
    from interp.pipeline.attribution import read_graph

    return read_graph(folder)


@readable
def stale_graph(folder: Path):
    """The ``StaleGraphError`` of a stored graph in another format version, None when it can be drawn (JSON only)."""
    from interp.pipeline.attribution import stale_graph as check

    return check(folder)


@readable
def attribution_graph(folder: Path):
    """A stored attribution graph and its summary (``interp.pipeline.attribution.read_graph``)."""
    return _graph(str(folder), _stamp_folder(folder))


@readable
def pruned_graph(folder: Path, node_threshold: float, edge_threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The graph's kept nodes and edges at these thresholds (circuit-tracer's pruning; milliseconds at demo size)."""
    from interp.circuits.attribution.prune import prune_graph

    graph, _ = _graph(str(folder), _stamp_folder(folder))
    result = prune_graph(graph, node_threshold, edge_threshold)
    kept = result.node_mask.nonzero().flatten().tolist()
    nodes = pd.DataFrame([{"node": n, **graph.describe(n), "influence": float(result.influence[n]),
                           "activation": float(graph.activations[n]) if n < graph.n_features else float("nan")}
                          for n in kept])
    targets, sources = result.edge_mask.nonzero(as_tuple=True)
    edges = pd.DataFrame({"target": targets.numpy(), "source": sources.numpy(),
                          "weight": graph.adjacency[targets, sources].numpy()})
    return nodes, edges


@readable
def eval_results(path: Path) -> pd.DataFrame:
    """The workspace's ``eval_results`` table (``interp.store.analysis_folder.eval_table_path``), one row per value."""
    if not path.exists():
        raise FileNotFoundError(path)
    return _parquet(str(path), _stamp(path))
