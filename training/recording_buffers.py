"""What ``DynamicsRecorder`` keeps between its hooks: a bounded chunk of per-presentation
statistics on the device (``ChunkBuffer``, in ``training.recording_chunk``), an epoch's
per-step values (``StepBuffer``) and the running validation sums of each validation
dataloader (``ValidationLoaders``).

Per-step values (loss, learning rate, gradient norms: one each per step) are copied into
preallocated device blocks, read on the host once per block or at the end of the epoch.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import torch
from torch import Tensor

from store.recording.messages import RecordValidation, StepBuffers
from training.recording_chunk import ChunkBuffer
from training.recording_outputs import validation_sums

__all__ = ["ChunkBuffer", "StepBuffer", "ValidationLoaders", "ValidationSums"]


class StepBuffer:
    """One epoch's per-step values of rank zero: the loss and the parameters' gradient norms,
    copied into preallocated device blocks of ``block_steps`` steps (no host sync, no
    allocation kept per step: see ``ChunkBuffer``), and the learning rate (a Python float).
    A full block is copied to the host (one sync per ``block_steps`` steps); ``gather``
    reads the rest once, at the end of the epoch."""

    block_steps = 1024

    def __init__(self) -> None:
        self._losses = _Block(self.block_steps)
        self._norms = _Block(self.block_steps)
        self.clear()

    def clear(self) -> None:
        self._losses.clear()
        self._norms.clear()
        self._loss_sum: Tensor | None = None  # the last step's micro-batch losses, summed
        self._loss_count = 0
        self._step_numbers: list[int] = []
        self._grad_norm_steps: list[int] = []
        self._lrs: list[float] = []
        self._lr_steps: list[int] = []

    def add_loss(self, step: int, loss: Tensor) -> None:
        """A batch's loss at optimizer step ``step``. The batches of one step (gradient
        accumulation's micro-batches: ``step`` repeated) give one value, their mean."""
        loss = loss.detach()
        if self._loss_count and self._step_numbers[-1] == step:
            # out of place: the caller's tensor stays as it is; bf16 / fp16 summed as float32
            self._loss_sum = self._loss_sum + loss.to(torch.promote_types(loss.dtype, torch.float32))
            self._loss_count += 1
            return
        self._finish_loss()
        self._loss_sum, self._loss_count = loss, 1
        self._step_numbers.append(step)

    def _finish_loss(self) -> None:
        if self._loss_count:
            count, self._loss_count = self._loss_count, 0
            self._losses.add(self._loss_sum if count == 1 else self._loss_sum / count)
            self._loss_sum = None

    def add_lr(self, step: int, lr: float) -> None:
        self._lrs.append(lr)
        self._lr_steps.append(step)

    def add_grad_norms(self, step: int, norms: list[Tensor]) -> None:
        """The gradient norm of every trainable parameter at ``step`` (0-d tensors)."""
        self._norms.add(torch.stack([norm.detach() for norm in norms]))
        self._grad_norm_steps.append(step)

    def gather(self) -> StepBuffers:
        """The epoch's per-step values as host values."""
        self._finish_loss()
        losses, norms = self._losses.gather(), self._norms.gather()
        return StepBuffers(
            step_numbers=list(self._step_numbers),
            step_losses=None if losses is None else losses.astype(np.float32).reshape(-1),
            grad_norm_steps=list(self._grad_norm_steps),
            parameter_norms=None if norms is None else norms.astype(np.float64).reshape(len(self._grad_norm_steps), -1),
            lr_steps=list(self._lr_steps),
            lrs=[float(v) for v in self._lrs],
        )


class _Block:
    """Rows of one shape appended to a preallocated ``[rows, ...]`` device tensor; a full
    block goes to the host, and its memory is reused."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._block: Tensor | None = None
        self.clear()

    def clear(self) -> None:
        self._host: list[np.ndarray] = []
        self._count = 0

    def add(self, row: Tensor) -> None:
        block = self._block
        if block is None or block.shape[1:] != row.shape or block.device != row.device \
                or block.dtype != torch.promote_types(row.dtype, torch.float32):  # bf16 / fp16 kept as float32
            if self._count:
                self._host.append(self._take())
            dtype = torch.promote_types(row.dtype, torch.float32)
            block = self._block = torch.empty((self.rows, *row.shape), dtype=dtype, device=row.device)
        block[self._count].copy_(row.detach())
        self._count += 1
        if self._count == self.rows:
            self._host.append(self._take())

    def _take(self) -> np.ndarray:
        rows, self._count = self._block[: self._count], 0
        return rows.cpu().numpy().copy()  # a copy: the block is reused

    def gather(self) -> np.ndarray | None:
        """Every row since ``clear``, as one host array; None when there is none."""
        if self._count:
            self._host.append(self._take())
        if not self._host:
            return None
        return np.concatenate(self._host)


class ValidationSums:
    """Loss, correctness and count, and per-label correct and count, summed over an epoch's
    validation batches on this rank, on the device (read once, at the epoch's end)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.totals = torch.zeros(3, dtype=torch.float64)  # loss_sum, correct_sum, count
        self.per_class: Tensor | None = None  # [2, classes]: correct, count per label

    def add(self, logits: Tensor, targets: Tensor, loss_mask: Tensor | None = None) -> None:
        totals, per_class = validation_sums(logits.detach(), targets, loss_mask)
        if self.totals.device != totals.device:  # the first batch of the epoch: onto its device
            self.totals = self.totals.to(totals.device)
        self.totals += totals
        if per_class is None:
            return
        if self.per_class is None or self.per_class.shape != per_class.shape:
            self.per_class = per_class
        else:
            self.per_class += per_class


class ValidationLoaders:
    """The ``ValidationSums`` of each validation dataloader (Lightning's ``dataloader_idx``)
    over an epoch's validation on this rank."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.loaders: dict[int, ValidationSums] = {}

    def add(self, dataloader_idx: int, logits: Tensor, targets: Tensor, loss_mask: Tensor | None = None) -> None:
        self.loaders.setdefault(dataloader_idx, ValidationSums()).add(logits, targets, loss_mask)

    def reduced(
        self, strategy: Any, device: torch.device, loaders: int, epoch: int, time: dt.datetime
    ) -> list[RecordValidation]:
        """One validation row per dataloader ``0 .. loaders - 1`` that validated a sample, summed
        over ranks with ``strategy.reduce`` (a collective per loader, so every rank must call
        this with the same ``loaders``)."""
        rows = []
        for dataloader_idx in range(loaders):
            sums = self.loaders.get(dataloader_idx) or ValidationSums()
            loss_sum, correct_sum, count = (
                float(v) for v in strategy.reduce(sums.totals.to(device), reduce_op="sum").cpu()
            )
            class_sums = None
            if sums.per_class is not None:
                class_sums = strategy.reduce(sums.per_class.to(device), reduce_op="sum").cpu().numpy()
            if count:
                rows.append(RecordValidation(
                    epoch=epoch, time=time, loss_sum=loss_sum, correct_sum=round(correct_sum), count=round(count),
                    class_sums=class_sums, dataloader_idx=dataloader_idx,
                ))
        return rows
