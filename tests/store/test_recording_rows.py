"""The rows a recording writes (store.recording.rows), on hand-computed cases."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from store.recording.messages import StepBuffers
from store.recording.rows import (
    PRESENTATION_COLUMNS,
    epoch_row,
    per_layer_sq_norms,
    presentation_sums,
    presentations_table,
    samples_table,
    step_tables,
    val_classes_table,
)
from store.schema import PRESENTATIONS, conform


def buffers(**fields) -> StepBuffers:
    values = dict(
        step_numbers=[4, 5, 6], step_losses=np.array([1.0, 0.5, 0.25], dtype=np.float32),
        grad_norm_steps=[], parameter_norms=None, lr_steps=[4, 6], lrs=[0.1, 0.3],
    )
    values.update(fields)
    return StepBuffers(**values)


def classification_chunk() -> dict[str, np.ndarray]:
    return {
        "step": np.array([4, 4, 5]), "sample_id": np.array([7, 3, 9]), "label": np.array([0, 1, 1], np.int32),
        "loss": np.array([0.5, 2.0, 1.0], np.float32), "p_true": np.array([0.6, 0.1, 0.4], np.float32),
        "el2n": np.array([0.5, 1.2, 0.8], np.float32), "correct": np.array([True, False, True]),
        "pred": np.array([0, 2, 1], np.int32), "margin": np.array([1.0, -2.0, 0.5], np.float32),
    }


def test_a_classification_chunk_is_written_as_given_with_weight_one_and_no_grand_last():
    columns = classification_chunk()
    table = presentations_table(columns, epoch=2, rank=1)
    assert table.column_names[0] == "epoch" and table.column_names[-1] == "rank"
    assert set(table.column_names) <= set(PRESENTATIONS.names)
    for name, values in columns.items():
        assert table.column(name).to_pylist() == values.tolist(), name
    assert table.column("epoch").to_pylist() == [2] * 3 and table.column("rank").to_pylist() == [1] * 3
    assert table.column("weight").to_pylist() == [1.0] * 3 and table.schema.field("weight").type == pa.float32()
    assert np.isnan(table.column("grand_last").to_numpy()).all()  # NaN, as before: not recorded
    written = conform(table, PRESENTATIONS)  # what Store.write_segment writes
    assert written.column("token_count").null_count == 3 and written.column("token_accuracy").null_count == 3
    assert written.schema == PRESENTATIONS
    assert PRESENTATION_COLUMNS == tuple(name for name in PRESENTATIONS.names if name not in ("epoch", "rank"))


def test_a_per_sample_loss_chunk_has_null_classification_columns():
    columns = {"step": np.array([0, 0]), "sample_id": np.array([1, 2]), "loss": np.array([0.25, 4.0], np.float32),
               "weight": np.array([2.0, 0.5], np.float32)}
    written = conform(presentations_table(columns, epoch=0, rank=0), PRESENTATIONS)
    for name in ("label", "p_true", "el2n", "correct", "pred", "margin", "token_count", "token_accuracy"):
        assert written.column(name).null_count == 2, name
    assert written.column("loss").to_pylist() == [0.25, 4.0] and written.column("weight").to_pylist() == [2.0, 0.5]


def test_a_sequence_with_no_counted_token_has_null_statistics():
    nan = np.nan
    columns = {
        "step": np.array([1, 1, 1]), "sample_id": np.array([5, 6, 7]),
        "loss": np.array([0.5, nan, 1.5], np.float32), "p_true": np.array([0.7, nan, 0.3], np.float32),
        "el2n": np.array([0.4, nan, 0.9], np.float32), "margin": np.array([1.0, nan, -1.0], np.float32),
        "correct": np.array([True, False, False]), "token_count": np.array([3, 0, 2], np.int32),
        "token_accuracy": np.array([1.0, nan, 0.0], np.float32),
    }
    table = presentations_table(columns, epoch=0, rank=0)
    for name in ("loss", "p_true", "el2n", "margin", "correct", "token_accuracy"):
        values = table.column(name).to_pylist()
        assert values[1] is None and values[0] is not None and values[2] is not None, name
    assert table.column("correct").to_pylist() == [True, None, False]
    assert table.column("token_count").to_pylist() == [3, 0, 2]  # the count itself is known: 0


def test_presentation_sums_count_the_presentations_with_statistics():
    assert presentation_sums(classification_chunk()) == (3.0, pytest.approx(3.5), 2.0, 3.0)
    sequence = {"sample_id": np.array([1, 2, 3]), "loss": np.array([0.5, np.nan, 1.0], np.float32),
                "correct": np.array([True, False, True]), "token_count": np.array([2, 0, 4], np.int32)}
    assert presentation_sums(sequence) == (3.0, 1.5, 2.0, 2.0)  # the empty sequence has no loss
    loss_only = {"sample_id": np.array([1, 2]), "loss": np.array([0.25, 0.5], np.float32)}
    assert presentation_sums(loss_only) == (2.0, 0.75, 0.0, 2.0)
    diverged = {"sample_id": np.array([1]), "loss": np.array([np.nan], np.float32)}
    assert np.isnan(presentation_sums(diverged)[1])  # a NaN loss is not hidden


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
    assert epoch_row(3, "train", 2.5, None, 5, 0, now).table.column("correct_sum").to_pylist() == [None]
    assert epoch_row(3, "train", 2.5, None, 5, 0, now).table.column("dataloader_idx").to_pylist() == [None]
    row = epoch_row(3, "val", 2.5, 4, 5, 0, now, dataloader_idx=1)
    assert (row.table_name, row.epoch) == ("epochs", 3)
    assert row.table.to_pylist() == [{
        "epoch": 3, "split": "val", "dataloader_idx": 1, "loss_sum": 2.5, "correct_sum": 4, "num_samples": 5,
        "rank": 0, "time": now,
    }]
    classes = val_classes_table(3, np.array([[1.0, 0.0, 2.9999999], [2.0, 1.0, 3.0]]), dataloader_idx=2)
    assert classes.table.to_pydict() == {
        "epoch": [3, 3, 3], "dataloader_idx": [2, 2, 2], "label": [0, 1, 2], "correct_sum": [1, 0, 3],
        "num_samples": [2, 1, 3], "rank": [0, 0, 0],
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
