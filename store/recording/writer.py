"""``RunWriter``: the child-process side of recording, one named method per message.

It turns one rank's messages into rows (``store.recording.rows``) and writes them through
``store.layout.Store``. Each chunk of per-presentation statistics is written as its own
segment as soon as it arrives (readable by any process from then on); the small
tables (steps, per-layer gradient norms, epoch and validation rows) and run.json's progress
are queued and written once ``flush_secs`` have passed, or on ``Flush`` (a checkpoint, the
end of training, an error). ``HANDLERS`` maps each writer message type to its method.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from store.errors import StoreError
from store.layout import Store, utc_now
from store.recording.messages import (
    Configure,
    Flush,
    RecordEpoch,
    RecordPresentations,
    RecordValidation,
    WriteSegment,
)
from store.recording.rows import PendingTable, epoch_row, presentations_table, step_tables, val_classes_table


class RunWriter:
    """Writes one rank's rows of one run, as the recorder's messages arrive."""

    def __init__(self, config: Configure) -> None:
        self.store = Store(Path(config.store_path), create=True)
        self.run_id = config.run_id
        self.layers = list(config.layers)
        self.layer_owner = np.asarray(config.layer_owner, dtype=np.intp)
        self.flush_secs = float(config.flush_secs)
        self._pending: list[PendingTable] = []  # small tables not yet written
        self._pending_run: dict[str, Any] = {}  # run.json progress not yet written
        self._last_flush = time.monotonic()
        self._flushes = 0

    def handle(self, message: Any) -> None:
        """Run the method ``HANDLERS`` names for the message's type."""
        handler = HANDLERS.get(type(message))
        if handler is None:
            raise StoreError(f"the recording writer has no handler for {type(message).__name__}")
        handler(self, message)

    def record_presentations(self, message: RecordPresentations) -> None:
        """A chunk of one rank's presentations, written now as its own segment."""
        part = f"r{message.rank:02d}-e{message.epoch:06d}-c{message.chunk:05d}"
        self._write("presentations", presentations_table(message.columns, message.epoch, message.rank), part)

    def record_epoch(self, message: RecordEpoch) -> None:
        """Rank zero's epoch end: the train row, the steps and gradient norms and the run's
        progress, queued for the next flush (now when ``flush_secs`` have passed)."""
        epoch, totals = message.epoch, message.totals
        count = max(totals.count, 1)
        correct_sum = None if totals.correct_sum is None else int(round(totals.correct_sum))
        self._pending.append(epoch_row(epoch, "train", totals.loss_sum, correct_sum, int(totals.count), 0, message.time))
        self._pending.extend(step_tables(message.steps, epoch, self.layers, self.layer_owner))
        self._pending_run.update({
            "epochs_done": epoch + 1,
            "final_train_loss": totals.loss_sum / count,
            "final_train_accuracy": None if totals.correct_sum is None else totals.correct_sum / count,
            "final_val_accuracy": message.val_accuracy,
            "final_val_loss": message.val_loss,
            "best_val_accuracy": message.best_val_accuracy,
        })
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self.flush()

    def record_validation(self, message: RecordValidation) -> None:
        """The validation row and per-label counts of one validation dataloader, queued for
        the next flush."""
        self._pending.append(epoch_row(
            message.epoch, "val", message.loss_sum, message.correct_sum, message.count, 0, message.time,
            dataloader_idx=message.dataloader_idx,
        ))
        if message.class_sums is not None:
            self._pending.append(val_classes_table(message.epoch, message.class_sums, message.dataloader_idx))

    def write_segment(self, message: WriteSegment) -> None:
        self._write(message.table_name, pa.table(message.columns), message.part)

    def flush(self, message: Flush | None = None) -> None:
        """The queued small tables (one segment per table, named by its epochs) and
        run.json's progress."""
        self._last_flush = time.monotonic()
        if not (self._pending or self._pending_run):
            return
        by_table: dict[str, list[PendingTable]] = {}
        for pending in self._pending:
            by_table.setdefault(pending.table_name, []).append(pending)
        run_update, self._pending, self._pending_run = dict(self._pending_run), [], {}
        for table_name, parts in by_table.items():
            epochs = [part.epoch for part in parts]
            # unique within a writer; a resumed run first drops every row from its epoch on
            name = f"e{min(epochs):06d}-e{max(epochs):06d}-f{self._flushes:05d}"
            self._write(table_name, pa.concat_tables([part.table for part in parts]), name)
        self._flushes += 1
        if run_update:
            self.store.update_run(self.run_id, **run_update)

    def abandoned_by(self, pid: int) -> None:
        """The training process ``pid`` ended without closing this writer (killed, out of
        memory): mark the run failed if it still says "running" under that process, so
        that no listing shows it running forever. A resumed run (another pid) is left
        alone, and so is every rank but the one that owns run.json."""
        info = self.store.run_info(self.run_id)
        if info.get("status") != "running" or info.get("pid") != pid:
            return
        epochs = int(info.get("epochs_done") or 0)
        self.store.update_run(
            self.run_id,
            status="failed",
            error=f"the training process (pid {pid}) ended without finishing the run (killed, or out of "
            f"memory?); the {epochs} epoch(s) it recorded are kept",
            finished_at=utc_now(),
        )

    def _write(self, table_name: str, table: pa.Table, part: str) -> None:
        self.store.write_segment(self.run_id, table_name, table, part)


#: The ``RunWriter`` method that handles each writer message.
HANDLERS: dict[type, Callable[[RunWriter, Any], None]] = {
    RecordPresentations: RunWriter.record_presentations,
    RecordEpoch: RunWriter.record_epoch,
    RecordValidation: RunWriter.record_validation,
    WriteSegment: RunWriter.write_segment,
    Flush: RunWriter.flush,
}
