"""Recording a run's dynamics from a child process: the writer side of
``training.recorder.DynamicsRecorder``.

- ``messages``: the typed messages the recorder sends (one frozen dataclass each);
- ``rows``: the Arrow tables built from those messages (presentations chunks, steps, epochs);
- ``writer``: ``RunWriter``, the child's side, one named method per message;
- ``frames``: the pickle frames on the pipes between the two processes;
- ``process``: ``WriterProcess`` (the training process's handle) and ``serve`` (the
  child's loop, run by ``python -m store.recording``).

Imports neither torch, Lightning, pandas nor DuckDB (the child starts while training runs).
"""

from store.recording.messages import (
    Close,
    Configure,
    EpochTotals,
    Flush,
    RecordEpoch,
    RecordPresentations,
    RecordValidation,
    SpoolFile,
    StepBuffers,
    Sync,
    WriteSegment,
)
from store.recording.process import WriterProcess, serve
from store.recording.rows import PRESENTATION_COLUMNS, PendingTable, epoch_row, presentations_table
from store.recording.writer import HANDLERS, RunWriter

__all__ = [
    "HANDLERS",
    "PRESENTATION_COLUMNS",
    "Close",
    "Configure",
    "EpochTotals",
    "Flush",
    "PendingTable",
    "RecordEpoch",
    "RecordPresentations",
    "RecordValidation",
    "RunWriter",
    "SpoolFile",
    "StepBuffers",
    "Sync",
    "WriteSegment",
    "WriterProcess",
    "epoch_row",
    "presentations_table",
    "serve",
]
