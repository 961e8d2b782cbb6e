"""Atomic file writes (the one place that knows the temporary-name idiom), and naming a
Parquet file that cannot be read.

Every file a store holds is written under a name ending in ``.<pid>.tmp``, which no
reader's glob matches (``part-*.parquet``, ``*.json``), and then moved into place with
``os.replace``, atomic on POSIX: a reader sees the old file or the new one, whole, never a
half-written one. DuckDB's glob also matches dot-files, so the temporary name is a suffix,
never a leading dot (DESIGN.md).

This module is the bottom floor of ``store/``: it imports nothing from the project, so
``layout`` (and through it the recording writer), ``migrations``, ``queries`` and the
curriculum file format all use it without importing each other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before it is moved into place."""
    return path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")


def is_temporary(path: Path) -> bool:
    return path.name.endswith(TMP_SUFFIX)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then ``os.replace(tmp, path)``."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def json_text(payload: Any) -> str:
    """The JSON every store file is written as: indented, sorted keys, ``str`` for the rest."""
    return json.dumps(payload, indent=2, sort_keys=True, default=str)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json_text(payload))


def write_parquet_atomic(path: Path, table: pa.Table, *, compact: bool = False, live: bool = False) -> None:
    """Write ``table`` under a temporary name the read globs do not match, then rename.

    ``live=True`` is for the segments a run writes while it trains, in its writer process:
    neither dictionaries nor compression, because the run is compacted into compressed
    files when it ends (a run that dies keeps its segments uncompressed, about 57 bytes
    per presentation). ``compact=True`` is for files written once and read often
    (compaction): dictionaries only for the non-float columns and byte-stream-split
    floats, which zstd compresses far better; DuckDB reads both.
    """
    options: dict[str, Any] = {"compression": "zstd"}
    if live:
        options = {"compression": "none", "use_dictionary": False}
    elif compact:
        floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
        options = {
            "compression": "zstd",
            "use_dictionary": [name for name in table.column_names if name not in floats],
            "use_byte_stream_split": floats or False,
        }
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, **options))


def parquet_damage(path: Path) -> str | None:
    """Why ``path`` cannot be read as Parquet (one line), or None when it reads whole.

    For naming the damaged file after a query over many files failed: it reads the footer,
    then every row group, so it is meant for that error path, not for every read.
    """
    try:
        with pq.ParquetFile(path) as parquet:
            for group in range(parquet.metadata.num_row_groups):
                parquet.read_row_group(group)
    except FileNotFoundError:
        return None  # gone since it was listed (a run being compacted): not damage
    except (OSError, pa.ArrowException, ValueError) as error:
        return " ".join(str(error).split()) or type(error).__name__
    return None


def damaged_file_message(path: Path, reason: str) -> str:
    """The one line that names a damaged Parquet file, what was wrong and what was expected."""
    return (f"{path} is damaged ({reason[:200]}); expected a readable Parquet file: restore it, or delete "
            "the run's folder")
