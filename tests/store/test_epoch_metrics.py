"""Epoch metrics with several validation dataloaders (store.queries): the monitored loader is
"val", every loader has its own rows, older rows without a dataloader_idx are loader 0."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import Store, compact_run
from store.queries import (
    MONITOR_DATALOADER_FIELD,
    best_val_accuracy,
    epoch_metrics,
    monitored_dataloader,
    validation_metrics,
)

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)

# (epoch, split, dataloader_idx, loss_sum, correct_sum, num_samples, rank): two ranks'
# train rows, two validation loaders with very different accuracies.
ROWS = [
    (0, "train", None, 8.0, 30, 40, 0), (0, "train", None, 4.0, 20, 40, 1),
    (0, "val", 0, 3.0, 18, 20, 0), (0, "val", 1, 14.0, 7, 20, 0),
    (1, "train", None, 2.0, 38, 40, 0), (1, "train", None, 2.0, 36, 40, 1),
    (1, "val", 0, 1.0, 20, 20, 0), (1, "val", 1, 16.0, 5, 20, 0),
    (2, "train", None, 1.0, 40, 40, 0), (2, "train", None, 1.0, 40, 40, 1),
    (2, "val", 0, 2.0, 19, 20, 0), (2, "val", 1, 12.0, 9, 20, 0),
]


def epochs_table(rows) -> pa.Table:
    names = ("epoch", "split", "dataloader_idx", "loss_sum", "correct_sum", "num_samples", "rank")
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    columns["time"] = [NOW] * len(rows)
    return pa.table(columns)


def reference(rows, loader: int) -> pd.DataFrame:
    """Plain pandas: train over all ranks, val over the chosen loader (null = 0)."""
    frame = pd.DataFrame(rows, columns=["epoch", "split", "loader", "loss", "correct", "n", "rank"])
    frame["loader"] = frame["loader"].fillna(0)
    train = frame[frame.split == "train"].groupby("epoch")[["loss", "correct", "n"]].sum()
    val = frame[(frame.split == "val") & (frame.loader == loader)].groupby("epoch")[["loss", "correct", "n"]].sum()
    return pd.DataFrame({
        "train_loss": train.loss / train.n, "train_accuracy": train.correct / train.n,
        "val_loss": val.loss / val.n, "val_accuracy": val.correct / val.n,
    })


@pytest.fixture()
def store(tmp_path):
    return Store(tmp_path / "store", create=True)


def new_run(store: Store, rows, **fields) -> str:
    run_id = store.create_run(name="loaders", task="custom", model="m", seed=0)
    if fields:
        store.update_run(run_id, **fields)
    store.write_segment(run_id, "epochs", epochs_table(rows), "r00-e000000")
    return run_id


def check(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert frame["epoch"].tolist() == expected.index.tolist()
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(frame[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-12)


def test_val_is_loader_zero_by_default_and_each_loader_on_request(store):
    run_id = new_run(store, ROWS)
    assert monitored_dataloader(store, run_id) == 0
    check(epoch_metrics(store, run_id), reference(ROWS, 0))
    check(epoch_metrics(store, run_id, dataloader_idx=1), reference(ROWS, 1))
    assert epoch_metrics(store, run_id)["val_accuracy"].tolist() == [0.9, 1.0, 0.95]
    assert best_val_accuracy(store, run_id) == 1.0
    assert best_val_accuracy(store, run_id, 1) == pytest.approx(0.45)
    # a loader that was never recorded: no validation values, the train ones still there
    absent = epoch_metrics(store, run_id, dataloader_idx=5)
    assert absent["val_accuracy"].isna().all() and absent["train_loss"].notna().all()
    assert best_val_accuracy(store, run_id, 5) is None


def test_the_monitored_loader_named_in_run_json_is_val(store):
    run_id = new_run(store, ROWS, **{MONITOR_DATALOADER_FIELD: 1})
    assert monitored_dataloader(store, run_id) == 1
    check(epoch_metrics(store, run_id), reference(ROWS, 1))
    assert best_val_accuracy(store, run_id) == pytest.approx(0.45)
    check(epoch_metrics(store, run_id, 0), reference(ROWS, 0))


def test_validation_metrics_one_row_per_epoch_and_loader_also_compacted(store):
    run_id = new_run(store, ROWS)
    for compacted in (False, True):
        if compacted:
            compact_run(store, run_id)
        frame = validation_metrics(store, run_id)
        assert list(zip(frame.epoch, frame.dataloader_idx)) == [(e, k) for e in range(3) for k in (0, 1)]
        expected = [row[4] / row[5] for row in ROWS if row[1] == "val"]
        np.testing.assert_allclose(frame["val_accuracy"], expected)
        np.testing.assert_allclose(frame["val_loss"], [row[3] / row[5] for row in ROWS if row[1] == "val"])
        assert frame["num_samples"].tolist() == [20] * 6
        check(epoch_metrics(store, run_id, 1), reference(ROWS, 1))


def test_rows_without_a_dataloader_idx_are_loader_zero(store):
    """Runs recorded before several loaders were: their val rows have a null dataloader_idx
    (and older files no such column at all)."""
    old = [(e, s, None, *rest) for (e, s, k, *rest) in ROWS if k in (None, 0)]
    run_id = new_run(store, old)
    check(epoch_metrics(store, run_id), reference(ROWS, 0))
    assert validation_metrics(store, run_id)["dataloader_idx"].tolist() == [0, 0, 0]
    # a file written before the column existed (straight to disk, not conformed)
    legacy = store.create_run(name="v2", task="custom", model="m", seed=0)
    folder = store.run_dir(legacy) / "epochs"
    folder.mkdir()
    pq.write_table(epochs_table(old).drop_columns(["dataloader_idx"]), folder / "part-r00-e000000.parquet")
    assert "dataloader_idx" not in pq.read_schema(folder / "part-r00-e000000.parquet").names
    check(epoch_metrics(store, legacy), reference(ROWS, 0))
    assert best_val_accuracy(store, legacy) == 1.0


@pytest.mark.parametrize("bad", [-1, True, 1.5, "0"])
def test_a_bad_dataloader_idx_is_refused(store, bad):
    run_id = new_run(store, ROWS)
    with pytest.raises(ValueError, match="dataloader_idx must be"):
        epoch_metrics(store, run_id, bad)
