"""``DynamicsRecorder``: a Lightning callback that records per-sample training dynamics.

It is a thin adapter over ``training.recording_session.Recorder`` (which any training loop
can use directly): it maps the Trainer's hooks to the recorder's calls. Per training step,
on the training thread, the recorder reads what the step returned
(``training.recording_outputs``) and hands it to a chunk buffer
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

import logging
import os
from collections.abc import Mapping
from typing import Any

import lightning as L
import pyarrow as pa
import torch

from store.layout import Store
from training.batch import parse_batch
from training.recording_collectives import SingleProcess
from training.recording_session import Recorder

__all__ = ["DynamicsRecorder"]

logger = logging.getLogger(__name__)


def _delegate(name: str) -> property:
    """An attribute of the adapter that is the recorder's."""
    return property(
        lambda self: getattr(self.recorder, name),
        lambda self, value: setattr(self.recorder, name, value),
        doc=f"``Recorder.{name}``",
    )


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

    A batch's ``group`` (by name: a dict key or named-tuple field) is recorded as each
    presentation's group (``training.groups``).
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
        self.recorder = Recorder(
            store, run_name, task=task, model_name=model_name, seed=seed, config=config, samples=samples,
            parent_run_id=parent_run_id, curriculum=curriculum, record_grad_norms=record_grad_norms,
            grad_norm_every_n_steps=grad_norm_every_n_steps, flush_secs=flush_secs, chunk_rows=chunk_rows,
            monitor_dataloader_idx=monitor_dataloader_idx, collectives=SingleProcess(),
        )
        self.dataset_key = dataset_key
        self.grand = grand
        self._batch_step = 0

    # -- state: the recorder's, for checkpoints and callers ----------------------------

    run_id = _delegate("run_id")
    epochs_recorded = _delegate("epochs_recorded")
    best_val_accuracy = _delegate("best_val_accuracy")
    output_kind = _delegate("output_kind")
    store_path = _delegate("store_path")
    chunk_rows = _delegate("chunk_rows")
    flush_secs = _delegate("flush_secs")
    monitor_dataloader_idx = _delegate("monitor_dataloader_idx")

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
        return self.recorder.buffered_rows

    @property
    def store(self) -> Store:
        return self.recorder.store

    def drain(self) -> None:
        """Wait until the writer has written what it was handed (``Recorder.drain``)."""
        self.recorder.drain()

    # -- lifecycle ---------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        recorder = self.recorder
        recorder.watch(pl_module)
        recorder.collectives = trainer.strategy
        recorder.rank, recorder.world_size = trainer.global_rank, trainer.world_size
        if self.grand is not None:
            self.grand.setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after Lightning restored callback state from a checkpoint (setup runs
        # before), so a resumed fit continues its run instead of starting a new one.
        recorder = self.recorder
        recorder.model_name = recorder.model_name or type(pl_module).__name__
        recorder.max_epochs = trainer.max_epochs
        resuming = recorder.run_id is not None
        recorder.start(
            resume_epoch=trainer.current_epoch if resuming else None,
            resume_step=trainer.global_step if resuming else None,
        )
        if self.grand is not None:
            self.grand.on_train_start(trainer, pl_module)
            self._write_grand(trainer, f"r{trainer.global_rank:02d}-init")

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.grand is not None:
            self.grand.on_after_backward(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.recorder.epoch = trainer.current_epoch
        # A distributed curriculum's padding draws are trained on but not recorded, so a
        # sample the curriculum repeats across ranks keeps every presentation.
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if callable(getattr(sampler, "unpadded_draws", None)):
            self.recorder.drop_padding_of(sampler)

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
        # checks) and once per chunk (copied to the host when full).
        self.recorder.log_outputs(outputs, parse_batch(batch), self._batch_step, feature_sqnorm)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else None
        if loss is not None:
            # Lightning's automatic optimization divides the loss it hands this hook by
            # accumulate_grad_batches (loops/optimization/automatic.py): undo it.
            if pl_module.automatic_optimization and trainer.accumulate_grad_batches != 1:
                loss = loss * trainer.accumulate_grad_batches
            self.recorder.record_loss(self._batch_step, loss)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.recorder.record_lr(self._batch_step, optimizer.param_groups[0]["lr"])
        self.recorder.measure_grad_norms(self._batch_step)

    # -- validation --------------------------------------------------------------------

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
        self.recorder.log_validation(
            outputs["logits"], parse_batch(batch, require_ids=False).targets,
            loss_mask=outputs.get("loss_mask"), dataloader_idx=dataloader_idx,
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # every rank knows the number of loaders: the collectives match
        self.recorder.end_validation(len(trainer.num_val_batches), pl_module.device)

    # -- epoch end: hand the epoch to the writer process -------------------------------

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_id is None:
            return
        if self.grand is not None:
            self._write_grand(trainer, f"r{trainer.global_rank:02d}-e{trainer.current_epoch:06d}")
        self.recorder.end_epoch(trainer.current_epoch, pl_module.device)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # What the checkpoint says was recorded is on disk before training goes on.
        self.recorder.sync()

    def _write_grand(self, trainer: L.Trainer, part: str) -> None:
        rows = self.grand.take_rows()
        if rows is None or len(rows["sample_id"]) == 0:
            return
        self.recorder.write_segment("grand", part, rows)

    # -- end of training -----------------------------------------------------------------

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.recorder.finish()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.recorder.fail(exception)


def _skipped(outputs: Any) -> bool:
    """Whether Lightning skipped the batch: ``training_step`` returned None (no loss, nothing else)."""
    if outputs is None:
        return True
    return isinstance(outputs, Mapping) and outputs.get("loss") is None and not any(
        key != "loss" for key in outputs
    )
