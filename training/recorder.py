"""``DynamicsRecorder``: a Lightning callback that records per-sample training dynamics.

It is a thin adapter. Per training step, on the training thread, it reads what the step
returned (``training.recording_outputs``) and hands it to a chunk buffer
(``training.recording_chunk``), which reduces it to a few statistics per presentation on
its device (``training.reduce``; no host sync): sequence logits and per-sample losses at
once, classification logits from a bounded stage a group of steps at a time; every
``grad_norm_every_n_steps`` it computes the gradient norm of every parameter (one fused
kernel). When a chunk holds ``chunk_rows`` presentations, or the epoch ends, it is copied to
the host once and sent, as a typed message (``store.recording.messages``), to a child
process (``store.recording``, lowest CPU priority, one per rank), which writes it as its
own presentations segment at once; every ``flush_secs`` the child writes the small tables
and run.json. So the recorder holds at most one chunk of statistics, whatever the dataset
size, the class count or the epoch length. ``benchmarks/results/recorder_scale.md`` has the
measured memory and cost.

Contract with the user's ``LightningModule``:

* training batches carry sample ids: ``(x, y, sample_id, ...)`` read by position no further,
  a named tuple with those first fields, or a dict with ``"sample_id"`` and a target under
  ``"y"``, ``"target"``, ``"targets"``, ``"label"`` or ``"labels"``; a loss weight only by
  its name ``"weight"`` (``training.batch``). Ids are integers or strings (mapped to stable
  ids, stored in the run's ``sample_keys`` table: ``training.sample_keys``);
* ``training_step`` returns ``{"loss": loss, "logits": logits}`` with logits ``[B, C]`` and
  class targets ``[B]`` (classification), logits ``[B, T, V]`` with token targets ``[B, T]``
  (sequences; -100 ignored; optional ``"loss_mask"`` ``[B, T]``), or ``{"loss": loss,
  "per_sample_loss": losses}`` with a ``[B]`` loss per sample (any other loss); optionally
  with ``"weight"``: per-sample loss weights actually used (recorded instead of the
  batch's). ``training.recording_outputs`` checks this at the first training batch and
  refuses anything else with one clear error;
* ``validation_step`` may return ``{"loss": ..., "logits": ...}`` too (with batches as
  above, sample ids optional) to get validation loss and accuracy per epoch, per
  validation dataloader.

With ``accumulate_grad_batches=k`` a steps row is one optimizer step: the mean of its
micro-batches' losses (Lightning hands the hook each loss divided by k; it is multiplied
back), and its presentations carry that step's ``global_step``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import torch

from store.errors import StoreError
from store.layout import Store, utc_now
from store.recording.messages import (
    Configure,
    EpochTotals,
    Flush,
    RecordEpoch,
    RecordPresentations,
    WriteSegment,
)
from store.recording.process import WriterProcess
from store.settings import MONITOR_DATALOADER_FIELD
from store.recording.rows import presentation_sums, samples_table
from training.batch import parse_batch
from training.recording_buffers import ChunkBuffer, StepBuffer, ValidationLoaders
from training.recording_outputs import presentation_columns
from training.reduce import SEQUENCE_CORRECT_THRESHOLD
from training.recording_tensors import owning_layers, parameter_grad_norms
from training.sample_keys import SampleKeys

logger = logging.getLogger(__name__)


class DynamicsRecorder(L.Callback):
    """Record loss, p_true, EL2N, correctness, prediction, margin and weight per sample
    presentation (token count and token accuracy for sequences; the loss alone for
    ``per_sample_loss``); loss, gradient norms and learning rate per step; train and
    validation loss and accuracy per epoch, into a trainmap store.

    Args:
        store: store folder (created if missing) or a ``store.Store``.
        run_name: a human-readable name for the run (default: the run id).
        task, model_name, seed, config: recorded with the run for listing and filtering.
        samples: optional table with ``sample_id, label`` and optionally
            ``original_label, label_noisy``; without it the labels seen in training are
            recorded, with no noise flags.
        parent_run_id, curriculum: lineage of a rerun.
        record_grad_norms: record global and per-layer gradient norms (``False``: none).
        grad_norm_every_n_steps: the gradient norms are computed at the steps whose
            ``global_step`` is a multiple of this (``1``: every step); the other steps' rows
            carry a null ``grad_norm``. Loss and learning rate are recorded every step.
            Like Lightning's ``log_every_n_steps``: the norms read every gradient value,
            the one part of the recorder's cost clearly above the noise when computed at
            every step (benchmarks/results/recorder.md and recorder_ablation.md).
        dataset_key: name of the inputs table in ``<store>/datasets`` (for the dashboard).
        grand: optional ``training.grand.GrandRecording``: exact per-sample gradient norms
            on its schedule (table ``grand``) and the last-layer approximation
            ``grand_last`` every step (a presentations column).
        flush_secs: the per-step, per-epoch and validation rows and the run's progress in
            run.json are written at the end of an epoch once this many seconds have passed
            since they were last written (``0``: every epoch), and always at a checkpoint,
            at the end of training and on an error. Per-presentation rows are written
            every ``chunk_rows`` presentations and at the end of every epoch. With the
            default, short epochs do not pay for four small files each, and what a reader
            sees lags the training by at most about a second.
        chunk_rows: the most presentations whose statistics the recorder holds (on the
            training device) before it copies them to the host and has them written as one
            presentations segment; an epoch's rows are written in ceil(rows / chunk_rows)
            segments. Bounds the recorder's memory whatever the dataset size.
        monitor_dataloader_idx: the validation dataloader whose accuracy is the run's
            ``best_val_accuracy`` and "val" curves (default 0, the first); every loader's
            rows are recorded (``epochs`` and ``val_classes`` by ``dataloader_idx``).
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store = "trainmap_runs",
        run_name: str | None = None,
        *,
        task: str = "custom",
        model_name: str | None = None,
        seed: int | None = None,
        config: dict[str, Any] | None = None,
        samples: pa.Table | None = None,
        parent_run_id: str | None = None,
        curriculum: str | None = None,
        record_grad_norms: bool = True,
        grad_norm_every_n_steps: int = 10,
        dataset_key: str | None = None,
        grand: Any | None = None,
        flush_secs: float = 1.0,
        chunk_rows: int = 65_536,
        monitor_dataloader_idx: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(grad_norm_every_n_steps, bool) or not isinstance(grad_norm_every_n_steps, int) \
                or grad_norm_every_n_steps < 1:
            raise ValueError(f"grad_norm_every_n_steps must be a positive integer, got {grad_norm_every_n_steps!r}")
        if not flush_secs >= 0:
            raise ValueError(f"flush_secs must be >= 0 seconds, got {flush_secs!r}")
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        if isinstance(monitor_dataloader_idx, bool) or not isinstance(monitor_dataloader_idx, int) \
                or monitor_dataloader_idx < 0:
            raise ValueError(f"monitor_dataloader_idx must be an integer >= 0, got {monitor_dataloader_idx!r}")
        self.monitor_dataloader_idx = monitor_dataloader_idx
        self.flush_secs = float(flush_secs)
        self.chunk_rows = chunk_rows
        self.store_path = Path(store.root if isinstance(store, Store) else store)
        if self.store_path.exists() and not self.store_path.is_dir():
            raise StoreError(f"store path {str(self.store_path)!r} is a file; expected a directory")
        self.run_name = run_name
        self.task = task
        self.model_name = model_name
        self.seed = seed
        self.config = dict(config or {})
        self.samples = samples
        self.parent_run_id = parent_run_id
        self.curriculum = curriculum
        self.record_grad_norms = record_grad_norms
        self.grad_norm_every_n_steps = grad_norm_every_n_steps
        self.dataset_key = dataset_key
        self.grand = grand
        self.run_id: str | None = None
        self.epochs_recorded = 0
        self.best_val_accuracy: float | None = None
        self.output_kind: str | None = None  # training.reduce.OUTPUT_KINDS, decided at the first batch
        self._chunk = ChunkBuffer(chunk_rows)
        self._chunks_sent = 0  # this epoch's, on this rank
        self._sums = np.zeros(4)  # this epoch's presentations, loss_sum, correct_sum, count (rows.presentation_sums)
        self._steps = StepBuffer()
        self._validation = ValidationLoaders()
        self._keys = SampleKeys()  # string sample keys met, and those not yet written
        self._val: dict[str, float] | None = None
        self._layer_owner: np.ndarray | None = None
        self._layers: list[str] = []
        self._batch_step = 0
        self._parameters: list[torch.nn.Parameter] = []
        self._is_global_zero = True
        self._writer = WriterProcess()
        self._store: Store | None = None

    # -- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "epochs_recorded": self.epochs_recorded,
            "best_val_accuracy": self.best_val_accuracy,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run_id = state_dict["run_id"]
        self.epochs_recorded = int(state_dict["epochs_recorded"])
        self.best_val_accuracy = state_dict.get("best_val_accuracy")

    @property
    def buffered_rows(self) -> int:
        """Presentations whose statistics are held now, not yet sent to the writer (at
        most ``chunk_rows``)."""
        return self._chunk.rows

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.store_path, create=True)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles callbacks: the writer process and cached store stay behind.
        state = dict(self.__dict__)
        state["_writer"] = None
        state["_store"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._writer = WriterProcess()

    # -- lifecycle ---------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        layers, owner = owning_layers(pl_module)
        self._layers = layers
        self._layer_owner = np.asarray(owner, dtype=np.intp)
        self._parameters = [p for p in pl_module.parameters() if p.requires_grad]
        self._is_global_zero = trainer.is_global_zero
        if self.grand is not None:
            self.grand.setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after Lightning restored callback state from a checkpoint (setup runs
        # before), so a resumed fit continues its run instead of starting a new one.
        store = self.store
        run_id = None
        if trainer.is_global_zero:
            if self.run_id is None:
                run_id = store.create_run(
                    name=self.run_name or "",
                    task=self.task,
                    model=self.model_name or type(pl_module).__name__,
                    seed=self.seed,
                    config=self.config,
                    parent_run_id=self.parent_run_id,
                    curriculum=self.curriculum,
                    max_epochs=trainer.max_epochs,
                    world_size=trainer.world_size,
                )
                store.update_run(run_id, name=self.run_name or run_id,
                                 **{MONITOR_DATALOADER_FIELD: self.monitor_dataloader_idx})
                if self.samples is not None:
                    store.write_samples(run_id, samples_table(self.samples))
            else:
                run_id = self.run_id
                if store.run_info(run_id).get("compacted"):
                    store.reopen_run(run_id)
                # Rows recorded after the checkpoint (a run that went on, or died, after
                # saving it) would otherwise be presented twice.
                store.truncate_run(run_id, epoch=trainer.current_epoch, step=trainer.global_step)
                store.update_run(
                    run_id, status="running", error=None, finished_at=None, pid=os.getpid(),
                    max_epochs=trainer.max_epochs, **{MONITOR_DATALOADER_FIELD: self.monitor_dataloader_idx},
                )
        self.run_id = trainer.strategy.broadcast(run_id, src=0)
        self.output_kind = None  # checked again at this fit's first batch
        # The child process that writes this rank's rows (store.recording);
        # it starts, at the lowest CPU priority, while the first epoch trains.
        self._writer.start(Configure(
            store_path=str(self.store_path), run_id=self.run_id, layers=tuple(self._layers),
            layer_owner=self._layer_owner, flush_secs=self.flush_secs,
        ))
        if self.grand is not None:
            self.grand.on_train_start(trainer, pl_module)
            self._write_grand(trainer, f"r{trainer.global_rank:02d}-init")

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.grand is not None:
            self.grand.on_after_backward(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._chunk.clear()
        self._steps.clear()
        self._chunks_sent = 0
        self._sums[:] = 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step
        if self.grand is not None:
            self.grand.on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        feature_sqnorm = None
        if self.grand is not None:
            self.grand.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            feature_sqnorm = self.grand.last_layer_sqnorm()
        if _skipped(outputs):  # training_step returned None: Lightning skipped the batch
            return
        # No host sync from here on, except once at the first batch (the output kind's
        # checks) and once per chunk (ChunkBuffer.add copies a full chunk to the host).
        parts = parse_batch(batch)
        if parts.sample_keys is not None:
            self._keys.add(parts.sample_keys, parts.sample_ids)  # refuses a collision
        batch_columns = presentation_columns(outputs, parts, self.output_kind, feature_sqnorm)
        kind = batch_columns.kind
        if self.output_kind is None:
            self.output_kind = kind
            if trainer.is_global_zero and self.run_id is not None:
                fields: dict[str, Any] = {"output_kind": kind}
                if kind == "sequence":  # the rule forgetting events use, for readers to state
                    fields["sequence_correct_threshold"] = SEQUENCE_CORRECT_THRESHOLD
                self.store.update_run(self.run_id, **fields)
        for chunk in self._chunk.add(
            self._batch_step, batch_columns.columns, batch_columns.size,
            logits=batch_columns.logits, feature_sqnorm=batch_columns.feature_sqnorm,
        ):
            self._send_chunk(trainer, chunk)
        loss = outputs.get("loss")
        if loss is not None and self._is_global_zero:
            # Lightning's automatic optimization divides the loss it hands this hook by
            # accumulate_grad_batches (loops/optimization/automatic.py): undo it.
            if pl_module.automatic_optimization and trainer.accumulate_grad_batches != 1:
                loss = loss * trainer.accumulate_grad_batches
            self._steps.add_loss(self._batch_step, loss)

    def _send_chunk(self, trainer: L.Trainer, columns: dict[str, np.ndarray]) -> None:
        """Hand a chunk of this rank's presentations to the writer, which writes it at once."""
        self._sums += presentation_sums(columns)
        if self.run_id is None:
            return
        part = f"r{trainer.global_rank:02d}-e{trainer.current_epoch:06d}-c{self._chunks_sent:05d}"
        keys = self._keys.take_new_columns()
        if keys is not None:  # string keys met for the first time, written before their rows
            self._writer.send(WriteSegment(table_name="sample_keys", part=part, columns=keys))
        self._writer.send(RecordPresentations(
            epoch=trainer.current_epoch, rank=trainer.global_rank, chunk=self._chunks_sent, columns=columns,
        ))
        self._chunks_sent += 1

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._is_global_zero:
            return
        self._steps.add_lr(self._batch_step, optimizer.param_groups[0]["lr"])
        if not self.record_grad_norms or self._batch_step % self.grad_norm_every_n_steps or not self._parameters:
            return
        # The norms stay tensors until the epoch ends (no host sync per step).
        self._steps.add_grad_norms(self._batch_step, parameter_grad_norms(self._parameters))

    # -- validation --------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation.clear()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not isinstance(outputs, Mapping) or "logits" not in outputs:
            return
        self._validation.add(
            dataloader_idx, outputs["logits"], parse_batch(batch, require_ids=False).targets, outputs.get("loss_mask")
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.run_id is None:
            return
        loaders = len(trainer.num_val_batches)  # the same on every rank: the collectives match
        if self._validation.loaders and self.monitor_dataloader_idx >= loaders:
            raise ValueError(
                f"DynamicsRecorder: monitor_dataloader_idx={self.monitor_dataloader_idx}, but the trainer has "
                f"{loaders} validation dataloader(s); expected an index in [0, {loaders})"
            )
        now = dt.datetime.now(dt.timezone.utc)
        for row in self._validation.reduced(trainer.strategy, pl_module.device, loaders, trainer.current_epoch, now):
            if row.dataloader_idx == self.monitor_dataloader_idx:
                self._val = {"loss": row.loss_sum / row.count, "accuracy": row.correct_sum / row.count}
            if trainer.is_global_zero:
                self._writer.send(row)

    # -- epoch end: hand the epoch to the writer process -------------------------------

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_id is None:
            return
        epoch = trainer.current_epoch
        rest = self._chunk.take()
        if rest is not None:
            self._send_chunk(trainer, rest)
        sums = self._sums
        if trainer.world_size > 1:
            # Exactly over ranks (a collective, so on the training thread, once per epoch).
            local = torch.tensor(sums, dtype=torch.float64, device=pl_module.device)
            sums = trainer.strategy.reduce(local, reduce_op="sum").cpu().numpy()
        presentations, loss_sum, correct_sum, count = (float(v) for v in sums)
        if presentations == 0:
            raise RuntimeError(
                f"DynamicsRecorder: epoch {epoch} recorded no presentations (no training batch returned outputs); "
                "a run with an unrecorded epoch is not marked finished"
            )
        totals = EpochTotals(loss_sum, None if self.output_kind == "loss" else correct_sum, count)
        val = self._val
        if trainer.is_global_zero:
            self.epochs_recorded = epoch + 1
            val_accuracy = val["accuracy"] if val else None
            if val_accuracy is not None and (
                self.best_val_accuracy is None or val_accuracy > self.best_val_accuracy
            ):
                self.best_val_accuracy = val_accuracy
        if self.grand is not None:
            self._write_grand(trainer, f"r{trainer.global_rank:02d}-e{epoch:06d}")
        if trainer.is_global_zero:
            self._writer.send(RecordEpoch(
                epoch=epoch, steps=self._steps.gather(), totals=totals, time=dt.datetime.now(dt.timezone.utc),
                val_loss=val["loss"] if val else None, val_accuracy=val["accuracy"] if val else None,
                best_val_accuracy=self.best_val_accuracy,
            ))
        self._val = None
        self._steps.clear()

    def _flush(self) -> None:
        """Have the writer process write everything queued now."""
        if self.run_id is not None and self._writer.running:
            self._writer.send(Flush())

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # What the checkpoint says was recorded is on disk before training goes on.
        self._flush()
        self._writer.drain()

    def _write_grand(self, trainer: L.Trainer, part: str) -> None:
        rows = self.grand.take_rows()
        if rows is None or len(rows["sample_id"]) == 0:
            return
        self._writer.send(WriteSegment(table_name="grand", part=part, columns=rows))

    # -- end of training -----------------------------------------------------------------

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_id is None:
            return
        self._flush()
        self._writer.close()
        trainer.strategy.barrier("trainmap_compact")
        if trainer.is_global_zero:
            store = self.store
            # Imported here: DuckDB and pandas stay out of the training process until the end.
            from store.queries import compact_run

            compact_run(store, self.run_id)
            store.update_run(self.run_id, status="finished", finished_at=utc_now())
        trainer.strategy.barrier("trainmap_finished")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._chunk.clear()  # an unfinished chunk is dropped; the chunks sent are kept
        try:
            self._flush()
            self._writer.close()
        except Exception:  # the original exception matters more than a write error
            logger.exception("could not write the last segments of run %s", self.run_id)
        if self.run_id is None or not trainer.is_global_zero:
            return
        message = f"{type(exception).__name__}: {exception}"
        try:
            self.store.update_run(self.run_id, status="failed", error=message, finished_at=utc_now())
        except StoreError:
            logger.exception("could not mark run %s as failed", self.run_id)


def _skipped(outputs: Any) -> bool:
    """Whether Lightning skipped the batch: ``training_step`` returned None (no loss, nothing else)."""
    if outputs is None:
        return True
    return isinstance(outputs, Mapping) and outputs.get("loss") is None and not any(
        key != "loss" for key in outputs
    )
