"""The on-disk layout of a store: one folder per run, append-only Parquet segments.

DuckDB allows one read-write process per database file and no reader while a writer
holds it (DESIGN.md), while the trainer, the dashboard and a launched rerun run at the
same time. So nothing here keeps a ``.duckdb`` file open: each run writes Parquet
segments into its own folder, and readers query them with DuckDB's ``read_parquet``::

    <store>/store.json                      format marker and schema version
    <store>/runs/<run_id>/run.json          metadata: config, status, progress, lineage
    <store>/runs/<run_id>/samples.parquet   sample_id, label, original_label, label_noisy
    <store>/runs/<run_id>/<table>/part-r<rank>-<seq>.parquet   live segments
    <store>/runs/<run_id>/<table>.parquet   one sorted file per table once compacted
    <store>/runs/<run_id>/summary.parquet   per-sample summary, materialised at the end
    <store>/runs/<run_id>/labels.parquet    per-sample predicted / suggested labels, likewise
    <store>/datasets/<key>.parquet          the inputs of a task, for showing samples

Every file is written under a ``*.tmp`` name that no reader lists and then moved into
place with ``os.replace`` (atomic on POSIX), so a reader sees a file whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store import migrations
from store.files import damaged_file_message, parquet_damage, write_atomic, write_json_atomic, write_parquet_atomic
from store.errors import RunNotFoundError, StoreError
from store.schema import SAMPLES, SEGMENT_TABLES, conform

logger = logging.getLogger(__name__)

STORE_MARKER = "store.json"
#: ``interrupted``: stopped by a signal (Ctrl-C, SIGTERM) or found dead by a reader
#: (``Store.run_state``); its recorded epochs are kept, like a failed run's.
RUN_STATUSES = ("running", "finished", "failed", "interrupted")
#: The file a running run's training process touches every ``HEARTBEAT_SECS``.
HEARTBEAT_FILE = "heartbeat"
HEARTBEAT_SECS = 10.0
#: A ``running`` run whose heartbeat is older than this is shown ``interrupted``: its
#: process was killed with its whole group, or its node died (``Store.run_state``).
STALE_AFTER_SECS = 120.0
DEFAULT_STORE = "trainmap_runs"
#: Per-sample files compaction materialises (``store.compaction``); a reopened run drops them.
SUMMARY_FILE = "summary.parquet"
LABELS_FILE = "labels.parquet"
#: Rows per row group of a task's inputs file (``Store.write_dataset``).
DATASET_ROW_GROUP = 65_536


def default_store_path() -> Path:
    """``$TRAINMAP_STORE`` if set, else ``./trainmap_runs``."""
    return Path(os.environ.get("TRAINMAP_STORE") or DEFAULT_STORE)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Sortable by creation time, unique across processes: ``20261124-123005-3fa9c1``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


_DATASET_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _gone(run_path: Path, info: dict[str, Any], now: float) -> str | None:
    """Why a run that says ``running`` has no live training process, or None."""
    try:
        beat = (run_path / HEARTBEAT_FILE).stat().st_mtime
    except OSError:
        beat = None
    if beat is not None and now - beat > STALE_AFTER_SECS:
        since = dt.datetime.fromtimestamp(beat, dt.timezone.utc).isoformat(timespec="seconds")
        return (f"no heartbeat from its training process since {since} (more than {STALE_AFTER_SECS:.0f} s): "
                "killed, out of memory, or its node went down; the recorded epochs are kept")
    pid = info.get("pid")
    if info.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        return f"its training process (pid {pid}) is no longer running; the recorded epochs are kept"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, another user's
    return True


def _field_problem(info: dict[str, Any]) -> str | None:
    """What is wrong with run.json's epoch counts and names (that readers sort, add and show)."""
    for field in ("epochs_done", "max_epochs"):
        value = info.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            return f"its {field!r} is {str(repr(value))[:40]}"
    for field in ("name", "task", "model", "run_id"):
        value = info.get(field)
        if value is not None and not isinstance(value, str):
            return f"its {field!r} is a {type(value).__name__}"
    return None


class Store:
    """A folder of runs. Cheap to construct; opens no database file.

    ``Store(path)`` reads an existing store (or a folder that is not one yet, which then
    simply holds no runs); ``Store(path, create=True)`` creates or migrates it for writing.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, create: bool = False):
        self.root = Path(root) if root is not None else default_store_path()
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(
                f"store path {str(self.root)!r} is a file; expected a directory "
                "(pass --store DIR or set TRAINMAP_STORE to a folder)"
            )
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            migrations.migrate(self.root)
        elif (self.root / STORE_MARKER).exists():
            migrations.check_readable(self.root)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- runs -----------------------------------------------------------------------

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise RunNotFoundError(f"invalid run id {run_id!r}")
        path = self.runs_dir / run_id
        if not (path / "run.json").exists():
            raise RunNotFoundError(
                f"no run {run_id!r} in store {str(self.root)!r} "
                "(list the runs with `trainmap runs`)"
            )
        return path

    def run_ids(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if (p / "run.json").exists())

    def run_info(self, run_id: str) -> dict[str, Any]:
        """run.json of ``run_id``, checked: a JSON object whose ``config`` (if any) is an
        object and whose ``status`` is one of ``RUN_STATUSES``; ``StoreError`` naming the
        file otherwise."""
        path = self.run_dir(run_id) / "run.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot read {path}: {error}") from error
        problem = None
        if not isinstance(info, dict):
            problem = f"it holds a JSON {type(info).__name__}"
        elif not isinstance(info.get("config") or {}, dict):
            problem = f"its 'config' is a {type(info['config']).__name__}"
        elif info.get("status") not in RUN_STATUSES:
            problem = f"its 'status' is {info.get('status')!r}"
        else:
            problem = _field_problem(info)
        if problem is not None:
            raise StoreError(f"{path} is damaged: {problem}; expected a JSON object with a 'config' object and a "
                             f"'status' in {RUN_STATUSES}, whole-number epoch counts and text names")
        return info

    def create_run(
        self,
        *,
        name: str,
        task: str,
        model: str,
        seed: int | None = None,
        config: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        curriculum: str | None = None,
        max_epochs: int | None = None,
        world_size: int = 1,
        run_id: str | None = None,
    ) -> str:
        """Create a run folder with status ``running`` and return its id."""
        migrations.migrate(self.root)
        run_id = run_id or new_run_id()
        path = self.runs_dir / run_id
        path.mkdir(parents=True, exist_ok=False)
        info = {
            "run_id": run_id,
            "name": name,
            "task": task,
            "model": model,
            "seed": seed,
            "config": config or {},
            "status": "running",
            "created_at": utc_now(),
            "updated_at": utc_now(),
            "finished_at": None,
            "error": None,
            "epochs_done": 0,
            "max_epochs": max_epochs,
            "world_size": world_size,
            "parent_run_id": parent_run_id,
            "curriculum": curriculum,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        write_json_atomic(path / "run.json", info)
        return run_id

    def beat(self, run_id: str) -> None:
        """Say that ``run_id``'s training process is alive now (its heartbeat file's time)."""
        (self.run_dir(run_id) / HEARTBEAT_FILE).touch()

    def run_state(self, run_id: str, now: float | None = None) -> dict[str, Any]:
        """run.json as a reader should show it. A run that says ``running`` but whose
        training process is gone is ``interrupted``, with an error saying why:

        - its heartbeat (``HEARTBEAT_FILE``) is older than ``STALE_AFTER_SECS``: killed with
          its whole process group, out of memory, or its node died;
        - or it was started on this host and its pid no longer exists.

        Nothing is written: the stored status stays as the writer left it, so a resumed run
        or a late writer is not contradicted (``trainmap runs`` and the dashboard read this)."""
        info = self.run_info(run_id)
        if info.get("status") != "running":
            return info
        reason = _gone(self.run_dir(run_id), info, time.time() if now is None else now)
        if reason is None:
            return info
        return {**info, "status": "interrupted", "error": reason}

    def update_run(self, run_id: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into run.json (only the writing process calls this)."""
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {fields['status']!r}")
        info = self.run_info(run_id)
        info.update(fields)
        info["updated_at"] = utc_now()
        write_json_atomic(self.run_dir(run_id) / "run.json", info)
        return info

    def reopen_run(self, run_id: str) -> None:
        """Turn a compacted run back into segments so that a resumed run can append.

        Each compacted table becomes one segment (``os.replace``: readers see either the
        file or the segment; they retry if a listed file vanished) and the materialised
        per-sample files are dropped; compaction at the end of the resumed run rebuilds them.
        """
        run_path = self.run_dir(run_id)
        for table_name in SEGMENT_TABLES:
            compacted = run_path / f"{table_name}.parquet"
            if compacted.exists():
                folder = run_path / table_name
                folder.mkdir(exist_ok=True)
                os.replace(compacted, folder / "part-compacted.parquet")
        for name in (SUMMARY_FILE, LABELS_FILE):
            (run_path / name).unlink(missing_ok=True)
        self.update_run(run_id, compacted=False)

    def truncate_run(self, run_id: str, *, epoch: int, step: int) -> int:
        """Drop a run's rows from ``epoch`` (tables with an epoch column) or ``step``
        (``layer_grad_norms``) on; returns how many rows were dropped.

        For a run resumed from a checkpoint: rows the first process recorded after saving
        it would otherwise be counted twice. Segments that hold only later rows are
        removed; a segment that straddles the point is rewritten (the same atomic rename).
        """
        dropped = 0
        for table_name, schema in SEGMENT_TABLES.items():
            if "epoch" not in schema.names and "step" not in schema.names:
                continue  # sample_keys: which key each id stands for holds whenever it was written
            column, limit = ("epoch", epoch) if "epoch" in schema.names else ("step", step)
            for path in self.table_files(run_id, table_name):
                table = pq.read_table(path)
                keep = pc.less(table[column], limit)
                kept = int(pc.sum(keep).as_py() or 0)
                if kept == table.num_rows:
                    continue
                dropped += table.num_rows - kept
                if kept == 0:
                    path.unlink()
                else:
                    compacted = path.parent == self.run_dir(run_id)
                    write_parquet_atomic(path, table.filter(keep), compact=compacted, live=not compacted)
        return dropped

    def delete_run(self, run_id: str) -> None:
        shutil.rmtree(self.run_dir(run_id))

    # -- writing --------------------------------------------------------------------

    def write_samples(self, run_id: str, table: pa.Table) -> None:
        table = table.select(SAMPLES.names).cast(SAMPLES)
        write_parquet_atomic(self.run_dir(run_id) / "samples.parquet", table)

    def write_segment(self, run_id: str, table_name: str, table: pa.Table, part: str) -> Path:
        """Append one segment (e.g. one epoch of one rank) to a run's table."""
        table = conform(table, SEGMENT_TABLES[table_name])
        folder = self.run_dir(run_id) / table_name
        folder.mkdir(exist_ok=True)
        path = folder / f"part-{part}.parquet"
        write_parquet_atomic(path, table, live=True)
        return path

    def write_dataset(self, key: str, table: pa.Table) -> Path:
        """Store a task's inputs once per store (``sample_id``, ``x``: list of floats), in row
        groups of ``DATASET_ROW_GROUP`` rows: a reader of a few samples
        (``store.queries.dataset_inputs``) skips the groups whose sample ids cannot match."""
        path = self.dataset_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd",
                                                          row_group_size=DATASET_ROW_GROUP))
        return path

    def dataset_path(self, key: str) -> Path:
        """``<store>/datasets/<key>.parquet``. ``key`` comes from run.json (a task name): one
        that is not a plain file name (a path, ``..``, a hidden name) is refused, so that no
        stored field can make a reader open a file outside the store."""
        if not isinstance(key, str) or not _DATASET_KEY.fullmatch(key):
            raise StoreError(f"invalid dataset key {key!r}; expected a task name of letters, digits, '-', '_' or '.' "
                             "not starting with '.'")
        return self.root / "datasets" / f"{key}.parquet"

    # -- reading --------------------------------------------------------------------

    def damaged_file(self, run_id: str, tables: Iterable[str] = tuple(SEGMENT_TABLES)) -> StoreError | None:
        """A ``StoreError`` naming the first of the run's files (``tables`` and the samples)
        that cannot be read whole, or None; for the error path of a read that failed."""
        paths = [path for table in tables for path in self.table_files(run_id, table)]
        paths.append(self.run_dir(run_id) / "samples.parquet")
        for path in paths:
            reason = parquet_damage(path) if path.exists() else None
            if reason is not None:
                return StoreError(damaged_file_message(path, reason))
        return None

    def table_files(self, run_id: str, table_name: str) -> list[Path]:
        """The Parquet files that hold a run's table right now (compacted or live)."""
        if table_name not in SEGMENT_TABLES:
            raise ValueError(f"unknown table {table_name!r}; expected one of {list(SEGMENT_TABLES)}")
        run_path = self.run_dir(run_id)
        compacted = run_path / f"{table_name}.parquet"
        if compacted.exists():
            return [compacted]
        folder = run_path / table_name
        if not folder.is_dir():
            return []
        return sorted(folder.glob("part-*.parquet"))
