"""The rows of a recorded epoch (store.recording.rows), on hand-computed cases."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from store.recording.messages import EpochBuffers, EpochTotals
from store.recording.rows import (
    PRESENTATION_COLUMNS,
    epoch_row,
    epoch_scores,
    epoch_totals,
    per_layer_sq_norms,
    presentation_columns,
    presentations_table,
    samples_table,
    step_tables,
    val_classes_table,
)


def buffers(**fields) -> EpochBuffers:
    values = dict(
        logits=np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], dtype=np.float32)),
        targets=np.array([0, 1]), sample_ids=np.array([7, 3]), batch_steps=[4], batch_sizes=[2],
        step_numbers=[4, 5, 6], step_losses=np.array([1.0, 0.5, 0.25], dtype=np.float32),
        grad_norm_steps=[], parameter_norms=None, lr_steps=[4, 6], lrs=[0.1, 0.3],
        weights=None, feature_sqnorms=None,
    )
    values.update(fields)
    return EpochBuffers(**values)


def test_presentation_columns_default_weight_one_and_no_grand_last():
    epoch = buffers()
    columns = presentation_columns(epoch, epoch_scores(epoch.logits, epoch.targets))
    assert set(PRESENTATION_COLUMNS) <= set(columns)
    np.testing.assert_allclose(columns["p_true"], [0.5, 0.1], rtol=1e-6)
    assert columns["weight"].tolist() == [1.0, 1.0] and columns["weight"].dtype == np.float32
    assert np.isnan(columns["grand_last"]).all() and columns["grand_last"].dtype == np.float32
    assert columns["label"].dtype == np.int32 and columns["step"].tolist() == [4, 4]
    table = presentations_table(columns, epoch=2, rank=1)
    assert table.column_names == ["epoch", *PRESENTATION_COLUMNS, "rank"]
    assert table.column("epoch").to_pylist() == [2, 2] and table.schema.field("rank").type == pa.int16()


def test_grand_last_is_el2n_times_the_feature_norm():
    # Last-layer GraNd approximation: EL2N * sqrt(||h||^2 + 1)
    epoch = buffers(feature_sqnorms=np.array([3.0, 8.0], dtype=np.float32), weights=np.array([2.0, 0.5], np.float32))
    columns = presentation_columns(epoch, epoch_scores(epoch.logits, epoch.targets))
    np.testing.assert_allclose(columns["grand_last"], columns["el2n"] * np.array([2.0, 3.0]), rtol=1e-6)
    assert columns["weight"].tolist() == [2.0, 0.5]


def test_epoch_totals_sum_loss_in_float64_and_count_correct():
    epoch = buffers()
    totals = epoch_totals(epoch_scores(epoch.logits, epoch.targets))
    assert totals == EpochTotals(pytest.approx(-np.log(0.5) - np.log(0.1)), 1.0, 2.0)


def test_per_layer_norms_sum_the_squares_of_their_parameters():
    norms = np.array([[3.0, 4.0, 1.0], [0.0, 1.0, 2.0]])
    np.testing.assert_allclose(per_layer_sq_norms(norms, np.array([0, 0, 1]), 2), [[25.0, 1.0], [1.0, 4.0]])


def test_steps_without_gradient_norms_have_null_norms_and_the_learning_rate_where_recorded():
    (steps,) = step_tables(buffers(), epoch=1, layers=["fc"], layer_owner=np.array([0]))
    assert steps.table_name == "steps" and steps.epoch == 1
    assert steps.table.to_pydict() == {
        "step": [4, 5, 6], "epoch": [1, 1, 1], "loss": [1.0, 0.5, 0.25],
        "grad_norm": [None] * 3, "lr": [0.1, None, 0.3],
    }


def test_gradient_norms_go_to_the_step_that_made_them():
    epoch = buffers(grad_norm_steps=[6], parameter_norms=np.array([[6.0, 8.0]]))
    layers, steps = step_tables(epoch, epoch=1, layers=["a", "b"], layer_owner=np.array([0, 1]))
    assert layers.table.to_pydict() == {"step": [6, 6], "layer": ["a", "b"], "grad_norm": [6.0, 8.0]}
    assert steps.table.column("grad_norm").to_pylist() == [None, None, 10.0]


def test_epoch_and_val_classes_rows():
    now = dt.datetime(2026, 11, 26, 12, 0, 0, 5, tzinfo=dt.timezone.utc)
    row = epoch_row(3, "val", 2.5, 4, 5, 0, now)
    assert (row.table_name, row.epoch) == ("epochs", 3)
    assert row.table.to_pylist() == [
        {"epoch": 3, "split": "val", "loss_sum": 2.5, "correct_sum": 4, "num_samples": 5, "rank": 0, "time": now}
    ]
    classes = val_classes_table(3, np.array([[1.0, 0.0, 2.9999999], [2.0, 1.0, 3.0]]))
    assert classes.table.to_pydict() == {
        "epoch": [3, 3, 3], "label": [0, 1, 2], "correct_sum": [1, 0, 3], "num_samples": [2, 1, 3], "rank": [0, 0, 0],
    }


@pytest.mark.parametrize("make", [pa.table, dict, pd.DataFrame], ids=["arrow", "mapping", "pandas"])
def test_samples_table_completes_the_noise_columns(make):
    table = samples_table(make({"sample_id": [1, 2], "label": [0, 1], "original_label": [0, 2]}))
    assert table.to_pydict() == {
        "sample_id": [1, 2], "label": [0, 1], "original_label": [0, 2], "label_noisy": [False, True]
    }
    clean = samples_table(make({"sample_id": [1], "label": [4]}))
    assert clean.to_pydict() == {"sample_id": [1], "label": [4], "original_label": [4], "label_noisy": [False]}


def test_samples_table_needs_ids_and_labels():
    with pytest.raises(ValueError, match="samples needs 'sample_id' and 'label' columns; got \\['sample_id'\\]"):
        samples_table(pa.table({"sample_id": [1]}))
