"""The LightningModule and datasets used by ``trainmap train``.

Batches carry sample ids and per-sample loss weights as a named tuple,
``training.batch.TrainingItem(x, y, sample_id, weight)``: ``DynamicsRecorder`` reads
``(x, y, sample_id)`` by position and the weight by its name (``training.batch``). The
loss is the weighted mean ``mean_i(weight_i * CE_i)``: with all weights 1 it is the
ordinary mean cross-entropy, and InfoBatch's 1/(1-r) rescaling keeps the gradient's
expectation (Qin et al. 2024).
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

    def training_step(self, batch: TrainingItem, batch_idx: int) -> dict[str, Tensor]:
        x, y, sample_ids, weights = batch
        logits = self.model(x)
        losses = F.cross_entropy(logits, y, reduction="none")
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
        return {"loss": F.cross_entropy(logits, y), "logits": logits}

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.lr, total_steps=max(int(self.trainer.estimated_stepping_batches), 1)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
