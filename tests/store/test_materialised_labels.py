"""The per-sample labels compaction materialises (``store.compaction``, ``labels.parquet``):
the very frames the live queries compute, only for the window they were made for, and
gone when a run is reopened or unreadable."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from store import Store
from store.compaction import (
    first_half,
    materialised_predicted_labels,
    materialised_suggested_labels,
)
from store.layout import LABELS_FILE
from store.views.relabel import default_relabel_epochs, suggested_labels
from store.views.samples import predicted_labels

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from make_big_store import stream_big_run  # noqa: E402


@pytest.fixture()
def run(tmp_path):
    root = tmp_path / "store"
    report = stream_big_run(root, 600, 5, in_process=True)
    return Store(root), report.run_id


def test_first_half_is_the_default_relabel_window():
    assert [first_half(0, high) for high in (0, 1, 2, 19)] == [(0, 0), (0, 0), (0, 1), (0, 9)]
    assert first_half(3, 7) == (3, 5)


def test_materialised_labels_equal_the_live_queries(run):
    store, run_id = run
    window = default_relabel_epochs(store, run_id)
    assert window == (0, 2)
    materialised = materialised_suggested_labels(store, run_id, window)
    predicted = materialised_predicted_labels(store, run_id)
    # the live queries, from the presentations, once the file is out of the way
    (store.run_dir(run_id) / LABELS_FILE).rename(store.run_dir(run_id) / "aside.parquet")
    assert materialised_suggested_labels(store, run_id, window) is None
    pd.testing.assert_frame_equal(materialised, suggested_labels(store, run_id, window))
    pd.testing.assert_frame_equal(predicted, predicted_labels(store, run_id))
    assert len(materialised) == 600 and materialised["window_presentations"].eq(3).all()
    assert materialised["suggested_confidence"].between(1 / 3, 1).all()
    assert predicted["predicted_label"].notna().all()


def test_another_window_or_a_reopened_run_is_not_answered(run):
    store, run_id = run
    assert materialised_suggested_labels(store, run_id, (0, 4)) is None  # not the window it holds
    assert materialised_suggested_labels(store, run_id, (0, 2)) is not None
    store.reopen_run(run_id)
    assert not (store.run_dir(run_id) / LABELS_FILE).exists()
    assert materialised_predicted_labels(store, run_id) is None


def test_an_unreadable_labels_file_falls_back_with_a_warning(run, caplog):
    store, run_id = run
    (store.run_dir(run_id) / LABELS_FILE).write_bytes(b"not parquet")
    with caplog.at_level("WARNING", logger="store.compaction"):
        assert materialised_predicted_labels(store, run_id) is None
    assert LABELS_FILE in caplog.text


def test_the_views_answer_a_compacted_run_from_the_file(run):
    """``predicted_labels`` and ``suggested_labels`` read the file when it holds the window
    (no scan of the presentations): a file changed by hand shows through them."""
    import pyarrow.parquet as pq

    store, run_id = run
    path = store.run_dir(run_id) / LABELS_FILE
    table = pq.read_table(path)
    frame = table.to_pandas()
    frame["predicted_label"] = pd.array([7] * len(frame), dtype="Int64")
    frame["suggested_label"] = pd.array([3] * len(frame), dtype="Int64")
    import pyarrow as pa

    changed = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(table.schema.metadata)
    pq.write_table(changed, path)
    assert predicted_labels(store, run_id)["predicted_label"].eq(7).all()
    assert suggested_labels(store, run_id)["suggested_label"].eq(3).all()  # the default window
    assert not suggested_labels(store, run_id, (0, 4))["suggested_label"].eq(3).all()  # another: computed
