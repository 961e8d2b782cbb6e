"""Recording a run's dynamics from a child process: the writer side of
``training.recorder.DynamicsRecorder``.

- ``messages``: the typed messages the recorder sends (one frozen dataclass each);
- ``rows``: per-presentation scores in NumPy and the Arrow tables of an epoch;
- ``writer``: ``RunWriter``, the child's side, one named method per message;
- ``frames``: the pickle frames on the pipes between the two processes;
- ``process``: ``WriterProcess`` (the training process's handle) and ``serve`` (the
  child's loop, run by ``python -m store.recording``).

Imports neither torch, Lightning, pandas nor DuckDB (the child starts while training runs).
"""

from store.recording.messages import (
    Close,
    Configure,
    EpochBuffers,
    EpochTotals,
    Flush,
    RecordEpoch,
    RecordValidation,
    SpoolFile,
    Sync,
    WriteSegment,
)
from store.recording.process import WriterProcess, serve
from store.recording.rows import PRESENTATION_COLUMNS, PendingTable, epoch_row, epoch_scores
from store.recording.writer import HANDLERS, RunWriter

__all__ = [
    "HANDLERS",
    "PRESENTATION_COLUMNS",
    "Close",
    "Configure",
    "EpochBuffers",
    "EpochTotals",
    "Flush",
    "PendingTable",
    "RecordEpoch",
    "RecordValidation",
    "RunWriter",
    "SpoolFile",
    "Sync",
    "WriteSegment",
    "WriterProcess",
    "epoch_row",
    "epoch_scores",
    "serve",
]
