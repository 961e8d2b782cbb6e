"""Store migrations: from an empty folder, from a checked-in version-1 store, append-only."""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from store import Store, StoreError, migrations, run_summary
from store.schema import GROUPS, SAMPLE_KEYS, SCHEMA_VERSION

FIXTURE_V1 = Path(__file__).resolve().parents[1] / "fixtures" / "store_v1"
FINISHED, SEGMENTS = "20261203-164404-9f4c85", "20261203-164404-b8a847"

#: sha256 (first 16 hex digits) of each released migration's source. A released
#: migration is never edited: add a new one and a line here instead.
RELEASED = ["0761ba81bb0c9ed2", "13c7131c11fa4d9c", "c4e764deae5c8fb2", "36a0c7cfd50140d1"]


def checksums(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def version_of(root: Path) -> int:
    return json.loads((root / "store.json").read_text())["schema_version"]


def test_released_migrations_are_append_only():
    assert len(migrations.MIGRATIONS) == SCHEMA_VERSION == len(RELEASED)
    digests = [hashlib.sha256(inspect.getsource(step).encode()).hexdigest()[:16] for step in migrations.MIGRATIONS]
    assert digests == RELEASED


def test_an_empty_folder_becomes_a_store_of_the_current_version(tmp_path):
    root = tmp_path / "new"
    assert migrations.migrate(root) == 0
    assert version_of(root) == SCHEMA_VERSION
    assert (root / "runs").is_dir() and (root / "datasets").is_dir()
    assert Store(root).run_ids() == []
    assert migrations.migrate(root) == SCHEMA_VERSION  # idempotent: nothing left to do


def test_a_version_1_store_is_migrated_without_changing_its_data(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(FIXTURE_V1, root)
    assert version_of(root) == 1
    before = Store(root)  # reading needs no migration
    assert before.run_ids() == [FINISHED, SEGMENTS]
    summaries = {run_id: run_summary(before, run_id) for run_id in before.run_ids()}
    files_before = checksums(root)
    assert not (root / "runs" / FINISHED / "val_classes.parquet").exists()

    assert migrations.migrate(root) == 1
    assert version_of(root) == SCHEMA_VERSION
    after = Store(root)
    val_classes = pq.read_table(root / "runs" / FINISHED / "val_classes.parquet")
    # written as version 2 defined it; version 3's dataloader_idx is read as null
    assert val_classes.num_rows == 0 and val_classes.column_names == [
        "epoch", "label", "correct_sum", "num_samples", "rank"]
    # a run still in segments gets no compacted table: its folder appears with its first row
    assert not (root / "runs" / SEGMENTS / "val_classes.parquet").exists()
    files_after = checksums(root)
    changed = {name for name in files_before if files_after.get(name) != files_before[name]}
    assert changed == {"store.json"}  # every run file is as it was, byte for byte
    assert set(files_after) - set(files_before) == {
        f"runs/{FINISHED}/val_classes.parquet", f"runs/{FINISHED}/sample_keys.parquet",
        f"runs/{FINISHED}/groups.parquet"}
    sample_keys = pq.read_table(root / "runs" / FINISHED / "sample_keys.parquet")
    assert sample_keys.num_rows == 0 and sample_keys.schema.equals(SAMPLE_KEYS)
    groups = pq.read_table(root / "runs" / FINISHED / "groups.parquet")
    assert groups.num_rows == 0 and groups.schema.equals(GROUPS)
    for run_id, summary in summaries.items():
        assert run_summary(after, run_id).equals(summary)
    assert after.run_info(FINISHED)["status"] == "finished"
    assert len(summaries[FINISHED]) == 4 and int(summaries[FINISHED]["label_noisy"].sum()) == 1


def test_a_store_written_by_a_newer_trainmap_is_refused_naming_both_versions(tmp_path):
    root = tmp_path / "future"
    shutil.copytree(FIXTURE_V1, root)
    (root / "store.json").write_text(json.dumps({"format": "trainmap-store", "schema_version": SCHEMA_VERSION + 1}))
    for open_store in (lambda: Store(root), lambda: Store(root, create=True)):
        with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this trainmap understands \\({SCHEMA_VERSION}\\)"):
            open_store()
    assert version_of(root) == SCHEMA_VERSION + 1


def test_the_shipped_sample_runs_are_at_the_current_version():
    assert version_of(Path(__file__).resolve().parents[2] / "sample_runs") == SCHEMA_VERSION
