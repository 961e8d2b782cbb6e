"""Reading a training batch: the one place that knows the batch contract.

A training batch is ``(x, y, sample_id[, weight])`` or a dict with a ``"sample_id"`` key,
the inputs under one of ``INPUT_KEYS``, the target under one of ``TARGET_KEYS`` and an
optional ``"weight"``. The recorder and GraNd both read batches through ``parse_batch``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

INPUT_KEYS = ("x", "input", "inputs", "image", "images", "features")
TARGET_KEYS = ("y", "target", "targets", "label", "labels")


@dataclass(frozen=True)
class TrainingBatch:
    """The parts of a training batch; a part the batch does not carry is ``None``."""

    inputs: Any
    targets: Tensor | None
    sample_ids: Tensor | None
    weights: Tensor | None


def parse_batch(batch: Any, *, require_ids: bool = True) -> TrainingBatch:
    """The parts of ``batch``; raises ``ValueError`` naming the contract when it has none.

    With ``require_ids`` a batch without sample ids (a 2-tuple, a dict without
    ``"sample_id"``) or without a target is refused.
    """
    if isinstance(batch, Mapping):
        target_key = next((key for key in TARGET_KEYS if key in batch), None)
        if target_key is None or (require_ids and "sample_id" not in batch):
            raise ValueError(
                "DynamicsRecorder: a dict batch needs a 'sample_id' key and a target under "
                f"one of {TARGET_KEYS}; got keys {sorted(batch)}"
            )
        inputs = next((batch[key] for key in INPUT_KEYS if key in batch), None)
        return TrainingBatch(inputs, batch[target_key], batch.get("sample_id"), batch.get("weight"))
    if isinstance(batch, Sequence) and len(batch) >= (3 if require_ids else 2):
        sample_ids = batch[2] if len(batch) >= 3 else None
        weights = batch[3] if len(batch) >= 4 and isinstance(batch[3], Tensor) else None
        return TrainingBatch(batch[0], batch[1], sample_ids, weights)
    raise ValueError(
        "DynamicsRecorder: training batches must be (x, y, sample_id[, weight]) or a dict "
        f"with 'sample_id'; got {type(batch).__name__}"
    )
