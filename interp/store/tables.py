"""DuckDB queries over an analysis folder's Parquet tables (what the app's pages call).

Each query reads only the Parquet files it needs, with filters pushed down, so pages stay fast on a
65k-feature SAE. Table names and columns are documented in ``interp/ANALYSES.md``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interp.store.analysis_folder import EXPLANATIONS, AnalysisFolder, list_analyses  # noqa: F401  (list_analyses: part of this API)
from interp.store.errors import DictionaryError, InputError

ORDERABLE = ("feature", "frequency", "max_activation", "mean_activation", "n_fires")


def _table_path(folder: Path | str, name: str) -> Path:
    """``folder/<name>.parquet`` resolved, refused when it is a link out of its folder (an analysis folder's
    tables live in it, so a caller that checked the folder has checked every table)."""
    path = AnalysisFolder(folder).table_path(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `workbench analyze features` for this SAE first")
    resolved = path.resolve()
    if resolved.parent != Path(folder).resolve():
        raise TableError(f"{path} is a link out of its analysis folder; tables are read only from inside it")
    AnalysisFolder(folder).verified_path(name)  # dashboards and geometry: only tables their complete record lists
    return resolved


def _table(folder: Path | str, name: str) -> str:
    """The table as a quoted SQL string literal."""
    return "'" + str(_table_path(folder, name)).replace("'", "''") + "'"


_local = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB connection per thread (the app serves each session from its own thread):
    opening one costs more than a one-feature query."""
    if getattr(_local, "con", None) is None:
        _local.con = duckdb.connect()
    return _local.con


def query(sql: str, params: list | None = None) -> pd.DataFrame:
    return _connection().execute(sql, params or []).df()


def check_feature(feature: int, d_sae: int) -> None:
    if not 0 <= feature < d_sae:
        raise DictionaryError(f"feature {feature} is out of range: this dictionary has features 0..{d_sae - 1}")


class TableError(RuntimeError):
    """A stored table that cannot be read (damaged, truncated, not Parquet)."""


def n_features(folder: Path | str) -> int:
    """Rows of ``features.parquet`` (one per feature), from the file's footer: no scan."""
    path = _table_path(folder, "features")
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except pa.ArrowException as error:
        raise TableError(f"{path} is not a readable Parquet table ({error})") from error


def feature_list(folder: Path | str, min_frequency: float = 0.0, max_frequency: float = 1.0,
                 label_contains: str | None = None, order_by: str = "frequency", descending: bool = True,
                 limit: int = 100, offset: int = 0) -> pd.DataFrame:
    """One row per feature (id, label, frequency, activations), filtered and sorted, one page at a time."""
    if order_by not in ORDERABLE:
        raise InputError(f"cannot order by '{order_by}'; use one of {ORDERABLE}")
    where, params = ["frequency >= ?", "frequency <= ?"], [min_frequency, max_frequency]
    if label_contains:
        where.append("label ilike ?")
        params.append(f"%{label_contains}%")
    return query(
        f"select feature, label, frequency, n_fires, mean_activation, max_activation "
        f"from {_table(folder, 'features')} where {' and '.join(where)} "
        f"order by {order_by} {'desc' if descending else 'asc'}, feature limit ? offset ?",
        params + [limit, offset])


DASHBOARD_TABLES = {"features": "feature", "examples": "kind desc, rank", "histograms": "bin",
                    "logits": "sign desc, rank", "neighbours": "rank", "cooccurrence": "rank"}


def feature_dashboard(folder: Path | str, feature: int,
                      names: tuple[str, ...] = tuple(DASHBOARD_TABLES)) -> dict[str, pd.DataFrame]:
    """Every stored row about one feature (or only the tables in ``names``): summary, examples,
    histogram, logits, neighbours, co-firing."""
    check_feature(feature, n_features(folder))
    unknown = set(names) - set(DASHBOARD_TABLES)
    if unknown:
        raise InputError(f"no dashboard table {sorted(unknown)}; choose from {list(DASHBOARD_TABLES)}")
    out = {}
    for name in names:
        order = DASHBOARD_TABLES[name]
        if name == "features" or AnalysisFolder(folder).expects(name):  # a listed table that is damaged: an error
            out[name] = query(f"select * from {_table(folder, name)} where feature = ? order by {order}", [feature])
    return out


def search_by_token(folder: Path | str, token: str, limit: int = 50) -> pd.DataFrame:
    """Features whose top examples activate on ``token`` (exact, whitespace-trimmed), most such examples first."""
    return query(
        f"select e.feature, any_value(f.label) as label, count(*) as n_examples, max(e.activation) as max_activation "
        f"from {_table(folder, 'examples')} e join {_table(folder, 'features')} f using (feature) "
        f"where e.kind = 'top' and trim(e.token) = trim(?) group by e.feature "
        f"order by n_examples desc, max_activation desc limit ?", [token, limit])


def search_by_logit(folder: Path | str, token: str, limit: int = 50) -> pd.DataFrame:
    """Features whose decoder most promotes ``token`` through the unembedding, largest logit first."""
    return query(
        f"select l.feature, f.label, l.logit, l.rank from {_table(folder, 'logits')} l "
        f"join {_table(folder, 'features')} f using (feature) "
        f"where l.sign = 'positive' and trim(l.token) = trim(?) order by l.logit desc limit ?", [token, limit])


def matched_features(folder: Path | str, feature: int) -> pd.DataFrame:
    """This feature's Hungarian matches in every SAE it was matched with (``matches.parquet``): the other
    members of its ensemble and any SAE compared with ``workbench analyze compare`` (``other_member`` -1)."""
    check_feature(feature, n_features(folder))
    return query(f"select * from {_table(folder, 'matches')} where feature = ? order by other_member", [feature])


EXPLANATION_ORDER = ("detection", "detection_hard", "fuzzing", "simulation", "feature", "n_fires")
EXPLANATION_COLUMNS = ("feature, status, explanation, detection, baseline_detection, detection_hard, "
                       "baseline_detection_hard, fuzzing, baseline_fuzzing, simulation, baseline_simulation, n_fires")


def explanation_of(folder: Path | str, feature: int) -> pd.DataFrame:
    """This feature's row of ``explanations`` (text, rule, scores, baselines, example counts)."""
    check_feature(feature, n_features(folder))
    return query(f"select * from {_table(folder, EXPLANATIONS)} where feature = ?", [feature])


def explained_features(folder: Path | str, words: str = "", order_by: str = "detection", descending: bool = True,
                       limit: int = 100) -> pd.DataFrame:
    """Features whose explanation holds every word of ``words`` (case-insensitive), sorted by a score (NaN
    scores, the dead and too rare, last)."""
    if order_by not in EXPLANATION_ORDER:
        raise InputError(f"cannot order explanations by '{order_by}'; use one of {EXPLANATION_ORDER}")
    terms = words.split()
    where = " and ".join(["explanation ilike ?"] * len(terms)) or "true"
    return query(
        f"select {EXPLANATION_COLUMNS} from {_table(folder, EXPLANATIONS)} where {where} "
        f"order by {order_by} {'desc' if descending else 'asc'} nulls last, feature limit ?",
        [f"%{t}%" for t in terms] + [limit])
