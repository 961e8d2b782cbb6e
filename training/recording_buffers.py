"""What ``DynamicsRecorder`` keeps between its hooks: an epoch's per-step tensor references
(``EpochBuffer``) and the running validation sums (``ValidationSums``).

The per-step hooks only append references (no copy, no host sync); ``EpochBuffer.gather``
turns the epoch into the host NumPy arrays the writer process takes
(``store.recording.messages.EpochBuffers``), one copy per epoch (DESIGN.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from store.recording.messages import EpochBuffers
from training.recording_tensors import detached, validation_sums


class EpochBuffer:
    """One rank's epoch so far, as references to the tensors of each step."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._logits: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._sample_ids: list[Tensor] = []
        self._weights: list[Tensor | None] = []
        self._feature_sqnorms: list[Tensor | None] = []
        self._batch_steps: list[int] = []
        self._batch_sizes: list[int] = []
        self._step_losses: list[Tensor] = []
        self._step_numbers: list[int] = []
        self._layer_norms: list[list[Tensor]] = []
        self._grad_norm_steps: list[int] = []
        self._lrs: list[float] = []
        self._lr_steps: list[int] = []

    @property
    def empty(self) -> bool:
        return not self._logits

    def add_batch(
        self,
        step: int,
        logits: Tensor,
        targets: Tensor,
        sample_ids: Tensor,
        weights: Tensor | None,
        feature_sqnorm: Tensor | None,
    ) -> None:
        """A training batch of ``step``; ``feature_sqnorm`` is GraNd's ``||h||^2`` per sample."""
        self._logits.append(detached(logits))
        self._targets.append(detached(targets))
        self._sample_ids.append(sample_ids)
        self._weights.append(None if weights is None else detached(weights))
        self._feature_sqnorms.append(None if feature_sqnorm is None else feature_sqnorm.detach().reshape(-1))
        self._batch_steps.append(step)
        self._batch_sizes.append(len(logits))

    def add_loss(self, step: int, loss: Tensor) -> None:
        self._step_losses.append(detached(loss))
        self._step_numbers.append(step)

    def add_lr(self, step: int, lr: float) -> None:
        self._lrs.append(lr)
        self._lr_steps.append(step)

    def add_grad_norms(self, step: int, norms: list[Tensor]) -> None:
        """The gradient norm of every trainable parameter at ``step`` (0-d tensors)."""
        self._layer_norms.append(norms)
        self._grad_norm_steps.append(step)

    def gather(self) -> EpochBuffers:
        """The epoch as host NumPy arrays (one copy per epoch)."""
        with torch.no_grad():
            weights = feature_sqnorms = step_losses = parameter_norms = None
            if any(w is not None for w in self._weights):
                weights = torch.cat(
                    [
                        torch.ones(size, device=logits.device) if w is None else w.float().reshape(-1)
                        for w, size, logits in zip(self._weights, self._batch_sizes, self._logits)
                    ]
                ).cpu().numpy()
            if self._feature_sqnorms and all(f is not None for f in self._feature_sqnorms):
                feature_sqnorms = torch.cat(self._feature_sqnorms).float().cpu().numpy()
            if self._step_losses:
                step_losses = torch.stack(self._step_losses).float().cpu().numpy()
            if self._layer_norms:  # per step, one 0-d tensor per parameter
                rows = self._layer_norms
                norms = torch.stack([norm for row in rows for norm in row])
                parameter_norms = norms.double().cpu().numpy().reshape(len(rows), -1)
            return EpochBuffers(
                logits=torch.cat(self._logits).float().cpu().numpy(),
                targets=torch.cat(self._targets).long().reshape(-1).cpu().numpy(),
                sample_ids=torch.cat(self._sample_ids).long().reshape(-1).cpu().numpy(),
                batch_steps=self._batch_steps,
                batch_sizes=self._batch_sizes,
                step_numbers=self._step_numbers,
                step_losses=step_losses,
                grad_norm_steps=self._grad_norm_steps,
                parameter_norms=parameter_norms,
                lr_steps=self._lr_steps,
                lrs=[float(v) for v in self._lrs],
                weights=weights,
                feature_sqnorms=feature_sqnorms,
            )


class ValidationSums:
    """Loss, correctness and count, and per-label correct and count, summed over an epoch's
    validation batches on this rank."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.totals = torch.zeros(3, dtype=torch.float64)  # loss_sum, correct_sum, count
        self.per_class: Tensor | None = None  # [2, classes]: correct, count per label

    def add(self, logits: Tensor, targets: Tensor) -> None:
        totals, per_class = validation_sums(logits.detach(), targets)
        self.totals += totals
        if self.per_class is None or self.per_class.shape != per_class.shape:
            self.per_class = per_class
        else:
            self.per_class += per_class
