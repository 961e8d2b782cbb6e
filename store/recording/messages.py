"""The messages between the recorder and its writer process: one frozen dataclass each.

``training.recorder.DynamicsRecorder`` builds them in the training process,
``store.recording.process`` frames them (pickle protocol 5, NumPy arrays out of band) and
the child hands each one to the ``RunWriter`` method that ``store.recording.writer.HANDLERS``
names for its type. They hold NumPy arrays, numbers and lists only (no torch, no Arrow), so
they pickle cheaply and the child imports nothing heavy.

Writer messages (one ``RunWriter`` method each): ``RecordEpoch``, ``RecordValidation``,
``WriteSegment``, ``Flush``. Control messages (the child's loop answers them itself):
``Configure`` (the first message), ``Sync``, ``Close`` and ``SpoolFile``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class EpochBuffers:
    """One rank's epoch as host arrays, gathered by the recorder once per epoch.

    ``N`` presentations in training order; per-step lists hold one entry per optimisation
    step that recorded the value (``global_step`` numbers).
    """

    logits: np.ndarray  # [N, classes] float32
    targets: np.ndarray  # [N] int64: the given labels
    sample_ids: np.ndarray  # [N] int64
    batch_steps: list[int]  # the global_step of each batch
    batch_sizes: list[int]  # presentations per batch
    step_numbers: list[int]  # steps whose loss is in step_losses
    step_losses: np.ndarray | None  # [steps] float32; None: no loss recorded
    grad_norm_steps: list[int]  # steps whose gradient norms are in parameter_norms
    parameter_norms: np.ndarray | None  # [grad_norm_steps, parameters] float64; None: none recorded
    lr_steps: list[int]
    lrs: list[float]  # learning rate of the first parameter group at lr_steps
    weights: np.ndarray | None  # [N] float32 loss weights; None: all 1
    feature_sqnorms: np.ndarray | None  # [N] float32 ||h||^2 of the last layer's input (GraNd); None: not recorded


@dataclass(frozen=True)
class EpochTotals:
    """Train loss and correctness of an epoch summed over its presentations (over all ranks
    when the training is distributed)."""

    loss_sum: float
    correct_sum: float
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
class RecordEpoch:
    """Score and write one rank's epoch; on global rank zero also queue its train row, its
    steps and gradient norms, and the run's progress."""

    epoch: int
    rank: int
    is_global_zero: bool
    buffers: EpochBuffers
    time: dt.datetime  # the end of the epoch, for the epochs table
    scores: dict[str, np.ndarray] | None = None  # epoch_scores of buffers, when already computed
    totals: EpochTotals | None = None  # summed over ranks; None: this rank's presentations
    val_loss: float | None = None  # the epoch's validation, for run.json's progress
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None


@dataclass(frozen=True, eq=False)
class RecordValidation:
    """Queue an epoch's validation row (summed over ranks) and its per-label counts."""

    epoch: int
    time: dt.datetime
    loss_sum: float
    correct_sum: int
    count: int
    class_sums: np.ndarray | None = None  # [2, classes] float64: correct, count per label


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
