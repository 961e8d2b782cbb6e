"""The messages between the recorder and its writer process: one frozen dataclass each.

``training.recorder.DynamicsRecorder`` builds them in the training process,
``store.recording.process`` frames them (pickle protocol 5, NumPy arrays out of band) and
the child hands each one to the ``RunWriter`` method that ``store.recording.writer.HANDLERS``
names for its type. They hold NumPy arrays, numbers and lists only (no torch, no Arrow), so
they pickle cheaply and the child imports nothing heavy.

Writer messages (one ``RunWriter`` method each): ``RecordPresentations`` (a chunk of
per-presentation statistics, already reduced on the training device), ``RecordEpoch``,
``RecordValidation``, ``WriteSegment``, ``Flush``. Control messages (the child's loop answers
them itself): ``Configure`` (the first message), ``Sync``, ``Close`` and ``SpoolFile``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class StepBuffers:
    """Rank zero's per-step values of an epoch, as host values: one entry per optimisation
    step that recorded the value (``global_step`` numbers)."""

    step_numbers: list[int]  # steps whose loss is in step_losses
    step_losses: np.ndarray | None  # [steps] float32; None: no loss recorded
    grad_norm_steps: list[int]  # steps whose gradient norms are in parameter_norms
    parameter_norms: np.ndarray | None  # [grad_norm_steps, parameters] float64; None: none recorded
    lr_steps: list[int]
    lrs: list[float]  # learning rate of the first parameter group at lr_steps


@dataclass(frozen=True)
class EpochTotals:
    """Train loss and correctness of an epoch summed over its presentations (over all ranks
    when the training is distributed). ``count`` counts the presentations with a loss (a
    sequence with no counted token has none); ``correct_sum`` is ``None`` when the outputs
    have no notion of correct (``per_sample_loss``)."""

    loss_sum: float
    correct_sum: float | None
    count: float


@dataclass(frozen=True, eq=False)
class Configure:
    """The first message: the run the child writes and how (``RunWriter``'s configuration)."""

    store_path: str
    run_id: str
    layers: tuple[str, ...]  # layer (module path) names, in parameter order
    layer_owner: np.ndarray  # [parameters] int: index into layers of each trainable parameter
    flush_secs: float  # small tables and run.json at most this often (0: every epoch)


@dataclass(frozen=True, eq=False)
class RecordPresentations:
    """Write one chunk of one rank's presentations of an epoch now, as its own segment.

    ``columns`` are ``store.schema.PRESENTATIONS`` columns (``[rows]`` arrays: ``step`` and
    ``sample_id`` always; the statistics the outputs have); a column that is absent is
    written null, except ``weight`` (1) and ``grand_last`` (NaN). ``chunk`` numbers the
    chunks of the epoch on this rank from 0.
    """

    epoch: int
    rank: int
    chunk: int
    columns: dict[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class RecordEpoch:
    """Rank zero's end of an epoch: queue its train row, its steps and gradient norms, and
    the run's progress (its presentations went in ``RecordPresentations`` chunks)."""

    epoch: int
    steps: StepBuffers
    totals: EpochTotals  # summed over ranks
    time: dt.datetime  # the end of the epoch, for the epochs table
    val_loss: float | None = None  # the epoch's validation, for run.json's progress
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None


@dataclass(frozen=True, eq=False)
class RecordValidation:
    """Queue an epoch's validation row of one validation dataloader (summed over ranks) and
    its per-label counts."""

    epoch: int
    time: dt.datetime
    loss_sum: float
    correct_sum: int
    count: int
    class_sums: np.ndarray | None = None  # [2, classes] float64: correct, count per label
    dataloader_idx: int = 0  # which validation dataloader (Lightning's dataloader_idx)


@dataclass(frozen=True, eq=False)
class WriteSegment:
    """Write one segment of ``table_name`` now, from its columns (GraNd's rows)."""

    table_name: str
    part: str
    columns: dict[str, np.ndarray]


@dataclass(frozen=True)
class Flush:
    """Write the queued small tables and run.json's progress now (a checkpoint, the end of
    training, an error)."""


@dataclass(frozen=True)
class Sync:
    """Answer with the first error since the previous ``Sync`` (``None`` if there was none)."""


@dataclass(frozen=True)
class Close:
    """An orderly end: the training process, not the child, settles the run's status."""


@dataclass(frozen=True)
class SpoolFile:
    """The next message is the frame in this file (one too large for the pipe)."""

    path: str
