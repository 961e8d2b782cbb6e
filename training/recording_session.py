"""``Recorder``: record per-sample training dynamics from any training loop (plain PyTorch,
Lightning Fabric, Hugging Face, your own). ``training.recorder.DynamicsRecorder`` is the
Lightning Trainer's adapter over it.

Per epoch a loop calls ``log_batch`` for each training batch, ``log_step`` after each
backward, ``log_validation`` for validation batches and ``end_epoch``; leaving the ``with
Recorder(...) as rec:`` block finishes the run (compacted, ``finished``), and an exception
marks it ``failed`` with the error, keeping what was recorded. README, "Any training loop",
has a whole loop.

What it records, and how, is what the Lightning callback records (README, "In your own
LightningModule"): each batch's outputs are checked at the first batch (refused with one
clear line otherwise), reduced on their device to a few statistics per sample with no host
sync (``training.reduce``), held in one bounded chunk (``training.recording_chunk``) and
handed, a chunk at a time, to a child process that writes them (``store.recording``).

Distributed: every rank makes its own ``Recorder`` with the same arguments; rank zero
creates the run and the others learn its id. The collectives (the run id's broadcast, the
epoch's sums, the barriers at the end) go through ``collectives``: by default
``torch.distributed`` when it is initialised (``torchrun``, Fabric's DDP), a single process
otherwise; the Lightning adapter passes the Trainer's strategy.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from store.errors import StoreError
from store.layout import Store, utc_now
from store.recording.messages import Configure, EpochTotals, Flush, RecordEpoch, RecordPresentations, WriteSegment
from store.recording.process import WriterProcess
from store.recording.rows import presentation_sums
from store.run_tables import PADDING_DROPPED
from training.batch import TrainingBatch
from training.groups import GroupNames
from training.recording_buffers import ChunkBuffer, StepBuffer, ValidationLoaders
from training.recording_collectives import default_collectives
from training.recording_outputs import presentation_columns
from training.recording_padding import PaddingFilter
from training.recording_runs import (Heartbeat, outcome_of, check_settings, create_run, device_of, resume_run,
                                     step_progress, store_folder)
from training.recording_tensors import owning_layers, parameter_grad_norms
from training.reduce import SEQUENCE_CORRECT_THRESHOLD
from training.sample_keys import SampleKeys, sample_id_tensor

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)


class Recorder:
    """Record loss, p_true, EL2N, correctness, prediction, margin, weight and group per sample
    presentation (token count and token accuracy for sequences; the loss alone for a
    per-sample loss); loss, gradient norms and learning rate per step; train and validation
    loss and accuracy per epoch, into a trainmap store.

    Args:
        store: store folder (created if missing) or a ``store.Store``.
        run_name: a human-readable name for the run (default: the run id).
        task, model_name, seed, config: recorded with the run for listing and filtering.
        samples: optional table ``sample_id, label[, original_label, label_noisy]``.
        parent_run_id, curriculum: lineage of a rerun.
        model: the model trained: ``log_step`` records its gradient norms per layer, unless
            ``record_grad_norms`` is False, at the steps that are a multiple of
            ``grad_norm_every_n_steps`` (``1``: every step).
        flush_secs, chunk_rows, monitor_dataloader_idx: as ``DynamicsRecorder``'s.
        max_epochs: recorded with the run (for progress displays).
        rank, world_size: this process's rank and the number of processes (default: ``collectives``').
        collectives: ``broadcast(obj, src=0)``, ``reduce(tensor, reduce_op="sum")`` and
            ``barrier(name)``; default ``torch.distributed`` when initialised.
        run_id: an existing run to continue (``start`` drops its rows from the resume point on).
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
        samples: Any | None = None,
        parent_run_id: str | None = None,
        curriculum: str | None = None,
        model: torch.nn.Module | None = None,
        record_grad_norms: bool = True,
        grad_norm_every_n_steps: int = 10,
        flush_secs: float = 1.0,
        chunk_rows: int = 65_536,
        monitor_dataloader_idx: int = 0,
        max_epochs: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        collectives: Any | None = None,
        run_id: str | None = None,
    ) -> None:
        check_settings(grad_norm_every_n_steps=grad_norm_every_n_steps, chunk_rows=chunk_rows,
                       monitor_dataloader_idx=monitor_dataloader_idx, flush_secs=flush_secs)
        self.store_path = store_folder(store)
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
        self.flush_secs = float(flush_secs)
        self.chunk_rows = chunk_rows
        self.monitor_dataloader_idx = monitor_dataloader_idx
        self.max_epochs = max_epochs
        self.collectives = collectives if collectives is not None else default_collectives()
        self.rank = int(rank if rank is not None else self.collectives.global_rank)
        self.world_size = int(world_size if world_size is not None else self.collectives.world_size)
        self.run_id = run_id
        self.epoch = 0  # the epoch being recorded
        self.epochs_recorded = 0
        self.best_val_accuracy: float | None = None
        self.output_kind: str | None = None  # training.reduce.OUTPUT_KINDS, decided at the first batch
        self._chunk = ChunkBuffer(chunk_rows)
        self._chunks_sent = 0  # this epoch's, on this rank
        self._padding = PaddingFilter()
        self._sums = np.zeros(4)  # this epoch's presentations, loss_sum, correct_sum, count
        self._steps = StepBuffer()
        self._validation = ValidationLoaders()
        self._keys = SampleKeys()
        self._groups = GroupNames()
        self._val: dict[str, float] | None = None
        self._layers: list[str] = []
        self._layer_owner = np.zeros(0, dtype=np.intp)
        self._parameters: list[torch.nn.Parameter] = []
        self._writer = WriterProcess()
        self._store: Store | None = None
        self._started = False
        self._heartbeat: Heartbeat | None = None
        if model is not None:
            self.watch(model)

    # -- state -------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.store_path, create=True)
        return self._store

    @property
    def buffered_rows(self) -> int:  # presentations held now, not yet sent (at most ``chunk_rows``)
        return self._chunk.rows

    @property
    def chunks_sent(self) -> int:  # this epoch's chunks handed to the writer, on this rank
        return self._chunks_sent

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles callbacks: the writer process, heartbeat and cached store stay behind.
        state = dict(self.__dict__)
        state.update(_writer=None, _store=None, _heartbeat=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._writer = WriterProcess()

    def drop_padding_of(self, sampler: Any) -> None:
        """Write no row for the padding of ``sampler`` (``training.recording_padding``)."""
        self._padding.watch(sampler, lambda: self.rank or self.store.update_run(self.run_id, **{PADDING_DROPPED: True}))

    def watch(self, model: torch.nn.Module) -> None:
        """Record the gradient norms of ``model``'s trainable parameters, per layer."""
        layers, owner = owning_layers(model)
        self._layers = layers
        self._layer_owner = np.asarray(owner, dtype=np.intp)
        self._parameters = [p for p in model.parameters() if p.requires_grad]

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> None:
        if error is not None:
            self.fail(error)
            return
        try:
            self.finish()
        except BaseException as failure:  # the run must not stay "running"
            self.fail(failure)
            raise

    def start(self, *, resume_epoch: int | None = None, resume_step: int | None = None) -> str:
        """Create the run (rank zero; the others receive its id) or, when ``run_id`` is set,
        continue it from ``resume_epoch``/``resume_step`` (rows from there on are dropped);
        start this rank's writer process. Returns the run id."""
        run_id = self._create_or_resume(resume_epoch, resume_step) if self.rank == 0 else None
        self.run_id = self.collectives.broadcast(run_id, src=0)
        if self.rank == 0:  # readers tell a dead run from a live one by it (Store.run_state)
            self._stop_heartbeat()
            self._heartbeat = Heartbeat(self.store, self.run_id, progress=step_progress(self)).start()
        self.epoch = resume_epoch if resume_epoch is not None else self.epochs_recorded
        self.output_kind = None  # checked again at this start's first batch
        self._writer.start(Configure(
            store_path=str(self.store_path), run_id=self.run_id, layers=tuple(self._layers),
            layer_owner=self._layer_owner, flush_secs=self.flush_secs,
        ))
        self._started = True
        self._begin_epoch()
        return self.run_id

    def _create_or_resume(self, resume_epoch: int | None, resume_step: int | None) -> str:
        if self.run_id is None:
            return create_run(
                self.store, name=self.run_name, task=self.task, model=self.model_name or "model", seed=self.seed,
                config=self.config, parent_run_id=self.parent_run_id, curriculum=self.curriculum,
                max_epochs=self.max_epochs, world_size=self.world_size, samples=self.samples,
                monitor_dataloader_idx=self.monitor_dataloader_idx,
            )
        resume_run(self.store, self.run_id, epoch=resume_epoch or 0, step=resume_step or 0,
                   max_epochs=self.max_epochs, monitor_dataloader_idx=self.monitor_dataloader_idx)
        return self.run_id

    def _require_started(self, what: str) -> None:
        if not self._started:
            raise RuntimeError(f"Recorder.{what}: the recorder is not started; use `with Recorder(...) as rec:` "
                               "or call rec.start() first")

    def _begin_epoch(self) -> None:
        self._chunk.clear()
        self._steps.clear()
        self._chunks_sent = 0
        self._sums[:] = 0
        self._padding.begin_epoch()

    def write_segment(self, table_name: str, part: str, columns: Mapping[str, np.ndarray]) -> None:
        """Have the writer write ``columns`` as one segment of ``table_name`` (GraNd's rows)."""
        self._writer.send(WriteSegment(table_name=table_name, part=part, columns=dict(columns)))

    def drain(self) -> None:
        """Wait until the writer has written what it was handed (the small tables: ``sync``)."""
        self._writer.drain()

    def sync(self) -> None:
        """Write everything handed over so far, small tables included, and wait until it is
        on disk (what a checkpoint says was recorded)."""
        self._flush()
        self._writer.drain()

    def finish(self) -> None:
        """End the run: write what is left, compact its files (rank zero) and mark it finished."""
        if self.run_id is None:
            return
        if self._chunk.rows:
            raise RuntimeError(
                f"Recorder.finish: {self._chunk.rows} presentations were logged after the last end_epoch(); "
                "call end_epoch() before finishing so that the epoch is recorded"
            )
        self._flush()
        self._writer.close()
        self._started = False
        self.collectives.barrier("trainmap_compact")
        if self.rank == 0:
            store = self.store
            # Imported here: DuckDB and pandas stay out of the training process until the end.
            from store.queries import compact_run

            compact_run(store, self.run_id)
            store.update_run(self.run_id, status="finished", finished_at=utc_now())
            self._stop_heartbeat()
        self.collectives.barrier("trainmap_finished")

    def fail(self, exception: BaseException) -> None:
        """Mark the run failed with ``exception``; the chunks already sent are kept, the
        unfinished one is dropped."""
        self._chunk.clear()
        self._started = False
        try:
            self._flush()
            self._writer.close()
        except Exception as error:  # the original exception matters more than a write error: one line
            logger.error("could not write the last segments of run %s: %s", self.run_id, error)
        self._stop_heartbeat()
        if self.run_id is None or self.rank != 0:
            return
        status, message = outcome_of(exception)
        try:
            self.store.update_run(self.run_id, status=status, error=message, finished_at=utc_now())
        except StoreError:
            logger.exception("could not mark run %s as %s", self.run_id, status)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def _flush(self) -> None:
        if self.run_id is not None and self._writer.running:
            self._writer.send(Flush())

    # -- per batch and per step ----------------------------------------------------------

    def log_batch(
        self,
        sample_ids: Any,
        outputs: Tensor | Mapping[str, Any],
        targets: Tensor | None = None,
        *,
        step: int,
        epoch: int | None = None,
        loss_mask: Tensor | None = None,
        weights: Tensor | None = None,
        groups: Any = None,
    ) -> None:
        """Record one training batch.

        ``outputs``: logits ``[B, C]`` with integer class ``targets [B]``; logits ``[B, T, V]``
        with token ``targets [B, T]`` (-100 ignored; ``loss_mask [B, T]`` optional); or a
        per-sample loss ``[B]`` of any loss (``targets`` not needed); or a dict as a
        LightningModule's ``training_step`` returns it. ``sample_ids``: integers or strings,
        one per sample. ``weights``: the per-sample loss weights trained with. ``groups``:
        each sample's group (strings or non-negative integers, ``training.groups``).
        ``step``: the optimizer step the batch belongs to (micro-batches of one step share it).
        ``epoch``, when given, must be the epoch being recorded (``end_epoch`` moves on).
        """
        self._require_started("log_batch")
        if epoch is not None and epoch != self.epoch:
            raise ValueError(
                f"Recorder.log_batch: epoch={epoch}, but epoch {self.epoch} is being recorded; call "
                "end_epoch() when an epoch ends (it moves on to the next)"
            )
        if isinstance(outputs, Mapping):
            given = dict(outputs)
        elif isinstance(outputs, Tensor) and outputs.ndim == 1:
            given = {"per_sample_loss": outputs}
        else:
            given = {"logits": outputs}
        if loss_mask is not None:
            given["loss_mask"] = loss_mask
        ids, keys = sample_id_tensor(sample_ids)
        parts = TrainingBatch(None, targets, ids, weights, keys, groups)
        self.log_outputs(given, parts, step)

    def log_outputs(
        self, outputs: Mapping[str, Any], parts: TrainingBatch, step: int, feature_sqnorm: Tensor | None = None
    ) -> None:
        """Record a batch from ``training_step``-style ``outputs`` and the parsed batch
        (the adapters' entry point; ``log_batch`` builds both). ``feature_sqnorm``: GraNd's
        ``||h||^2`` of the final layer's input, for ``grand_last``."""
        if parts.sample_keys is not None:
            self._keys.add(parts.sample_keys, parts.sample_ids)  # refuses a collision
        batch = presentation_columns(outputs, parts, self.output_kind, feature_sqnorm)
        columns = batch.columns
        ids = self._groups.batch_ids(parts.groups, batch.size, first=self.output_kind is None)
        if ids is not None:
            columns = {**columns, "group_id": ids}
        if self.output_kind is None:
            self._first_batch(batch.kind, columns)
        for chunk in self._chunk.add(step, columns, batch.size, logits=batch.logits,
                                     feature_sqnorm=batch.feature_sqnorm):
            self._send_chunk(chunk)

    def _first_batch(self, kind: str, columns: Mapping[str, Tensor | None]) -> None:
        group_ids = columns.get("group_id")
        if group_ids is not None and group_ids.numel() and int(group_ids.min()) < 0:  # one sync, first batch
            raise ValueError(f"DynamicsRecorder: a batch's integer groups must be >= 0; got {int(group_ids.min())}")
        self.output_kind = kind
        if self.rank == 0 and self.run_id is not None:
            fields: dict[str, Any] = {"output_kind": kind}
            if kind == "sequence":  # the rule forgetting events use, for readers to state
                fields["sequence_correct_threshold"] = SEQUENCE_CORRECT_THRESHOLD
            self.store.update_run(self.run_id, **fields)

    def _send_chunk(self, columns: dict[str, np.ndarray]) -> None:
        """Hand a chunk of this rank's presentations to the writer, which writes it at once."""
        self._sums += presentation_sums(columns)  # what was trained on, padding included
        columns = self._padding.trim(columns)
        if self.run_id is None or not len(columns["sample_id"]):
            return
        part = f"r{self.rank:02d}-e{self.epoch:06d}-c{self._chunks_sent:05d}"
        keys = self._keys.take_new_columns()
        if keys is not None:  # string keys met for the first time, written before their rows
            self._writer.send(WriteSegment(table_name="sample_keys", part=part, columns=keys))
        if "group_id" in columns:
            self._groups.add_ids(columns["group_id"])
            groups = self._groups.take_new_columns()
            if groups is not None:  # likewise the groups' names
                self._writer.send(WriteSegment(table_name="groups", part=part, columns=groups))
        self._writer.send(RecordPresentations(epoch=self.epoch, rank=self.rank, chunk=self._chunks_sent,
                                              columns=columns))
        self._chunks_sent += 1

    def record_loss(self, step: int, loss: Tensor | float) -> None:
        """The training loss at optimizer ``step`` (micro-batches of one step: their mean)."""
        if self.rank == 0:
            self._steps.add_loss(step, loss if isinstance(loss, Tensor) else torch.tensor(float(loss)))

    def record_lr(self, step: int, lr: float) -> None:
        if self.rank == 0:
            self._steps.add_lr(step, float(lr))

    def measure_grad_norms(self, step: int) -> None:
        """The gradient norm of every watched parameter, on the steps the schedule picks
        (no host sync: they stay tensors until the epoch ends)."""
        if self.rank != 0 or not self.record_grad_norms or not self._parameters \
                or step % self.grad_norm_every_n_steps:
            return
        self._steps.add_grad_norms(step, parameter_grad_norms(self._parameters))

    def log_step(self, step: int, *, loss: Tensor | float | None = None, lr: float | None = None) -> None:
        """Record optimizer ``step``: loss, learning rate and (a watched ``model``, on the
        schedule) gradient norms: call it after ``backward()``, before ``zero_grad()``."""
        self._require_started("log_step")
        if loss is not None:
            self.record_loss(step, loss)
        if lr is not None:
            self.record_lr(step, lr)
        self.measure_grad_norms(step)

    # -- validation ------------------------------------------------------------------------

    def log_validation(
        self, logits: Tensor, targets: Tensor, *, loss_mask: Tensor | None = None, dataloader_idx: int = 0
    ) -> None:
        """Add a validation batch (logits ``[B, C]`` or ``[B, T, V]`` with their targets) to
        this epoch's validation sums of loader ``dataloader_idx``."""
        self._require_started("log_validation")
        self._validation.add(dataloader_idx, logits, targets, loss_mask)

    def end_validation(self, loaders: int | None = None, device: torch.device | None = None) -> None:
        """Sum the epoch's validation batches over ranks and record them (``end_epoch`` does
        it if needed). ``loaders``: the number of loaders, the same on every rank (default: seen)."""
        if self.run_id is None:
            return
        seen = self._validation.loaders
        loaders = loaders if loaders is not None else (max(seen) + 1 if seen else 0)
        if seen and self.monitor_dataloader_idx >= loaders:
            raise ValueError(
                f"DynamicsRecorder: monitor_dataloader_idx={self.monitor_dataloader_idx}, but there are "
                f"{loaders} validation dataloader(s); expected an index in [0, {loaders})"
            )
        now = dt.datetime.now(dt.timezone.utc)
        device = device or device_of(self._parameters)
        for row in self._validation.reduced(self.collectives, device, loaders, self.epoch, now):
            if row.dataloader_idx == self.monitor_dataloader_idx:
                self._val = {"loss": row.loss_sum / row.count, "accuracy": row.correct_sum / row.count}
            if self.rank == 0:
                self._writer.send(row)
        self._validation.clear()

    # -- end of epoch ----------------------------------------------------------------------

    def end_epoch(self, epoch: int | None = None, device: torch.device | None = None) -> None:
        """Hand the epoch's last rows to the writer with its per-step values and totals (a
        collective over ranks) and move on to the next epoch. An epoch that recorded no
        presentation on any rank fails: a run never finishes with an empty epoch."""
        self._require_started("end_epoch")
        if epoch is not None and epoch != self.epoch:
            raise ValueError(f"Recorder.end_epoch: epoch={epoch}, but epoch {self.epoch} is being recorded")
        if self._validation.loaders:
            self.end_validation(device=device)
        rest = self._chunk.take()
        if rest is not None:
            self._send_chunk(rest)
        sums = self._sums
        if self.world_size > 1:
            local = torch.tensor(sums, dtype=torch.float64, device=device or device_of(self._parameters))
            sums = self.collectives.reduce(local, reduce_op="sum").cpu().numpy()
        presentations, loss_sum, correct_sum, count = (float(v) for v in sums)
        if presentations == 0:
            raise RuntimeError(
                f"DynamicsRecorder: epoch {self.epoch} recorded no presentations (no training batch returned "
                "outputs); a run with an unrecorded epoch is not marked finished"
            )
        totals = EpochTotals(loss_sum, None if self.output_kind == "loss" else correct_sum, count)
        val = self._val
        if self.rank == 0:
            self.epochs_recorded = self.epoch + 1
            val_accuracy = val["accuracy"] if val else None
            if val_accuracy is not None and (self.best_val_accuracy is None or val_accuracy > self.best_val_accuracy):
                self.best_val_accuracy = val_accuracy
            self._writer.send(RecordEpoch(
                epoch=self.epoch, steps=self._steps.gather(), totals=totals, time=dt.datetime.now(dt.timezone.utc),
                val_loss=val["loss"] if val else None, val_accuracy=val_accuracy,
                best_val_accuracy=self.best_val_accuracy,
            ))
        self._val = None
        self.epoch += 1
        self._begin_epoch()

