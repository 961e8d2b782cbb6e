"""``DynamicsRecorder``: a Lightning callback that records per-sample training dynamics.

It is a thin adapter. Per step, on the training thread, it keeps references to
``logits.detach()``, the targets, sample ids, weights and the loss (no copy, no sync) and
computes the gradient norm of every parameter (one fused kernel). Once per epoch the
training thread gathers those buffers into host arrays and hands them to a child process
(``store.recording``, lowest CPU priority, one per rank), which computes the scores
(NumPy), builds the Arrow tables and writes the epoch's presentations segment, and every
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
from store.recording import WriterProcess, epoch_row
from training import scores

logger = logging.getLogger(__name__)

TARGET_KEYS = ("y", "target", "targets", "label", "labels")

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


def _detached(tensor: Tensor) -> Tensor:
    return tensor.detach() if tensor.requires_grad else tensor


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
        record_grad_norms: record global and per-layer gradient norms (``False``: none).
        grad_norm_every_n_steps: the gradient norms are computed at the steps whose
            ``global_step`` is a multiple of this (``1``: every step); the other steps' rows
            carry a null ``grad_norm``. Loss and learning rate are recorded every step.
            Like Lightning's ``log_every_n_steps``: the norms read every gradient value
            (~15 us for the MNIST-1D MLP's 78,000), so on a 2-core CPU the recorder adds
            5.2-5.8 % to that model's epoch with norms at every step, 2.3-2.5 % at every
            10th and 0.5-1.8 % without them (two runs, benchmarks/results/recorder.md).
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
        grad_norm_every_n_steps: int = 10,
        dataset_key: str | None = None,
        grand: Any | None = None,
        flush_secs: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(grad_norm_every_n_steps, bool) or not isinstance(grad_norm_every_n_steps, int) \
                or grad_norm_every_n_steps < 1:
            raise ValueError(f"grad_norm_every_n_steps must be a positive integer, got {grad_norm_every_n_steps!r}")
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
        self.grad_norm_every_n_steps = grad_norm_every_n_steps
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
        self._lr_steps: list[int] = []
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
        # The child process that scores and writes this rank's rows (store.recording);
        # it starts (~0.2 s, lowest CPU priority) while the first epoch trains.
        self._writer.start(
            store_path=str(self.store_path), run_id=self.run_id, layers=self._layers,
            layer_owner=self._layer_owner, flush_secs=self.flush_secs,
        )
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
        # References only (no copy, no sync); detach() only where a graph is attached.
        logits = _detached(_parse_outputs(outputs))
        targets, sample_ids, weights = _parse_batch(batch)
        if "weight" in outputs:  # the weight actually trained with (online reweighting)
            weights = outputs["weight"]
        self._logits.append(logits)
        self._targets.append(_detached(targets))
        self._sample_ids.append(sample_ids)
        self._weights.append(None if weights is None else _detached(weights))
        self._batch_steps.append(self._batch_step)
        self._batch_sizes.append(len(logits))
        if self.grand is not None:
            self.grand.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            sqnorm = self.grand.last_layer_sqnorm()
            self._feature_sqnorms.append(None if sqnorm is None else sqnorm.detach().reshape(-1))
        loss = outputs.get("loss")
        if loss is not None:
            self._step_losses.append(_detached(loss))
            self._step_numbers.append(self._batch_step)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._is_global_zero:
            return
        self._lrs.append(optimizer.param_groups[0]["lr"])
        self._lr_steps.append(self._batch_step)
        if not self.record_grad_norms or self._batch_step % self.grad_norm_every_n_steps:
            return
        grads = [p.grad for p in self._parameters]
        if not grads:
            return
        # One call and no host sync (the norms stay tensors until the epoch ends): ~15-25 us
        # per step for the MNIST-1D MLP (6 parameters, 78,000 gradient values), mostly the
        # arithmetic itself; a BLAS or NumPy dot per parameter, torch.cat, and
        # inference_mode around it all measured slower. Hence grad_norm_every_n_steps.
        try:
            norms = torch._foreach_norm(grads)
        except (TypeError, RuntimeError):  # a parameter without a gradient this step
            grads = [torch.zeros((), device=p.device) if g is None else g for p, g in zip(self._parameters, grads)]
            norms = torch._foreach_norm(grads)
        self._layer_norms.append(norms)
        self._grad_norm_steps.append(self._batch_step)

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
            self._writer.call(
                "queue", [epoch_row(trainer.current_epoch, "val", loss_sum, int(correct_sum), int(count), 0, _utc_now())]
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
                self._writer.call("queue", [("val_classes", table, epoch)])

    # -- epoch end: vectorised scores and one segment per table --------------------------

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_id is None or not self._logits:
            return
        epoch = trainer.current_epoch
        rank = trainer.global_rank
        # The training thread only gathers the epoch's buffers into host arrays (a few torch
        # ops, once per epoch: DESIGN.md) and hands them over. The scores (NumPy), the Arrow
        # tables and the files are made in the writer process, overlapping with the next
        # epoch, with no GIL shared with training and no thread pools (store.recording).
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
        self._writer.call(
            "record_epoch", buffers, precomputed, epoch, rank, trainer.is_global_zero, totals, val,
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
                "lr_steps": self._lr_steps,
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

    def _flush(self) -> None:
        """Have the writer process write everything queued now."""
        if self.run_id is not None and self._writer.running:
            self._writer.call("write_pending")

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
        self._writer.call("write_segment", "grand", pa.table(rows), part)

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
