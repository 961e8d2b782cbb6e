"""Compaction: a finished run's segments merged into one sorted file per table, and what is
materialised beside them for readers (the per-sample summary, the per-sample labels).

``compact_run`` is what ``training.Recorder.finish`` (and ``trainmap repair``) call once a
run's writers are closed. DuckDB sorts and writes each compacted file itself, spilling to
its temporary directory past ``COMPACTION_SETTINGS``' memory limit, so a run of any length
compacts in bounded memory (``benchmarks/results/big_store.md``: 100 M rows).

Materialised per-sample files, read instead of scanning every presentation again:

- ``summary.parquet``: ``store/sql/summary.sql`` over all epochs (``store.queries.run_summary``);
- ``labels.parquet`` (``LABELS_FILE``): each sample's predicted label at its last
  presentation (``store/sql/predicted_labels.sql``) and its suggested label over the
  default window, the first half of the recorded epochs (``store/sql/suggested_labels.sql``;
  the window is in the file's metadata). ``materialised_predicted_labels`` and
  ``materialised_suggested_labels`` read it, ``None`` where it does not answer.

``Store.reopen_run`` (a resumed run) drops both; the next compaction rebuilds them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store.errors import StoreError
from store.files import atomic_path, write_parquet_atomic
from store.layout import LABELS_FILE, Store
from store.run_tables import ALL_EPOCHS, dedupe_clause, dedupe_tables, query_run, register_table
from store.schema import COMPACT_ORDER, DEDUPLICATE_ON, SEGMENT_TABLES, select_list

logger = logging.getLogger(__name__)

#: DuckDB settings of compaction: the memory it may hold before it spills to disk.
COMPACTION_SETTINGS = {"memory_limit": "1GB", "threads": 2, "temp_directory": str(Path(tempfile.gettempdir()) / "trainmap-duckdb")}

#: The columns of ``labels.parquet``: ``store.views.relabel.SUGGESTED_COLUMNS`` and the
#: predicted label (``store.views.samples.predicted_labels``).
LABEL_COLUMNS = (
    "sample_id", "label", "original_label", "label_noisy",
    "suggested_label", "suggested_confidence", "window_presentations", "predicted_label",
)
_WINDOW_KEYS = (b"trainmap.suggested_epoch_min", b"trainmap.suggested_epoch_max")


def compaction_sql(table_name: str, dedupe: bool = True) -> str:
    """The sorted rows of a table, in its schema's column order and types, de-duplicated
    across ranks when ``dedupe`` and the table has keys. Identifiers come from the schema
    module's constants, never from input."""
    schema = SEGMENT_TABLES[table_name]
    columns = select_list(schema, schema.names, cast=True)
    order = ", ".join(COMPACT_ORDER[table_name])
    keys = DEDUPLICATE_ON.get(table_name)
    if keys and dedupe:
        return f"SELECT {columns} FROM {table_name}_raw {dedupe_clause(keys)} ORDER BY {order}"
    if "rank" not in schema.names:  # sample_keys: every rank may have written the same key
        return f"SELECT DISTINCT {columns} FROM {table_name}_raw ORDER BY {order}"
    return f"SELECT {columns} FROM {table_name}_raw ORDER BY {order}"


def compact_run(store: Store, run_id: str) -> None:
    """Merge a run's segments into one sorted, de-duplicated file per table.

    Readers switch atomically: the compacted file appears (``os.replace``) before the
    segments are removed, and readers prefer it; a reader that listed segments just
    before they went retries (``retry_on_vanishing_files``). Then the per-sample
    summary over all epochs and the per-sample labels are materialised.
    """
    run_path = store.run_dir(run_id)
    pending = [t for t in SEGMENT_TABLES if not (run_path / f"{t}.parquet").exists()]
    dedupe = dedupe_tables(store.run_info(run_id))
    con = duckdb.connect(config=COMPACTION_SETTINGS)
    try:
        for table_name in pending:
            register_table(con, store, run_id, table_name, dedupe=False)
            # DuckDB sorts and writes the file itself, streaming, spilling to its temporary
            # directory past the memory limit: a run of any length compacts in bounded memory.
            relation = con.sql(compaction_sql(table_name, table_name in dedupe))
            with atomic_path(run_path / f"{table_name}.parquet") as tmp:
                relation.write_parquet(str(tmp), compression="zstd")
    except duckdb.Error as error:
        raise store.damaged_file(run_id) or StoreError(f"compacting run {run_id!r} failed: {error}") from error
    finally:
        con.close()
    store.update_run(run_id, compacted=True)
    for table_name in SEGMENT_TABLES:
        folder = run_path / table_name
        if folder.is_dir():
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    summary = query_run(
        store,
        run_id,
        "summary",
        {"epoch_min": ALL_EPOCHS[0], "epoch_max": ALL_EPOCHS[1]},
        tables=("presentations", "grand"),
    )
    write_parquet_atomic(
        run_path / "summary.parquet", pa.Table.from_pandas(summary, preserve_index=False), compact=True
    )
    materialise_labels(store, run_id)


def first_half(low: int, high: int) -> tuple[int, int]:
    """The first half of the epochs ``low..high`` (with the middle one of an odd count): the
    suggested labels' default window (``store.views.relabel.default_relabel_epochs``)."""
    return low, low + (high - low + 2) // 2 - 1


def materialise_labels(store: Store, run_id: str) -> None:
    """Write ``LABELS_FILE`` for a compacted run: predicted and suggested labels per sample
    (the suggestions over ``first_half`` of the recorded epochs), computed by the same SQL
    the live views run, so a reader gets the very values it would have computed."""
    run_path = store.run_dir(run_id)
    epochs = query_run(store, run_id, "recorded_epochs", tables=("presentations",))
    if epochs.empty or pd.isna(epochs["epoch_min"].iloc[0]):
        return  # no presentation: nothing to label
    low, high = first_half(int(epochs["epoch_min"].iloc[0]), int(epochs["epoch_max"].iloc[0]))
    suggested = query_run(store, run_id, "suggested_labels", {"epoch_min": low, "epoch_max": high},
                          tables=("presentations",))
    predicted = query_run(store, run_id, "predicted_labels", tables=("presentations",))
    frame = suggested.merge(predicted, on="sample_id", how="left")
    frame["suggested_label"] = frame["suggested_label"].astype("Int64")
    frame["suggested_confidence"] = frame["suggested_confidence"].astype(float)
    frame["predicted_label"] = frame["predicted_label"].astype("Int64")
    table = pa.Table.from_pandas(frame[list(LABEL_COLUMNS)], preserve_index=False)
    metadata = {**(table.schema.metadata or {}), _WINDOW_KEYS[0]: str(low).encode(), _WINDOW_KEYS[1]: str(high).encode()}
    write_parquet_atomic(run_path / LABELS_FILE, table.replace_schema_metadata(metadata), compact=True)


def _read_labels(store: Store, run_id: str, columns: list[str]) -> tuple[pd.DataFrame, tuple[int, int]] | None:
    """``columns`` of the run's ``LABELS_FILE`` and its suggestion window; None when the run has
    none (not compacted, compacted before the file existed, reopened) or it cannot be read."""
    path = store.run_dir(run_id) / LABELS_FILE
    if not store.run_info(run_id).get("compacted") or not path.exists():
        return None
    try:
        table = pq.read_table(path, columns=columns)
        metadata = pq.read_schema(path).metadata or {}
        window = (int(metadata[_WINDOW_KEYS[0]]), int(metadata[_WINDOW_KEYS[1]]))
    except FileNotFoundError:
        return None  # reopened under us
    except (OSError, pa.ArrowException, KeyError, ValueError) as error:
        logger.warning("ignoring run %s's %s (%s); computing the labels from its presentations",
                       run_id, LABELS_FILE, " ".join(str(error).split()))
        return None
    return table.to_pandas(), window


def materialised_predicted_labels(store: Store, run_id: str) -> pd.DataFrame | None:
    """``sample_id, predicted_label`` (Int64) from ``LABELS_FILE``, or None (compute them)."""
    read = _read_labels(store, run_id, ["sample_id", "predicted_label"])
    return None if read is None else read[0]


def materialised_suggested_labels(store: Store, run_id: str, epochs: tuple[int, int]) -> pd.DataFrame | None:
    """The suggested labels over ``epochs`` (``store.views.relabel.SUGGESTED_COLUMNS``) from
    ``LABELS_FILE`` when it holds that window, else None (compute them)."""
    read = _read_labels(store, run_id, list(LABEL_COLUMNS[:-1]))
    if read is None or read[1] != (int(epochs[0]), int(epochs[1])):
        return None
    return read[0]
