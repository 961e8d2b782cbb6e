"""The LightningModules and datasets used by ``trainmap train``.

Classification batches carry sample ids and per-sample loss weights as a named tuple,
``training.batch.TrainingItem(x, y, sample_id, weight)``: ``DynamicsRecorder`` reads
``(x, y, sample_id)`` by position and the weight by its name (``training.batch``).
Sequence batches are dicts ``{"x", "y", "sample_id", "weight", "group"}`` (``group``: each
sample's group by name). The loss is the weighted mean ``mean_i(weight_i * CE_i)``, where
``CE_i`` is sample i's cross-entropy (for a sequence: the mean over its counted tokens):
with all weights 1 it is the ordinary mean, and InfoBatch's 1/(1-r) rescaling keeps the
gradient's expectation (Qin et al. 2024).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from training.batch import TrainingItem
from training.recording_outputs import IGNORE_INDEX


class IndexedDataset(Dataset):
    """Training samples as ``TrainingItem(x, y, sample_id, weight)`` (a named tuple; the
    default collate keeps it, so a batch is a ``TrainingItem`` of tensors).

    ``weights`` is a float tensor aligned with positions; the training code may replace
    it between epochs (curriculum stages), which takes effect for the next epoch because
    batches are built in the training process (``num_workers=0``).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, sample_ids: np.ndarray | None = None) -> None:
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.long)
        ids = np.arange(len(self.x)) if sample_ids is None else np.asarray(sample_ids)
        self.sample_ids = torch.as_tensor(ids, dtype=torch.long)
        self.weights = torch.ones(len(self.x), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, position: int) -> TrainingItem:
        return TrainingItem(self.x[position], self.y[position], self.sample_ids[position], self.weights[position])


class Classifier(L.LightningModule):
    """Cross-entropy classifier trained with AdamW and a one-cycle learning-rate schedule.

    Args:
        model: the network (``training.models.build_model``).
        lr: peak learning rate of the one-cycle schedule.
        weight_decay: AdamW weight decay.
        online_weights: optional callable ``(sample_ids, losses) -> weights`` applied per
            batch on top of the batch's own weights (online curriculum rules such as
            loss-based reweighting); it must not require gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        weight_decay: float = 1e-2,
        online_weights: Callable[[Tensor, Tensor], Tensor] | None = None,
        on_batch_losses: Callable[[Tensor, Tensor], None] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.online_weights = online_weights
        self.on_batch_losses = on_batch_losses

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, y, sample_ids, weights = self.unpack(batch)
        logits = self.model(x)
        losses = self.per_sample_losses(logits, y)
        if self.on_batch_losses is not None:
            self.on_batch_losses(sample_ids, losses.detach())
        if self.online_weights is not None:
            weights = weights * self.online_weights(sample_ids, losses.detach())
        loss = (weights * losses).mean()
        # "weight": the weight each sample was trained with (file weight times any online
        # factor), which DynamicsRecorder records in preference to the batch's own.
        return {"loss": loss, "logits": logits, "weight": weights.detach()}

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        # dataloader_idx: Lightning requires the argument once there are several validation loaders
        x, y = batch[0], batch[1]
        logits = self.model(x)
        return {"loss": self.validation_loss(logits, y), "logits": logits}

    def unpack(self, batch: TrainingItem) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Inputs, targets, sample ids and weights of a training batch."""
        x, y, sample_ids, weights = batch
        return x, y, sample_ids, weights

    def per_sample_losses(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, reduction="none")

    def validation_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The schedule's plan: the steps it was sized for and the epochs they cover (none when
        # a subclass configures its own optimisation).
        planned = getattr(self, "_planned_steps", None)
        if planned is not None:
            checkpoint[PLANNED_SCHEDULE_KEY] = {"epochs": int(self.trainer.max_epochs), "total_steps": int(planned)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Kept until configure_optimizers: a resumed run may plan more epochs (training.resume).
        self._resumed_from = checkpoint

    def configure_optimizers(self) -> Any:
        resumed = getattr(self, "_resumed_from", None)
        planned = (resumed or {}).get(PLANNED_SCHEDULE_KEY)
        total_steps = None
        if planned:
            # Size the schedule as the first fit did, per epoch, not from the loader at hand:
            # an online rule's epochs change length (InfoBatch), and the loader a resumed run
            # starts with is not the one the first fit planned from.
            total_steps = round(planned["total_steps"] * int(self.trainer.max_epochs) / planned["epochs"])
        # An online rule that shortens epochs (InfoBatch) sizes the schedule for the epochs it
        # expects, so the one-cycle schedule ends when training does (Qin et al. 2024); the
        # trainer's estimate would take every epoch at the first epoch's full length.
        from training.curriculum_run import expected_fit_steps

        estimate = int(self.trainer.estimated_stepping_batches)  # loads the training data
        rule_steps = expected_fit_steps(self.trainer)
        config = one_cycle_adamw(self, self.lr, self.weight_decay, total_steps=total_steps or rule_steps or estimate,
                                 hold_final=rule_steps is not None)
        self._planned_steps = config["lr_scheduler"]["scheduler"].total_steps
        if resumed is not None:
            from training.resume import fit_schedule_to

            fit_schedule_to(resumed, config["lr_scheduler"]["scheduler"])
        return config


#: where a checkpoint keeps the one-cycle schedule's plan (``Classifier.on_save_checkpoint``)
PLANNED_SCHEDULE_KEY = "trainmap_planned_schedule"


def one_cycle_adamw(module: L.LightningModule, lr: float, weight_decay: float,
                    total_steps: int | None = None, hold_final: bool = False) -> dict[str, Any]:
    """AdamW with a one-cycle schedule peaking at ``lr`` over the whole fit, stepped per batch:
    over ``total_steps``, by default the trainer's estimate of the fit's steps. ``hold_final``:
    a schedule sized from an expectation (an online rule's epochs) holds its final rate past
    its end (``HeldOneCycleLR``) where a plain one raises."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    if total_steps is None:
        total_steps = int(module.trainer.estimated_stepping_batches)
    schedule = HeldOneCycleLR if hold_final else torch.optim.lr_scheduler.OneCycleLR
    scheduler = schedule(optimizer, max_lr=lr, total_steps=max(total_steps, 1))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class HeldOneCycleLR(torch.optim.lr_scheduler.OneCycleLR):
    """A one-cycle schedule sized for an online rule's expected steps. If the run takes more
    steps than expected (its epochs were pruned less), it stays at the schedule's final
    learning rate instead of stopping the run."""

    def get_lr(self) -> list[float]:  # type: ignore[override]
        if self.last_epoch < self.total_steps:
            return super().get_lr()
        reached = self.last_epoch  # the cycle's last step is total_steps - 1
        self.last_epoch = self.total_steps - 1
        try:
            return super().get_lr()
        finally:
            self.last_epoch = reached


class SequenceDataset(Dataset):
    """Token sequences as dicts ``{"x", "y", "sample_id", "weight", "group"}``: inputs and
    targets int64 ``[T]`` (targets ``IGNORE_INDEX`` where nothing is predicted), the group a
    string (the default collate makes a batch's groups a list of strings). ``weights`` is
    replaced between epochs by curricula, as in ``IndexedDataset``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, groups: tuple[str, ...] | list[str],
                 sample_ids: np.ndarray | None = None) -> None:
        self.x = torch.as_tensor(x, dtype=torch.long)
        self.y = torch.as_tensor(y, dtype=torch.long)
        if self.x.shape != self.y.shape or self.x.ndim != 2 or len(groups) != len(self.x):
            raise ValueError(
                f"SequenceDataset needs inputs and targets [N, T] of one shape and N groups; got "
                f"{list(self.x.shape)}, {list(self.y.shape)} and {len(groups)} groups"
            )
        ids = np.arange(len(self.x)) if sample_ids is None else np.asarray(sample_ids)
        self.sample_ids = torch.as_tensor(ids, dtype=torch.long)
        self.groups = list(groups)
        self.weights = torch.ones(len(self.x), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, position: int) -> dict[str, Any]:
        return {"x": self.x[position], "y": self.y[position], "sample_id": self.sample_ids[position],
                "weight": self.weights[position], "group": self.groups[position]}


def sequence_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Each sequence's mean next-token cross-entropy over its counted targets, ``[B]``
    (0 for a sequence with none)."""
    tokens = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    counted = (targets != IGNORE_INDEX).sum(1)
    return tokens.sum(1) / counted.clamp(min=1)


class LanguageModel(Classifier):
    """A causal language model (``training.gpt.GPT``) trained on next-token cross-entropy,
    with the optimiser and the online hooks of ``Classifier``. ``training_step`` returns the
    logits ``[B, T, V]``, recorded as sequences (one row per sequence); a sequence's loss is
    its mean token cross-entropy (``sequence_losses``)."""

    def unpack(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return batch["x"], batch["y"], batch["sample_id"], batch["weight"]

    def per_sample_losses(self, logits: Tensor, targets: Tensor) -> Tensor:
        return sequence_losses(logits, targets)

    def validation_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX)
