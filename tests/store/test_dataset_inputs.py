"""A task's inputs file in row groups, and reading a few samples from it by id."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from store import Store, dataset_inputs
from store.layout import DATASET_ROW_GROUP


def test_inputs_are_read_by_id_across_row_groups(tmp_path):
    store = Store(tmp_path / "store", create=True)
    count, length = 2 * DATASET_ROW_GROUP + 10, 3
    values = np.arange(count * length, dtype=np.float32)
    order = np.random.default_rng(0).permutation(count)  # ids in no particular order
    store.write_dataset("task", pa.table({
        "sample_id": order.astype(np.int64),
        "x": pa.ListArray.from_arrays(np.arange(0, (count + 1) * length, length, dtype=np.int32), values),
        "shape": pa.ListArray.from_arrays(np.arange(count + 1, dtype=np.int32), np.full(count, length, np.int32)),
    }))
    assert pq.ParquetFile(store.dataset_path("task")).metadata.num_row_groups == 3
    wanted = [0, 17, DATASET_ROW_GROUP + 5, count - 1]
    inputs = dataset_inputs(store, "task", wanted + [count + 5])  # an id that is not there is left out
    assert sorted(inputs) == wanted
    for sample_id in wanted:
        row = int(np.flatnonzero(order == sample_id)[0])
        assert np.array_equal(inputs[sample_id], values[row * length:(row + 1) * length])
    assert dataset_inputs(store, "task", []) == {}
