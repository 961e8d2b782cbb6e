"""The DuckDB side every view shares: a run's file version, cursors with the run's
per-sample summary registered, and score names checked before they become SQL.

Per-sample views read the materialised ``summary.parquet`` of a compacted run; for a
run that is still training the summary is derived from its live segments
(``store/sql/summary.sql``) once per version of its files.

Score names are checked against the registry ``store.scores.SCORES`` before they are
used as column names; every value goes in as a ``$parameter``.
"""

from __future__ import annotations

import functools
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from store.errors import StoreError
from store.layout import HEARTBEAT_FILE, Store
from store.queries import SUMMARY, run_summary
from store.schema import select_list
from store.scores import get_score


def run_version(store: Store, run_id: str) -> tuple[tuple[str, int, int], ...]:
    """(relative path, mtime_ns, size) of every file of a run: changes when it is written.

    Cheap (one directory walk); dashboards key their caches on it so that a live run
    refreshes and a finished one is read once.
    """
    run_path = store.run_dir(run_id)
    entries = []
    for path in sorted(run_path.rglob("*")):
        if path.name.endswith(".tmp") or path.name == HEARTBEAT_FILE:  # a heartbeat changes no data
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # a segment compacted away while we listed
            continue
        if path.is_file():
            entries.append((str(path.relative_to(run_path)), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


@functools.lru_cache(maxsize=8)
def _live_summary(root: str, run_id: str, version: tuple) -> pa.Table:
    del version  # part of the cache key only
    frame = run_summary(Store(root), run_id)
    return pa.Table.from_pandas(frame, preserve_index=False)


#: One in-memory database per process; each query runs on its own cursor (a cheap,
#: thread-safe connection to it) with the run's files registered cursor-locally.
_DATABASE = duckdb.connect()


def cursor() -> duckdb.DuckDBPyConnection:
    """A fresh cursor on the process's in-memory database; close it when done."""
    return _DATABASE.cursor()


def register_summary(con: duckdb.DuckDBPyConnection, store: Store, run_id: str, name: str) -> None:
    """Make ``name`` the run's per-sample summary on this cursor (materialised or live)."""
    materialised = store.run_dir(run_id) / "summary.parquet"
    if materialised.exists():
        # A summary materialised before a column existed reads it as NULL (store.queries.SUMMARY).
        relation = con.read_parquet(str(materialised))
        con.register(name, relation.select(select_list(SUMMARY, relation.columns)))
    else:
        con.register(name, _live_summary(str(store.root), run_id, run_version(store, run_id)))


def summary_cursor(store: Store, run_id: str) -> duckdb.DuckDBPyConnection:
    """A cursor with a view ``summary``: one row per training sample of the run."""
    con = cursor()
    register_summary(con, store, run_id, "summary")
    return con


def query_summary(store: Store, run_id: str, sql: str, parameters: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run ``sql`` against the run's view ``summary``; a DuckDB failure becomes a ``StoreError``."""
    con = summary_cursor(store, run_id)
    try:
        return con.execute(sql, parameters or {}).df()
    except duckdb.Error as error:
        raise StoreError(f"dashboard query failed on run {run_id!r}: {error}") from error
    finally:
        con.close()


def score_column(score: str) -> str:
    """The score's column name, quoted; only registered scores get here."""
    return f'"{get_score(score).name}"'


def hardness_sql(score: str) -> str:
    """SQL for the registry's "larger is harder" key of ``score`` (see store.scores.hardness)."""
    spec = get_score(score)
    value = f"{score_column(score)}::DOUBLE"
    key = value if spec.higher_is_harder else f"-{value}"
    if spec.never_learned_hardest:
        key = f"CASE WHEN never_learned THEN 'inf'::DOUBLE ELSE {key} END"
    return key
