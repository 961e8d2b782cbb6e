"""A run's tables as DuckDB views, and running a named ``.sql`` file against them.

Each query takes a cursor on the process's in-memory DuckDB database, registers the run's
tables as views over the files that exist right now, and runs a ``.sql`` file from
``store/sql`` with ``$name`` parameters. Views are built with DuckDB's relational API
(``read_parquet`` on a Python list of paths), so no path or user value is ever pasted
into SQL text. ``store.queries`` (the named queries) and ``store.compaction`` build on it.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import time
from typing import Any, Callable, Iterable, TypeVar

import duckdb
import pandas as pd

from store.errors import StoreError
from store.layout import Store
from store.schema import DEDUPLICATE_ON, SAMPLES, SEGMENT_TABLES, select_list

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Epoch bounds meaning "all epochs".
ALL_EPOCHS = (0, 2**31 - 1)


@functools.lru_cache(maxsize=None)
def load_sql(name: str) -> str:
    return importlib.resources.files("store").joinpath("sql", f"{name}.sql").read_text()


def retry_on_vanishing_files(function: Callable[[], T], attempts: int = 4) -> T:
    """Run ``function``; retry if a segment vanished under it (a run being compacted)."""
    for attempt in range(attempts):
        try:
            return function()
        except duckdb.IOException as error:
            if attempt == attempts - 1:
                raise StoreError(f"could not read the run's files: {error}") from error
            logger.debug("retrying a read after %s", error)
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


#: run.json's flag that the run's presentations hold no padding draws of a distributed
#: sampler (its recorder left them out, ``training.recording_padding``): every row stays,
#: so a sample a curriculum repeats on two ranks in one epoch keeps both presentations
PADDING_DROPPED = "padding_dropped"


def dedupe_tables(info: dict) -> set[str]:
    """The tables whose rows of several ranks are de-duplicated on read (``dedupe_clause``):
    all that have keys, less the presentations of a run that dropped its padding."""
    return {name for name in DEDUPLICATE_ON if not (name == "presentations" and info.get(PADDING_DROPPED))}


def dedupe_clause(keys: tuple[str, ...]) -> str:
    """Drop DistributedSampler's padding duplicates: where several ranks presented the
    same sample in one epoch, keep the lowest rank's rows. A sample presented several
    times by one rank in one epoch (``--keep-steps``, sampling with replacement) keeps
    every presentation."""
    return f"QUALIFY rank = min(rank) OVER (PARTITION BY {', '.join(keys)})"


def register_table(
    con: duckdb.DuckDBPyConnection, store: Store, run_id: str, table_name: str, dedupe: bool
) -> None:
    files = store.table_files(run_id, table_name)
    raw_name = f"{table_name}_raw"
    if files:
        # Files written before a column existed lack it: read by name, missing as null.
        relation = con.read_parquet([str(path) for path in files], union_by_name=True)
        con.register(raw_name, relation.select(select_list(SEGMENT_TABLES[table_name], relation.columns)))
    else:
        empty = SEGMENT_TABLES[table_name].empty_table()
        con.register(raw_name, empty)
    keys = DEDUPLICATE_ON.get(table_name)
    if dedupe and keys:
        # Identifiers come from the schema module's constants, never from input.
        con.execute(
            f"CREATE TEMP VIEW {table_name} AS SELECT * FROM {raw_name} {dedupe_clause(keys)}"
        )
    else:
        con.execute(f"CREATE TEMP VIEW {table_name} AS SELECT * FROM {raw_name}")


def register_samples(
    con: duckdb.DuckDBPyConnection, store: Store, run_id: str, has_presentations: bool
) -> None:
    path = store.run_dir(run_id) / "samples.parquet"
    if path.exists():
        con.register("samples", con.read_parquet(str(path)))
    elif has_presentations:
        # A run whose recorder was given no sample table: the labels it trained on,
        # with no injected noise to report.
        con.execute(
            "CREATE TEMP VIEW samples AS SELECT sample_id, any_value(label)::BIGINT AS label, "
            "any_value(label)::BIGINT AS original_label, false AS label_noisy "
            "FROM presentations GROUP BY sample_id"
        )
    else:
        con.register("samples", SAMPLES.empty_table())


#: The process's in-memory DuckDB database; every run query works on a cursor of it.
SHARED_DATABASE = duckdb.connect()


def run_connection(
    store: Store, run_id: str, tables: Iterable[str] = tuple(SEGMENT_TABLES)
) -> duckdb.DuckDBPyConnection:
    """A cursor on the process's in-memory database with views ``samples`` and the requested
    run tables, registered on the cursor alone (so threads never see each other's); close it
    when done. One database per process: opening a fresh one per query cost more than most
    queries (``benchmarks/bench_pages.py``)."""
    info = store.run_info(run_id)
    compacted = info.get("compacted", False)
    dedupe = dedupe_tables(info) if not compacted and int(info.get("world_size") or 1) > 1 else set()
    tables = tuple(tables)
    con = SHARED_DATABASE.cursor()
    for table_name in tables:
        register_table(con, store, run_id, table_name, table_name in dedupe)
    register_samples(con, store, run_id, "presentations" in tables)
    return con


def query_run(
    store: Store,
    run_id: str,
    sql_name: str,
    parameters: dict[str, Any] | None = None,
    tables: Iterable[str] = tuple(SEGMENT_TABLES),
) -> pd.DataFrame:
    """Run the named ``store/sql/<sql_name>.sql`` query against one run."""
    sql = load_sql(sql_name)
    tables = tuple(tables)

    def run() -> pd.DataFrame:
        con = run_connection(store, run_id, tables)
        try:
            return con.execute(sql, parameters or {}).df()
        finally:
            con.close()

    try:
        return retry_on_vanishing_files(run)
    except (duckdb.Error, StoreError) as error:
        damaged = store.damaged_file(run_id, tables)
        if damaged is not None:
            raise damaged from error
        if isinstance(error, StoreError):
            raise
        raise StoreError(f"query {sql_name!r} failed on run {run_id!r}: {error}") from error
