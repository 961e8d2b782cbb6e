"""The rows a recording writes: per-presentation scores in NumPy and the Arrow tables built
from what the recorder hands over (``store.recording.messages``), and the run's samples table.

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

from store.recording.messages import EpochBuffers, EpochTotals

#: Presentation columns computed per epoch (epoch and rank are added).
PRESENTATION_COLUMNS = (
    "step", "sample_id", "label", "loss", "p_true", "el2n", "correct", "pred", "margin", "weight", "grand_last",
)


@dataclass(frozen=True)
class PendingTable:
    """Rows of a small table waiting for the next flush, with the epoch they belong to."""

    table_name: str
    table: pa.Table
    epoch: int


def epoch_scores(logits: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """All per-presentation scores of an epoch at once, in NumPy: loss, p_true, EL2N,
    correct, pred and margin, the same values as the single-score functions in
    ``training.scores`` (tested to float32 rounding) for ``logits [N, C]`` and
    ``targets [N]``.

    It works on one class-major copy ``[C, N]``, so every reduction over classes runs
    across N contiguous lanes instead of along short rows.
    """
    x = np.ascontiguousarray(logits.T, dtype=np.float32)  # [C, N]
    columns = np.arange(x.shape[1])
    rows = np.asarray(targets, dtype=np.intp)
    assigned = x[rows, columns]
    top = x.max(axis=0)
    exp = np.exp(x - top)
    total = exp.sum(axis=0)  # softmax denominator / exp(top), in [1, C]
    given = exp[rows, columns]
    exp[rows, columns] = 0.0  # the other classes' unnormalised probabilities
    # EL2N from the other classes, as ``training.scores.el2n`` explains (no cancellation
    # near p_y = 1).
    el2n = np.sqrt(np.einsum("cn,cn->n", exp, exp) + np.square(exp.sum(axis=0))) / total
    pred = np.asarray(logits).argmax(axis=1)  # row-wise: ties go to the first class, as torch's
    x[rows, columns] = -np.inf
    return {
        "loss": np.log(total) - (assigned - top),
        "p_true": given / total,
        "el2n": el2n,
        "correct": pred == rows,
        "pred": pred.astype(np.int32),
        "margin": assigned - x.max(axis=0),
    }


def epoch_totals(scores: dict[str, np.ndarray]) -> EpochTotals:
    """Loss and correctness of ``epoch_scores`` summed over the presentations (loss in float64)."""
    return EpochTotals(
        float(scores["loss"].astype(np.float64).sum()), float(scores["correct"].sum()), float(len(scores["loss"]))
    )


def presentation_columns(buffers: EpochBuffers, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``PRESENTATION_COLUMNS`` of an epoch, from its buffers and ``epoch_scores``."""
    columns = dict(scores)
    columns["label"] = buffers.targets.astype(np.int32)
    columns["sample_id"] = buffers.sample_ids
    n = len(buffers.sample_ids)
    columns["weight"] = buffers.weights if buffers.weights is not None else np.ones(n, dtype=np.float32)
    if buffers.feature_sqnorms is not None:
        # Last-layer GraNd approximation (DESIGN.md): EL2N * sqrt(||h||^2 + 1).
        columns["grand_last"] = columns["el2n"] * np.sqrt(buffers.feature_sqnorms + 1.0)
    else:
        columns["grand_last"] = np.full(n, np.nan, dtype=np.float32)
    columns["step"] = np.repeat(np.asarray(buffers.batch_steps, dtype=np.int64), buffers.batch_sizes)
    return columns


def presentations_table(columns: dict[str, np.ndarray], epoch: int, rank: int) -> pa.Table:
    """One segment of the ``presentations`` table: ``presentation_columns`` with epoch and rank."""
    n = len(columns["sample_id"])
    return pa.table(
        {
            "epoch": np.full(n, epoch, dtype=np.int32),
            **{name: columns[name] for name in PRESENTATION_COLUMNS},
            "rank": np.full(n, rank, dtype=np.int16),
        }
    )


def per_layer_sq_norms(parameter_norms: np.ndarray, layer_owner: np.ndarray, num_layers: int) -> np.ndarray:
    """Squared gradient norm of each layer per step, ``[steps, layers]``, from the norms of its
    parameters ``[steps, parameters]``."""
    per_parameter = np.square(parameter_norms)
    per_layer = np.zeros((len(per_parameter), num_layers), dtype=np.float64)
    np.add.at(per_layer.T, layer_owner, per_parameter.T)
    return per_layer


def step_tables(
    buffers: EpochBuffers, epoch: int, layers: Sequence[str], layer_owner: np.ndarray
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
    epoch: int, split: str, loss_sum: float, correct_sum: int, count: int, rank: int, now: dt.datetime
) -> PendingTable:
    """One row of the ``epochs`` table."""
    row = pa.table(
        {
            "epoch": [epoch],
            "split": [split],
            "loss_sum": [loss_sum],
            "correct_sum": [correct_sum],
            "num_samples": [count],
            "rank": [rank],
            "time": pa.array([now], pa.timestamp("us", tz="UTC")),
        }
    )
    return PendingTable("epochs", row, epoch)


def val_classes_table(epoch: int, class_sums: np.ndarray) -> PendingTable:
    """The ``val_classes`` rows of an epoch from its per-label sums ``[2, classes]`` (correct,
    count), summed over ranks."""
    classes = class_sums.shape[1]
    table = pa.table({
        "epoch": np.full(classes, epoch, dtype=np.int32),
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
