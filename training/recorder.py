"""``DynamicsRecorder``: a Lightning callback that records per-sample training dynamics.

It is a thin adapter. Per step, on the training thread, it keeps references to
``logits.detach()``, the targets, sample ids, weights and the loss (no copy, no sync) and
computes the gradient norm of every parameter (one fused kernel). Once per epoch the
training thread gathers those buffers into host arrays; a writer thread at the lowest
CPU priority computes the scores (``training.scores.epoch_scores``, NumPy), builds the
Arrow tables and writes the epoch's presentations segment through ``store``, and every
``flush_secs`` the small tables and run.json. ``benchmarks/results/recorder.md`` has the
measured cost and where it goes.

Contract with the user's ``LightningModule``:

* training batches carry sample ids: ``(x, y, sample_id)`` or ``(x, y, sample_id,
  weight)`` tuples, or dicts with ``"sample_id"`` and a target under ``"y"``,
  ``"target"``, ``"targets"``, ``"label"`` or ``"labels"`` (optional ``"weight"``);
* ``training_step`` returns ``{"loss": loss, "logits": logits}``, optionally with
  ``"weight"``: per-sample loss weights actually used (recorded instead of the batch's);
* ``validation_step`` may return ``{"loss": ..., "logits": ...}`` too (with batches as
  above, sample ids optional) to get validation loss and accuracy per epoch.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from store import Store, compact_run
from store.errors import StoreError
from training import scores

logger = logging.getLogger(__name__)

TARGET_KEYS = ("y", "target", "targets", "label", "labels")

#: Presentation columns computed per epoch by ``_epoch_arrays`` (epoch and rank are added).
PRESENTATION_COLUMNS = (
    "step", "sample_id", "label", "loss", "p_true", "el2n", "correct", "pred", "margin", "weight", "grand_last",
)


def _parse_batch(batch: Any, require_ids: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(targets, sample_ids, weights) from a training batch."""
    if isinstance(batch, Mapping):
        target_key = next((key for key in TARGET_KEYS if key in batch), None)
        if target_key is None or (require_ids and "sample_id" not in batch):
            raise ValueError(
                "DynamicsRecorder: a dict batch needs a 'sample_id' key and a target under "
                f"one of {TARGET_KEYS}; got keys {sorted(batch)}"
            )
        return batch[target_key], batch.get("sample_id"), batch.get("weight")
    if isinstance(batch, Sequence) and len(batch) >= (3 if require_ids else 2):
        weights = batch[3] if len(batch) >= 4 else None
        sample_ids = batch[2] if len(batch) >= 3 else None
        return batch[1], sample_ids, weights
    raise ValueError(
        "DynamicsRecorder: training batches must be (x, y, sample_id[, weight]) or a dict "
        f"with 'sample_id'; got {type(batch).__name__}"
    )


def _parse_outputs(outputs: Any) -> Tensor:
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    raise ValueError(
        "DynamicsRecorder: training_step must return a dict with 'loss' and 'logits', e.g. "
        "return {'loss': loss, 'logits': logits}"
    )


def _owning_layers(module: torch.nn.Module) -> tuple[list[str], list[int]]:
    """For each trainable parameter, the index of the layer (module path) that owns it."""
    layers: list[str] = []
    owner: list[int] = []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        layer = name.rsplit(".", 1)[0] if "." in name else name
        if layer not in layers:
            layers.append(layer)
        owner.append(layers.index(layer))
    return layers, owner


class _SegmentWriter:
    """One background thread that writes a run's segments and run.json in order.

    The training loop only computes the epoch's arrays; Parquet encoding and the file
    writes (pyarrow releases the GIL) overlap with the next epoch. ``drain`` waits for
    everything submitted and re-raises the first write error in the training process.
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []

    @staticmethod
    def _lower_priority() -> None:
        """Run the writer at the lowest CPU priority (Linux: per thread), so that it fills
        the gaps the training loop leaves (data loading, Python between kernels) instead
        of preempting the intra-op threads of a training step."""
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):  # not Linux, or not permitted: normal priority
            pass

    def submit(self, function: Any, *args: Any, **kwargs: Any) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="trainmap-writer", initializer=self._lower_priority
            )
        self._futures = [f for f in self._futures if not f.done() or f.exception() is not None]
        self._futures.append(self._executor.submit(function, *args, **kwargs))

    def drain(self) -> None:
        futures, self._futures = self._futures, []
        for future in futures:
            future.result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


class DynamicsRecorder(L.Callback):
    """Record loss, p_true, EL2N, correctness, prediction, margin and weight per sample
    presentation; loss, gradient norms and learning rate per step; train and validation
    loss and accuracy per epoch, into a trainmap store.

    Args:
        store: store folder (created if missing) or a ``store.Store``.
        run_name: a human-readable name for the run (default: the run id).
        task, model_name, seed, config: recorded with the run for listing and filtering.
        samples: optional table with ``sample_id, label`` and optionally
            ``original_label, label_noisy``; without it the labels seen in training are
            recorded, with no noise flags.
        parent_run_id, curriculum: lineage of a rerun.
        record_grad_norms: record global and per-layer gradient norms every step.
        dataset_key: name of the inputs table in ``<store>/datasets`` (for the dashboard).
        grand: optional ``training.grand.GrandRecording``: exact per-sample gradient norms
            on its schedule (table ``grand``) and the last-layer approximation
            ``grand_last`` every step (a presentations column).
        flush_secs: the per-step, per-epoch and validation rows and the run's progress in
            run.json are written at the end of an epoch once this many seconds have passed
            since they were last written (``0``: every epoch), and always at a checkpoint,
            at the end of training and on an error. Per-presentation rows are written at
            the end of every epoch. With the default, epochs shorter than a second do not
            pay for four small files each (~0.4 ms of pyarrow work per file, against a
            ~110 ms MNIST-1D MLP epoch), and what a reader sees lags the training by at
            most about a second.
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
        dataset_key: str | None = None,
        grand: Any | None = None,
        flush_secs: float = 1.0,
    ) -> None:
        super().__init__()
        if not flush_secs >= 0:
            raise ValueError(f"flush_secs must be >= 0 seconds, got {flush_secs!r}")
        self.flush_secs = float(flush_secs)
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
        self.dataset_key = dataset_key
        self.grand = grand
        self.run_id: str | None = None
        self.epochs_recorded = 0
        self.best_val_accuracy: float | None = None
        self._reset_epoch_buffers()
        self._val: dict[str, float] | None = None
        self._layer_owner: np.ndarray | None = None
        self._layers: list[str] = []
        self._batch_step = 0
        self._parameters: list[torch.nn.Parameter] = []
        self._is_global_zero = True
        self._writer = _SegmentWriter()
        self._store: Store | None = None
        self._pending: list[tuple[str, pa.Table, int]] = []  # (table, rows, epoch) not yet written
        self._pending_run: dict[str, Any] = {}
        self._last_flush = 0.0
        self._flushes = 0

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
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.store_path, create=True)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles callbacks: the writer thread and cached store stay behind.
        state = dict(self.__dict__)
        state["_writer"] = None
        state["_store"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._writer = _SegmentWriter()

    def _reset_epoch_buffers(self) -> None:
        self._logits: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._sample_ids: list[Tensor] = []
        self._weights: list[Tensor | None] = []
        self._batch_steps: list[int] = []
        self._batch_sizes: list[int] = []
        self._step_losses: list[Tensor] = []
        self._step_numbers: list[int] = []
        self._grad_norm_steps: list[int] = []
        self._layer_norms: list[Tensor] = []
        self._lrs: list[float] = []
        self._feature_sqnorms: list[Tensor | None] = []

    # -- lifecycle ---------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        layers, owner = _owning_layers(pl_module)
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
                if not self.run_name:
                    store.update_run(run_id, name=run_id)
                if self.samples is not None:
                    store.write_samples(run_id, self._complete_samples(self.samples))
            else:
                run_id = self.run_id
                if store.run_info(run_id).get("compacted"):
                    store.reopen_run(run_id)
                # Rows recorded after the checkpoint (a run that went on, or died, after
                # saving it) would otherwise be presented twice.
                store.truncate_run(run_id, epoch=trainer.current_epoch, step=trainer.global_step)
                store.update_run(
                    run_id, status="running", error=None, finished_at=None, pid=os.getpid(),
                    max_epochs=trainer.max_epochs,
                )
        self.run_id = trainer.strategy.broadcast(run_id, src=0)
        self._pending, self._pending_run = [], {}
        self._last_flush = time.monotonic()
        if self.grand is not None:
            self.grand.on_train_start(trainer, pl_module)
            self._write_grand(trainer, f"r{trainer.global_rank:02d}-init")

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.grand is not None:
            self.grand.on_after_backward(trainer, pl_module)

    @staticmethod
    def _complete_samples(samples: pa.Table) -> pa.Table:
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

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset_epoch_buffers()

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
        logits = _parse_outputs(outputs)
        targets, sample_ids, weights = _parse_batch(batch)
        if "weight" in outputs:  # the weight actually trained with (online reweighting)
            weights = outputs["weight"]
        self._logits.append(logits.detach())
        self._targets.append(targets.detach())
        self._sample_ids.append(sample_ids.detach())
        self._weights.append(None if weights is None else weights.detach())
        self._batch_steps.append(self._batch_step)
        self._batch_sizes.append(int(logits.shape[0]))
        if self.grand is not None:
            self.grand.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            sqnorm = self.grand.last_layer_sqnorm()
            self._feature_sqnorms.append(None if sqnorm is None else sqnorm.detach().reshape(-1))
        if isinstance(outputs, Mapping) and "loss" in outputs:
            self._step_losses.append(outputs["loss"].detach())
            self._step_numbers.append(self._batch_step)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.record_grad_norms or not self._is_global_zero:
            return
        grads = [p.grad for p in self._parameters]
        if any(g is None for g in grads):
            grads = [torch.zeros((), device=p.device) if g is None else g for p, g in zip(self._parameters, grads)]
        if not grads:
            return
        # One fused kernel and no host sync (the norms stay tensors until the epoch ends).
        # ~30 us per step for the MNIST-1D MLP, about 2.5 % of its epoch
        # (benchmarks/results/recorder_ablation.md); a BLAS dot per parameter measured slower.
        self._layer_norms.append(torch._foreach_norm(grads))
        self._grad_norm_steps.append(self._batch_step)
        self._lrs.append(optimizer.param_groups[0]["lr"])

    # -- validation --------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_sums = torch.zeros(3, dtype=torch.float64)  # loss_sum, correct_sum, n
        self._val_class_sums: Tensor | None = None  # [2, classes]: correct, count per label

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
        targets, _, _ = _parse_batch(batch, require_ids=False)
        logits = outputs["logits"].detach()
        with torch.no_grad():
            loss_sum = scores.cross_entropy(logits, targets).double().sum().cpu()
            correct_sum = scores.correct(logits, targets).sum().cpu()
        self._val_sums += torch.stack([loss_sum, correct_sum.double(), torch.tensor(len(targets), dtype=torch.float64)])
        with torch.no_grad():
            classes = int(logits.shape[-1])
            labels = targets.long().reshape(-1).cpu()
            per_class = torch.stack([
                torch.bincount(labels, weights=scores.correct(logits, targets).double().reshape(-1).cpu(), minlength=classes),
                torch.bincount(labels, minlength=classes).double(),
            ])
        if self._val_class_sums is None or self._val_class_sums.shape != per_class.shape:
            self._val_class_sums = per_class
        else:
            self._val_class_sums += per_class

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.run_id is None:
            return
        sums = trainer.strategy.reduce(self._val_sums.to(pl_module.device), reduce_op="sum").cpu()
        loss_sum, correct_sum, count = (float(v) for v in sums)
        if count == 0:
            return
        self._val = {"loss": loss_sum / count, "accuracy": correct_sum / count}
        if trainer.is_global_zero:
            self._writer.submit(
                self._queue, [self._epoch_row(trainer.current_epoch, "val", loss_sum, int(correct_sum), int(count), 0, _utc_now())]
            )
        if getattr(self, "_val_class_sums", None) is not None:
            class_sums = trainer.strategy.reduce(self._val_class_sums.to(pl_module.device), reduce_op="sum").cpu()
            if trainer.is_global_zero:
                epoch = trainer.current_epoch
                table = pa.table({
                    "epoch": np.full(class_sums.shape[1], epoch, dtype=np.int32),
                    "label": np.arange(class_sums.shape[1], dtype=np.int32),
                    "correct_sum": class_sums[0].numpy().round().astype(np.int64),
                    "num_samples": class_sums[1].numpy().round().astype(np.int64),
                    "rank": np.zeros(class_sums.shape[1], dtype=np.int16),
                })
                self._writer.submit(self._queue, [("val_classes", table, epoch)])

    # -- epoch end: vectorised scores and one segment per table --------------------------

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_id is None or not self._logits:
            return
        epoch = trainer.current_epoch
        rank = trainer.global_rank
        # The training thread only gathers the epoch's buffers into host arrays (a few torch
        # ops, once per epoch: DESIGN.md). The scores (NumPy), the Arrow tables and the files
        # are made on the writer thread, overlapping with the next epoch: NumPy and pyarrow
        # release the GIL in their loops and start no thread pool. (Torch ops there would
        # start a second OpenMP team: measured 2x slower training on a 2-core machine.)
        buffers = self._epoch_buffers()
        precomputed = totals = None
        if trainer.world_size > 1:
            # Train loss / accuracy of the epoch, combined exactly over ranks (a collective,
            # so on the training thread).
            precomputed = scores.epoch_scores(buffers["logits"], buffers["targets"])
            local = torch.tensor(
                [
                    float(precomputed["loss"].astype(np.float64).sum()),
                    float(precomputed["correct"].sum()),
                    float(len(buffers["targets"])),
                ],
                dtype=torch.float64,
                device=pl_module.device,
            )
            totals = tuple(float(v) for v in trainer.strategy.reduce(local, reduce_op="sum").cpu())
        val = self._val
        if trainer.is_global_zero:
            self.epochs_recorded = epoch + 1
            val_accuracy = val["accuracy"] if val else None
            if val_accuracy is not None and (
                self.best_val_accuracy is None or val_accuracy > self.best_val_accuracy
            ):
                self.best_val_accuracy = val_accuracy
        if self.grand is not None:
            self._write_grand(trainer, f"r{rank:02d}-e{epoch:06d}")
        self._writer.submit(
            self._record_epoch, buffers, precomputed, epoch, rank, trainer.is_global_zero, totals, val,
            self.best_val_accuracy, _utc_now(),
        )
        self._val = None
        self._reset_epoch_buffers()

    def _epoch_buffers(self) -> dict[str, Any]:
        """Training thread: the epoch's buffers as host NumPy arrays (one copy per epoch)."""
        with torch.no_grad():
            out: dict[str, Any] = {
                "logits": torch.cat(self._logits).float().cpu().numpy(),
                "targets": torch.cat(self._targets).long().reshape(-1).cpu().numpy(),
                "sample_id": torch.cat(self._sample_ids).long().reshape(-1).cpu().numpy(),
                "batch_steps": self._batch_steps,
                "batch_sizes": self._batch_sizes,
                "step_numbers": self._step_numbers,
                "grad_norm_steps": self._grad_norm_steps,
                "lrs": [float(v) for v in self._lrs],
                "weight": None,
                "feature_sqnorm": None,
                "step_losses": None,
                "parameter_norms": None,
            }
            if any(w is not None for w in self._weights):
                out["weight"] = torch.cat(
                    [
                        torch.ones(size, device=logits.device) if w is None else w.float().reshape(-1)
                        for w, size, logits in zip(self._weights, self._batch_sizes, self._logits)
                    ]
                ).cpu().numpy()
            if self._feature_sqnorms and all(f is not None for f in self._feature_sqnorms):
                out["feature_sqnorm"] = torch.cat(self._feature_sqnorms).float().cpu().numpy()
            if self._step_losses:
                out["step_losses"] = torch.stack(self._step_losses).float().cpu().numpy()
            if self._layer_norms:  # per step, one 0-d tensor per parameter
                rows = self._layer_norms
                norms = torch.stack([norm for row in rows for norm in row])
                out["parameter_norms"] = norms.double().cpu().numpy().reshape(len(rows), -1)
        return out

    def _record_epoch(
        self,
        buffers: dict[str, Any],
        precomputed: dict[str, np.ndarray] | None,
        epoch: int,
        rank: int,
        is_global_zero: bool,
        totals: tuple[float, float, float] | None,
        val: dict[str, float] | None,
        best_val_accuracy: float | None,
        now: dt.datetime,
    ) -> None:
        """Writer thread: scores, the presentations segment, and the small tables queued
        for the next flush (written once ``flush_secs`` have passed)."""
        arrays = self._epoch_arrays(buffers, precomputed)
        part = f"r{rank:02d}-e{epoch:06d}"
        n = len(arrays["sample_id"])
        presentations = pa.table(
            {
                "epoch": np.full(n, epoch, dtype=np.int32),
                **{name: arrays[name] for name in PRESENTATION_COLUMNS},
                "rank": np.full(n, rank, dtype=np.int16),
            }
        )
        self._write_segments([("presentations", presentations, part)])
        if not is_global_zero:
            return
        if totals is None:
            totals = (float(arrays["loss"].astype(np.float64).sum()), float(arrays["correct"].sum()), float(n))
        loss_sum, correct_sum, count = totals
        self._pending.append(self._epoch_row(epoch, "train", loss_sum, int(correct_sum), int(count), 0, now))
        self._pending.extend(self._step_segments(arrays, epoch))
        self._pending_run.update({
            "epochs_done": epoch + 1,
            "final_train_loss": loss_sum / max(count, 1),
            "final_train_accuracy": correct_sum / max(count, 1),
            "final_val_accuracy": val["accuracy"] if val else None,
            "final_val_loss": val["loss"] if val else None,
            "best_val_accuracy": best_val_accuracy,
        })
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self._write_pending()

    def _epoch_arrays(
        self, buffers: dict[str, Any], precomputed: dict[str, np.ndarray] | None = None
    ) -> dict[str, Any]:
        """Writer thread (NumPy only): per-presentation scores and columns, per-step losses
        and per-layer squared gradient norms."""
        out: dict[str, Any] = dict(precomputed or scores.epoch_scores(buffers["logits"], buffers["targets"]))
        out["label"] = buffers["targets"].astype(np.int32)
        out["sample_id"] = buffers["sample_id"]
        n = len(out["sample_id"])
        out["weight"] = buffers["weight"] if buffers["weight"] is not None else np.ones(n, dtype=np.float32)
        if buffers["feature_sqnorm"] is not None:
            # Last-layer GraNd approximation (DESIGN.md): EL2N * sqrt(||h||^2 + 1).
            out["grand_last"] = out["el2n"] * np.sqrt(buffers["feature_sqnorm"] + 1.0)
        else:
            out["grand_last"] = np.full(n, np.nan, dtype=np.float32)
        out["step"] = np.repeat(np.asarray(buffers["batch_steps"], dtype=np.int64), buffers["batch_sizes"])
        out["step_numbers"] = np.asarray(buffers["step_numbers"], dtype=np.int64)
        losses = buffers["step_losses"]
        out["step_losses"] = losses if losses is not None else np.zeros(0, dtype=np.float32)
        out["per_layer_sq"] = None
        if buffers["parameter_norms"] is not None:
            per_parameter = np.square(buffers["parameter_norms"])  # [steps, parameters]
            per_layer = np.zeros((len(per_parameter), len(self._layers)), dtype=np.float64)
            np.add.at(per_layer.T, self._layer_owner, per_parameter.T)
            out["per_layer_sq"] = per_layer  # [steps, layers]
            out["grad_norm_steps"] = np.asarray(buffers["grad_norm_steps"], dtype=np.int64)
            out["lrs"] = np.asarray(buffers["lrs"], dtype=np.float64)
        return out


    def _flush(self) -> None:
        """Training thread: have the writer write everything queued now."""
        if self.run_id is not None:
            self._writer.submit(self._write_pending)

    def _queue(self, segments: list[tuple[str, pa.Table, int]]) -> None:
        """Writer thread: small tables ``(table, rows, epoch)`` for the next flush."""
        self._pending.extend(segments)

    def _write_pending(self) -> None:
        """Writer thread: the queued small tables (one segment per table, named by its
        epochs) and run.json's progress."""
        self._last_flush = time.monotonic()
        if not (self._pending or self._pending_run):
            return
        by_table: dict[str, list[tuple[pa.Table, int]]] = {}
        for table_name, table, epoch in self._pending:
            by_table.setdefault(table_name, []).append((table, epoch))
        segments = []
        for table_name, parts in by_table.items():
            epochs = [epoch for _, epoch in parts]
            # unique within a process; a resumed run first drops every row from its epoch on
            part = f"e{min(epochs):06d}-e{max(epochs):06d}-f{self._flushes:05d}"
            segments.append((table_name, pa.concat_tables([table for table, _ in parts]), part))
        run_update, self._pending, self._pending_run = dict(self._pending_run) or None, [], {}
        self._flushes += 1
        self._write_segments(segments, run_update)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # What the checkpoint says was recorded is on disk before training goes on.
        self._flush()
        self._writer.drain()

    def _write_segments(
        self, segments: list[tuple[str, pa.Table, str]], run_update: dict[str, Any] | None = None
    ) -> None:
        """Writer thread: encode and write the segments, then update run.json."""
        store = self.store
        for table_name, table, part in segments:
            store.write_segment(self.run_id, table_name, table, part)
        if run_update:
            store.update_run(self.run_id, **run_update)

    def _write_grand(self, trainer: L.Trainer, part: str) -> None:
        rows = self.grand.take_rows()
        if rows is None or len(rows["sample_id"]) == 0:
            return
        self._writer.submit(self.store.write_segment, self.run_id, "grand", pa.table(rows), part)

    def _epoch_row(
        self, epoch: int, split: str, loss_sum: float, correct_sum: int, count: int, rank: int, now: dt.datetime
    ) -> tuple[str, pa.Table, int]:
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
        return "epochs", row, epoch

    def _step_segments(self, arrays: dict[str, Any], epoch: int) -> list[tuple[str, pa.Table, int]]:
        step_numbers = arrays["step_numbers"]
        losses = arrays["step_losses"]
        grad_norm = np.full(len(step_numbers), np.nan, dtype=np.float32)
        lr = np.full(len(step_numbers), np.nan, dtype=np.float64)
        per_layer = arrays["per_layer_sq"]
        segments = []
        if per_layer is not None:
            norm_steps = arrays["grad_norm_steps"]
            # on_before_optimizer_step sees the global_step of the batch that made the grads
            if len(step_numbers) and len(norm_steps):
                order = np.argsort(step_numbers, kind="stable")
                found = np.clip(np.searchsorted(step_numbers[order], norm_steps), 0, len(order) - 1)
                position = order[found]
                hit = step_numbers[position] == norm_steps
                grad_norm[position[hit]] = np.sqrt(per_layer[hit].sum(axis=1))
                lr[position[hit]] = arrays["lrs"][hit]
            segments.append((
                "layer_grad_norms",
                pa.table(
                    {
                        "step": np.repeat(norm_steps, len(self._layers)),
                        "layer": np.tile(np.asarray(self._layers, dtype=object), len(norm_steps)),
                        "grad_norm": np.sqrt(per_layer).reshape(-1).astype(np.float32),
                    }
                ),
                epoch,
            ))
        segments.append((
            "steps",
            pa.table(
                {
                    "step": step_numbers,
                    "epoch": np.full(len(step_numbers), epoch, dtype=np.int32),
                    "loss": losses,
                    "grad_norm": grad_norm,
                    "lr": lr,
                }
            ),
            epoch,
        ))
        return segments

    # -- end of training -----------------------------------------------------------------

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_id is None:
            return
        self._flush()
        self._writer.close()
        trainer.strategy.barrier("trainmap_compact")
        if trainer.is_global_zero:
            store = self.store
            compact_run(store, self.run_id)
            store.update_run(self.run_id, status="finished", finished_at=_now())
        trainer.strategy.barrier("trainmap_finished")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        try:
            self._flush()
            self._writer.close()
        except Exception:  # the original exception matters more than a write error
            logger.exception("could not write the last segments of run %s", self.run_id)
        if self.run_id is None or not trainer.is_global_zero:
            return
        message = f"{type(exception).__name__}: {exception}"
        try:
            self.store.update_run(self.run_id, status="failed", error=message, finished_at=_now())
        except StoreError:
            logger.exception("could not mark run %s as failed", self.run_id)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _now() -> str:
    from store.layout import utc_now

    return utc_now()
