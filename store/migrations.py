"""Versioned store layout with append-only migrations (model: simonw/llm's migrations).

``store.json`` records the layout version. Each migration upgrades a store by one
version; they run in order and are never edited once released, only appended to
(``tests/store/test_migrations.py`` pins the source of every released one). A migration
spells out the tables it writes instead of importing ``store.schema``, whose schemas
describe the newest version and may grow later.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import pyarrow as pa

from store.errors import StoreError
from store.files import write_json_atomic, write_parquet_atomic
from store.schema import SCHEMA_VERSION

logger = logging.getLogger(__name__)

MARKER = "store.json"


def _v0_to_v1(root: Path) -> None:
    """Version 1: ``runs/`` and ``datasets/`` folders."""
    (root / "runs").mkdir(exist_ok=True)
    (root / "datasets").mkdir(exist_ok=True)


def _v1_to_v2(root: Path) -> None:
    """Version 2: every compacted run has a ``val_classes.parquet`` (validation accuracy per class).

    Runs compacted before the table existed get an empty one: their per-class accuracy was
    never recorded and cannot be rebuilt. Runs still in segments need nothing (the folder
    appears with their first row).
    """
    schema = pa.schema([
        ("epoch", pa.int32()),
        ("label", pa.int32()),
        ("correct_sum", pa.int64()),
        ("num_samples", pa.int64()),
        ("rank", pa.int16()),
    ])
    runs = root / "runs"
    if not runs.is_dir():
        return
    for run_path in sorted(runs.iterdir()):
        compacted = (run_path / "presentations.parquet").exists()
        if compacted and not (run_path / "val_classes.parquet").exists():
            write_parquet_atomic(run_path / "val_classes.parquet", schema.empty_table(), compact=True)


def _v2_to_v3(root: Path) -> None:
    """Version 3: every compacted run has a ``sample_keys.parquet`` (sample keys that are
    not integers, mapped to their sample ids).

    Runs compacted before it identified samples by integers only: an empty table. The
    columns that version 3 adds to existing tables (``presentations.token_count`` and
    ``token_accuracy``, ``epochs.dataloader_idx``, ``val_classes.dataloader_idx``) are not
    written into old files: readers see them as null (``store.queries``).
    """
    schema = pa.schema([("sample_id", pa.int64()), ("sample_key", pa.string())])
    runs = root / "runs"
    if not runs.is_dir():
        return
    for run_path in sorted(runs.iterdir()):
        compacted = (run_path / "presentations.parquet").exists()
        if compacted and not (run_path / "sample_keys.parquet").exists():
            write_parquet_atomic(run_path / "sample_keys.parquet", schema.empty_table(), compact=True)


def _v3_to_v4(root: Path) -> None:
    """Version 4: every compacted run has a ``groups.parquet`` (the names of the groups its
    batches gave their samples, ``presentations.group_id``).

    Runs compacted before it recorded no groups: an empty table. ``presentations.group_id``
    is not written into old files: readers see it as null.
    """
    schema = pa.schema([("group_id", pa.int32()), ("group_name", pa.string())])
    runs = root / "runs"
    if not runs.is_dir():
        return
    for run_path in sorted(runs.iterdir()):
        compacted = (run_path / "presentations.parquet").exists()
        if compacted and not (run_path / "groups.parquet").exists():
            write_parquet_atomic(run_path / "groups.parquet", schema.empty_table(), compact=True)


#: MIGRATIONS[i] upgrades version i to version i + 1.
MIGRATIONS: list[Callable[[Path], None]] = [_v0_to_v1, _v1_to_v2, _v2_to_v3, _v3_to_v4]
assert len(MIGRATIONS) == SCHEMA_VERSION


def read_version(root: Path) -> int:
    marker = root / MARKER
    if not marker.exists():
        return 0
    try:
        payload = json.loads(marker.read_text())
        version = payload["schema_version"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StoreError(
            f"{marker} is not a trainmap store marker ({type(error).__name__}: {error}); expected JSON with "
            "'schema_version'"
        ) from error
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise StoreError(
            f"{marker} has schema_version {version!r}; expected a whole number >= 0 (this trainmap writes "
            f"{SCHEMA_VERSION})"
        )
    return version


def _write_version(root: Path, version: int) -> None:
    write_json_atomic(root / MARKER, {"format": "trainmap-store", "schema_version": version})


def check_readable(root: Path) -> int:
    version = read_version(root)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {str(root)!r} has schema version {version}, newer than this trainmap "
            f"understands ({SCHEMA_VERSION}); upgrade trainmap"
        )
    return version


def migrate(root: Path) -> int:
    """Bring the store at ``root`` to ``SCHEMA_VERSION``; returns the version it had."""
    root.mkdir(parents=True, exist_ok=True)
    start = check_readable(root)
    for version in range(start, SCHEMA_VERSION):
        logger.info("migrating store %s from version %d to %d", root, version, version + 1)
        MIGRATIONS[version](root)
        _write_version(root, version + 1)
    return start
