"""The rows a recording writes: the Arrow tables built from what the recorder hands over
(``store.recording.messages``): chunks of per-presentation statistics (reduced on the
training device by ``training.reduce``), per-step values, epoch rows, and the run's samples
table.

Pure functions of arrays; the writer process (``store.recording.writer``) calls them and
writes what they return. Column names and types are those of ``store.schema``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.recording.messages import StepBuffers
from store.schema import PRESENTATIONS

#: The columns a chunk of presentations may carry (``epoch`` and ``rank`` are the writer's).
PRESENTATION_COLUMNS = tuple(name for name in PRESENTATIONS.names if name not in ("epoch", "rank"))

#: Statistics that are null on a sequence with no counted token (``token_count`` 0: every
#: target ignored or masked), where the per-token means have nothing to average.
SEQUENCE_STATISTICS = ("loss", "p_true", "el2n", "margin", "correct", "pred", "token_accuracy")


@dataclass(frozen=True)
class PendingTable:
    """Rows of a small table waiting for the next flush, with the epoch they belong to."""

    table_name: str
    table: pa.Table
    epoch: int


def scored(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Which presentations of a chunk have statistics: all, except sequences with no
    counted token (``token_count`` 0)."""
    if "token_count" in columns:
        return np.asarray(columns["token_count"]) > 0
    return np.ones(len(columns["sample_id"]), dtype=bool)


def presentations_table(columns: Mapping[str, np.ndarray], epoch: int, rank: int) -> pa.Table:
    """One segment of the ``presentations`` table from a chunk's columns
    (``RecordPresentations``): ``weight`` 1 and ``grand_last`` NaN where not given, the
    statistics of sequences with no counted token null; absent columns are left to
    ``store.schema.conform`` (null)."""
    n = len(columns["sample_id"])
    keep = scored(columns)
    data: dict[str, Any] = {"epoch": np.full(n, epoch, dtype=np.int32)}
    for name in PRESENTATION_COLUMNS:
        if name in columns:
            values = np.asarray(columns[name])
            data[name] = values if keep.all() or name not in SEQUENCE_STATISTICS else pa.array(values, mask=~keep)
        elif name == "weight":
            data[name] = np.ones(n, dtype=np.float32)
        elif name == "grand_last":
            data[name] = np.full(n, np.nan, dtype=np.float32)
    data["rank"] = np.full(n, rank, dtype=np.int16)
    return pa.table(data)


def presentation_sums(columns: Mapping[str, np.ndarray]) -> tuple[float, float, float, float]:
    """A chunk's ``(presentations, loss_sum, correct_sum, count)`` for the epoch's train loss
    and accuracy: loss summed in float64 over the presentations with statistics (``count``
    of them; ``scored``), correct over the same ones (0 when there is no ``correct``)."""
    keep = scored(columns)
    loss = np.asarray(columns["loss"], dtype=np.float64)[keep]
    correct = float(np.count_nonzero(np.asarray(columns["correct"])[keep])) if "correct" in columns else 0.0
    return float(len(keep)), float(loss.sum()), correct, float(len(loss))


def per_layer_sq_norms(parameter_norms: np.ndarray, layer_owner: np.ndarray, num_layers: int) -> np.ndarray:
    """Squared gradient norm of each layer per step, ``[steps, layers]``, from the norms of its
    parameters ``[steps, parameters]``."""
    per_parameter = np.square(parameter_norms)
    per_layer = np.zeros((len(per_parameter), num_layers), dtype=np.float64)
    np.add.at(per_layer.T, layer_owner, per_parameter.T)
    return per_layer


def step_tables(
    buffers: StepBuffers, epoch: int, layers: Sequence[str], layer_owner: np.ndarray
) -> list[PendingTable]:
    """The epoch's ``layer_grad_norms`` rows (when gradient norms were recorded) and its
    ``steps`` rows: loss, global gradient norm and learning rate per step, null where not
    recorded."""
    step_numbers = np.asarray(buffers.step_numbers, dtype=np.int64)
    losses = buffers.step_losses if buffers.step_losses is not None else np.zeros(0, dtype=np.float32)
    grad_norm = np.full(len(step_numbers), np.nan, dtype=np.float32)
    lr = _at_steps(
        step_numbers, np.asarray(buffers.lr_steps, dtype=np.int64), np.asarray(buffers.lrs, dtype=np.float64)
    )
    tables = []
    if buffers.parameter_norms is not None:
        per_layer = per_layer_sq_norms(buffers.parameter_norms, layer_owner, len(layers))
        norm_steps = np.asarray(buffers.grad_norm_steps, dtype=np.int64)
        # on_before_optimizer_step sees the global_step of the batch that made the grads
        grad_norm = _at_steps(step_numbers, norm_steps, np.sqrt(per_layer.sum(axis=1))).astype(np.float32)
        tables.append(PendingTable(
            "layer_grad_norms",
            pa.table(
                {
                    "step": np.repeat(norm_steps, len(layers)),
                    "layer": np.tile(np.asarray(layers, dtype=object), len(norm_steps)),
                    "grad_norm": np.sqrt(per_layer).reshape(-1).astype(np.float32),
                }
            ),
            epoch,
        ))
    tables.append(PendingTable(
        "steps",
        pa.table(
            {
                "step": step_numbers,
                "epoch": np.full(len(step_numbers), epoch, dtype=np.int32),
                "loss": losses,
                # null, not NaN, where not recorded: SQL aggregates skip nulls
                "grad_norm": pa.array(grad_norm, mask=np.isnan(grad_norm)),
                "lr": pa.array(lr, mask=np.isnan(lr)),
            }
        ),
        epoch,
    ))
    return tables


def _at_steps(steps: np.ndarray, value_steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (recorded at ``value_steps``) placed at ``steps``; NaN where none."""
    out = np.full(len(steps), np.nan, dtype=np.float64)
    if len(steps) and len(value_steps):
        order = np.argsort(steps, kind="stable")
        found = np.clip(np.searchsorted(steps[order], value_steps), 0, len(order) - 1)
        position = order[found]
        hit = steps[position] == value_steps
        out[position[hit]] = np.asarray(values, dtype=np.float64)[hit]
    return out


def epoch_row(
    epoch: int, split: str, loss_sum: float, correct_sum: int | None, count: int, rank: int, now: dt.datetime,
    dataloader_idx: int | None = None,
) -> PendingTable:
    """One row of the ``epochs`` table (``correct_sum`` ``None``: outputs without a notion of
    correct, so no accuracy; ``dataloader_idx``: which validation dataloader, ``None`` for
    train rows)."""
    row = pa.table(
        {
            "epoch": [epoch],
            "split": [split],
            "dataloader_idx": pa.array([dataloader_idx], pa.int16()),
            "loss_sum": [loss_sum],
            "correct_sum": pa.array([correct_sum], pa.int64()),
            "num_samples": [count],
            "rank": [rank],
            "time": pa.array([now], pa.timestamp("us", tz="UTC")),
        }
    )
    return PendingTable("epochs", row, epoch)


def val_classes_table(epoch: int, class_sums: np.ndarray, dataloader_idx: int = 0) -> PendingTable:
    """The ``val_classes`` rows of an epoch and validation dataloader from its per-label sums
    ``[2, classes]`` (correct, count), summed over ranks."""
    classes = class_sums.shape[1]
    table = pa.table({
        "epoch": np.full(classes, epoch, dtype=np.int32),
        "dataloader_idx": np.full(classes, dataloader_idx, dtype=np.int16),
        "label": np.arange(classes, dtype=np.int32),
        "correct_sum": class_sums[0].round().astype(np.int64),
        "num_samples": class_sums[1].round().astype(np.int64),
        "rank": np.zeros(classes, dtype=np.int16),
    })
    return PendingTable("val_classes", table, epoch)


def samples_table(samples: Any) -> pa.Table:
    """A run's ``samples`` table from a user's table (Arrow, a mapping of columns or a pandas
    DataFrame) with ``sample_id`` and ``label``: ``original_label`` defaults to the label and
    ``label_noisy`` to whether the two differ."""
    if isinstance(samples, Mapping):
        samples = pa.table(dict(samples))
    elif not isinstance(samples, pa.Table):
        samples = pa.Table.from_pandas(samples, preserve_index=False)
    names = samples.column_names
    if "sample_id" not in names or "label" not in names:
        raise ValueError(f"samples needs 'sample_id' and 'label' columns; got {names}")
    if "original_label" not in names:
        samples = samples.append_column("original_label", samples["label"])
    if "label_noisy" not in names:
        noisy = pc.not_equal(samples["label"], samples["original_label"])
        samples = samples.append_column("label_noisy", noisy)
    return samples
