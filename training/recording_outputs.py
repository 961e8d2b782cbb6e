"""What a training step returned, read for ``DynamicsRecorder``: which kind of outputs they
are (decided and checked once, at the first training batch) and their per-presentation
statistics (every batch, on the device, no host sync).

Three kinds (``training.reduce.OUTPUT_KINDS``):

- ``"classification"``: ``{"loss", "logits"}`` with logits ``[B, C]`` and integer targets
  ``[B]`` in ``[0, C)``;
- ``"sequence"``: logits ``[B, T, V]`` with integer targets ``[B, T]`` (``IGNORE_INDEX``
  ignored) and an optional ``outputs["loss_mask"]`` ``[B, T]``;
- ``"loss"``: ``{"loss", "per_sample_loss"}`` with a floating ``[B]`` loss per sample (any
  loss: regression, multi-label, one-logit binary). When ``per_sample_loss`` is returned it
  is the one recorded, even beside logits.

``output_kind`` refuses anything else with one ``ValueError`` line that names what it got
(keys, shapes, dtypes, target range) and what it expects; it may read the targets' range
(one host sync, at the first batch only). ``checked_outputs`` checks shapes only on later batches;
``presentation_columns`` turns a batch into the columns the recorder buffers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training.batch import TrainingBatch
from training.reduce import PresentationStats, classification_stats, loss_stats, sequence_stats

#: Token targets equal to this are not counted (``torch.nn.functional.cross_entropy``'s default).
IGNORE_INDEX = -100

_EXPECTED = (
    "expected training_step to return {'loss', 'logits'} with logits [B, C] and integer class targets [B] "
    "in [0, C), logits [B, T, V] with integer token targets [B, T] (-100 ignored, optional 'loss_mask' "
    "[B, T]), or {'loss', 'per_sample_loss'} with one loss per sample [B] for any other loss"
)


def describe(value: Any) -> str:
    """``float32 [64, 10]`` for a tensor, the type's name otherwise (no host sync)."""
    if isinstance(value, Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    return type(value).__name__


def _refuse(problem: str) -> ValueError:
    return ValueError(f"DynamicsRecorder: {problem}")


def _value_range(tensor: Tensor) -> str:
    """``in [a, b]`` of a tensor's values (a host sync: first batch only)."""
    if tensor.numel() == 0:
        return "empty"
    values = tensor.detach()
    if values.dtype == torch.bool:
        values = values.int()
    low, high = torch.stack([values.min(), values.max()]).double().cpu().tolist()
    return f"in [{low:.4g}, {high:.4g}]"


def _is_integer(tensor: Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)


def output_kind(outputs: Any, targets: Any, batch_size: int | None) -> str:
    """The kind of ``outputs`` (``OUTPUT_KINDS``) for the batch's ``targets``; ``batch_size``
    is the number of sample ids in the batch (``None`` if unknown). Raises ``ValueError``
    with one line naming what it got and what it expects. Reads the targets' range (one
    host sync): call it at the first training batch only."""
    if not isinstance(outputs, Mapping):
        raise _refuse(f"training_step returned {describe(outputs)}; {_EXPECTED}")
    keys = sorted(map(str, outputs))
    if "per_sample_loss" in outputs:
        loss = outputs["per_sample_loss"]
        size = batch_size if batch_size is not None else (len(targets) if isinstance(targets, Tensor) else None)
        if not isinstance(loss, Tensor) or loss.ndim != 1 or not loss.is_floating_point() or (
            size is not None and loss.shape[0] != size
        ):
            of = f" for a batch of {size} samples" if size is not None else ""
            raise _refuse(
                f"per_sample_loss is {describe(loss)}{of}: return one floating loss per sample, shape "
                f"[{size if size is not None else 'B'}] (e.g. F.mse_loss(..., reduction='none').mean(1))"
            )
        return "loss"
    if "logits" not in outputs:
        raise _refuse(f"training_step returned keys {keys}; {_EXPECTED}")
    logits = outputs["logits"]
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise _refuse(f"logits are {describe(logits)}; {_EXPECTED}")
    if not isinstance(targets, Tensor):
        raise _refuse(f"logits are {describe(logits)} but the batch's targets are {describe(targets)}; {_EXPECTED}")
    got = f"logits are {describe(logits)} and targets are {describe(targets)}"
    if logits.ndim == 1:
        raise _refuse(
            f"{got}: one logit per sample (binary BCE?) is not read as classes; return 'per_sample_loss' "
            f"[{logits.shape[0]}] (e.g. F.binary_cross_entropy_with_logits(..., reduction='none'))"
        )
    if logits.ndim == 2:
        kind, classes, shape = "classification", logits.shape[1], tuple(logits.shape[:1])
        if targets.is_floating_point():
            raise _refuse(
                f"{got} {_value_range(targets)}: for regression, multi-label or soft-target losses return "
                f"'per_sample_loss' [{logits.shape[0]}] (one loss per sample, reduction='none')"
            )
        if logits.shape[1] < 2:
            raise _refuse(f"{got}: classification needs at least 2 classes; for a one-logit loss return "
                          f"'per_sample_loss' [{logits.shape[0]}]")
    elif logits.ndim == 3:
        kind, classes, shape = "sequence", logits.shape[2], tuple(logits.shape[:2])
        if targets.ndim == 1:
            raise _refuse(
                f"{got}: sequence logits [B, T, V] need token targets [B, T] = {list(shape)} (-100 ignored); "
                "for one label per sequence return logits [B, C]"
            )
    else:
        raise _refuse(f"{got}; {_EXPECTED}")
    if not _is_integer(targets):
        raise _refuse(f"{got} {_value_range(targets)}: {kind} targets must be integer; {_EXPECTED}")
    if tuple(targets.shape) != shape:
        raise _refuse(f"{got}: {kind} targets must have shape {list(shape)}; {_EXPECTED}")
    if batch_size is not None and shape[0] != batch_size:
        raise _refuse(f"{got} but the batch has {batch_size} sample ids: one row of logits per sample")
    counted = targets[targets != IGNORE_INDEX] if kind == "sequence" else targets
    if counted.numel() and not bool(((counted >= 0) & (counted < classes)).all()):
        allowed = f"[0, {classes})" + (" or -100 (ignored)" if kind == "sequence" else "")
        raise _refuse(f"targets are {describe(targets)} {_value_range(counted)}; {kind} targets must be in {allowed}")
    if kind == "sequence" and "loss_mask" in outputs:
        mask = outputs["loss_mask"]
        if not isinstance(mask, Tensor) or tuple(mask.shape) != shape:
            raise _refuse(f"loss_mask is {describe(mask)}; expected [B, T] = {list(shape)}, bool or 0/1 per token")
    return kind


def checked_outputs(kind: str, outputs: Any, targets: Any, batch_size: int) -> Tensor:
    """The tensor a batch of ``kind`` (``output_kind`` of the first batch) is read from:
    ``per_sample_loss`` ``[B]`` or ``logits``; shapes are checked (no host sync)."""
    if not isinstance(outputs, Mapping):
        raise _refuse(f"training_step returned {describe(outputs)}, but the first batch returned a dict ({kind})")
    if kind == "loss":
        loss = outputs.get("per_sample_loss")
        if not isinstance(loss, Tensor) or loss.ndim != 1 or loss.shape[0] != batch_size:
            raise _refuse(f"per_sample_loss is {describe(loss)} for a batch of {batch_size} samples; expected [{batch_size}]")
        return loss
    logits = outputs.get("logits")
    ndim = 2 if kind == "classification" else 3
    if not isinstance(logits, Tensor) or logits.ndim != ndim or not isinstance(targets, Tensor) \
            or tuple(targets.shape) != tuple(logits.shape[: ndim - 1]) or logits.shape[0] != batch_size:
        raise _refuse(
            f"logits are {describe(logits)} and targets {describe(targets)} for a batch of {batch_size} samples, "
            f"but the first batch was {kind}; every batch must return the same kind of outputs"
        )
    return logits


def batch_stats(kind: str, outputs: Any, targets: Any, batch_size: int) -> PresentationStats:
    """The per-presentation statistics of a batch whose outputs are of ``kind`` (``output_kind``
    of the first batch), on their device with no host sync; shapes are checked (no sync)."""
    values = checked_outputs(kind, outputs, targets, batch_size)
    if kind == "loss":
        return loss_stats(values)
    if kind == "classification":
        return classification_stats(values, targets)
    return sequence_stats(values, targets, loss_mask=outputs.get("loss_mask"), ignore_index=IGNORE_INDEX)


def first_batch_problem(stats: PresentationStats) -> str | None:
    """Why the first batch's statistics cannot be recorded (a loss that is not finite where
    it was measured), or None. One host sync: first batch only."""
    loss = stats.loss if stats.token_count is None else stats.loss[stats.token_count > 0]
    if loss.numel() and not bool(torch.isfinite(loss).all()):
        bad = int((~torch.isfinite(loss)).sum())
        return (
            f"the per-sample loss is not finite (NaN or inf) for {bad} of {loss.numel()} samples at the first "
            "training batch: nothing meaningful to record (check the inputs, the learning rate, the loss)"
        )
    return None


@dataclass(frozen=True)
class BatchColumns:
    """A training batch as the recorder buffers it (``presentation_columns``)."""

    kind: str  # OUTPUT_KINDS
    columns: dict[str, Tensor | None]  # presentations columns, [size] device tensors (None: not in this batch)
    size: int
    # Classification after the first batch: the logits [size, C] (and GraNd's ||h||^2 [size])
    # the statistics are computed from later, a group of batches at a time (ChunkBuffer).
    logits: Tensor | None = None
    feature_sqnorm: Tensor | None = None


def presentation_columns(
    outputs: Any, parts: TrainingBatch, kind: str | None, feature_sqnorm: Tensor | None
) -> BatchColumns:
    """A training batch's kind, presentations columns and size. ``kind`` is the first
    batch's (``None`` at the first batch: decided and checked here, with a host sync, and
    its statistics computed now); later batches are checked by shape only, and a
    classification batch's statistics are left to ``ChunkBuffer`` (``BatchColumns.logits``).
    ``feature_sqnorm``: GraNd's ``||h||^2`` of the final layer's input, for ``grand_last``."""
    sample_ids = parts.sample_ids
    if not isinstance(sample_ids, Tensor) or sample_ids.ndim != 1 or not _is_integer(sample_ids):
        raise _refuse(f"the batch's sample ids are {describe(sample_ids)}; expected an integer tensor [B], one per sample")
    size = int(sample_ids.shape[0])
    first = kind is None
    kind = output_kind(outputs, parts.targets, size) if first else kind
    weights = outputs["weight"] if "weight" in outputs else parts.weights  # the weight trained with
    if weights is not None and (not isinstance(weights, Tensor) or weights.numel() != size):
        raise _refuse(f"the loss weights are {describe(weights)}; expected one per sample, [{size}]")
    if feature_sqnorm is not None and tuple(feature_sqnorm.shape) != (size,):
        feature_sqnorm = None
    columns: dict[str, Tensor | None] = {"sample_id": sample_ids}
    if kind == "classification":
        columns["label"] = parts.targets
    columns["weight"] = weights
    columns["grand_last"] = None
    if kind == "classification" and not first:
        logits = checked_outputs(kind, outputs, parts.targets, size)
        return BatchColumns(kind, columns, size, logits=logits.detach(), feature_sqnorm=feature_sqnorm)
    stats = batch_stats(kind, outputs, parts.targets, size)
    if first and (problem := first_batch_problem(stats)) is not None:
        raise _refuse(problem)
    for name in ("loss", "p_true", "el2n", "correct", "pred", "margin", "token_count", "token_accuracy"):
        value = getattr(stats, name)
        if value is not None:
            columns[name] = value
    if stats.el2n is not None and feature_sqnorm is not None:
        # Last-layer GraNd approximation (DESIGN.md): EL2N * sqrt(||h||^2 + 1).
        columns["grand_last"] = stats.el2n * (feature_sqnorm.detach().float() + 1.0).sqrt()
    return BatchColumns(kind, columns, size)


def validation_sums(logits: Tensor, targets: Tensor, loss_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """A validation batch's ``[loss_sum, correct_sum, count]`` (float64) and, for
    classification, its per-label ``[correct, count]`` sums ``[2, classes]`` (float64), on
    the logits' device with no host sync (``training.reduce``, as in training).

    Classification (logits ``[B, C]``): per sample. Sequences (logits ``[B, T, V]``, targets
    ``[B, T]``, ``IGNORE_INDEX`` and ``loss_mask`` excluded): per counted token, so the
    validation loss is the token-mean cross-entropy and the accuracy the token accuracy;
    no per-label sums."""
    with torch.no_grad():
        if logits.ndim == 3:
            stats = sequence_stats(logits, targets, loss_mask=loss_mask, ignore_index=IGNORE_INDEX)
            counts = stats.token_count.double()
            counted = counts > 0  # sequences with no counted token hold NaN statistics
            loss_sum = torch.where(counted, stats.loss.double() * counts, 0.0).sum()
            correct_sum = torch.where(counted, stats.token_accuracy.double() * counts, 0.0).sum()
            return torch.stack([loss_sum, correct_sum, counts.sum()]), None
        stats = classification_stats(logits, targets)
        correct = stats.correct.double()
        count = torch.full((), float(correct.shape[0]), dtype=torch.float64, device=correct.device)
        totals = torch.stack([stats.loss.double().sum(), correct.sum(), count])
        labels = targets.long().reshape(-1)
        per_class = torch.zeros(2, logits.shape[-1], dtype=torch.float64, device=logits.device)
        per_class[0].scatter_add_(0, labels, correct)  # scatter, not bincount: no sync for its size
        per_class[1].scatter_add_(0, labels, torch.ones_like(correct))
        return totals, per_class

