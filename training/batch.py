"""Reading a training batch: the one place that knows the batch contract.

A batch is read by position only as far as ``(x, y, sample_id)``; anything beyond is read by
name, never by position:

* a tuple or list ``(x, y, sample_id, ...)``: its first three elements; further elements
  (a group, a domain, an index) are not read;
* a named tuple (``typing.NamedTuple``, e.g. ``TrainingItem``): its first three fields are
  ``x, y, sample_id``; a field named ``weight`` is the per-sample loss weight, one named
  ``group`` each sample's group;
* a dict: ``"sample_id"``, the inputs under one of ``INPUT_KEYS``, the target under one of
  ``TARGET_KEYS``, an optional ``"weight"`` and an optional ``"group"``.

A group (a domain, a skill, a source: strings or non-negative integers, one per sample) is
read by its name ``group`` only (``training.groups``).

A weight is a weight only when it is called ``weight``: a batch's key or field, or
``training_step``'s ``outputs["weight"]`` (which the recorder prefers). Sample ids may be
integers or strings (``training.sample_keys`` maps strings to stable int64 ids). The
recorder and GraNd both read batches through ``parse_batch``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor

from training.sample_keys import sample_id_tensor

logger = logging.getLogger(__name__)

INPUT_KEYS = ("x", "input", "inputs", "image", "images", "features")
TARGET_KEYS = ("y", "target", "targets", "label", "labels")
#: The name under which a batch carries per-sample loss weights.
WEIGHT_KEY = "weight"
#: The name under which a batch carries each sample's group (``training.groups``).
GROUP_KEY = "group"

_CONTRACT = (
    "(x, y, sample_id) (further elements are not read), a named tuple whose first fields are x, y, "
    "sample_id (a 'weight' field is the loss weight, a 'group' field the group), or a dict with "
    f"'sample_id', the target under one of {TARGET_KEYS} and an optional 'weight' and 'group'"
)


class TrainingItem(NamedTuple):
    """One training sample with its loss weight, as ``training.module.IndexedDataset`` yields it.

    The default collate keeps the named tuple, so a batch is a ``TrainingItem`` of tensors
    and ``parse_batch`` reads its ``weight`` by name. Any ``NamedTuple`` whose first three
    fields are ``x, y, sample_id`` works the same way.
    """

    x: Any
    y: Any
    sample_id: Any
    weight: Any


@dataclass(frozen=True)
class TrainingBatch:
    """The parts of a training batch; a part the batch does not carry is ``None``.

    ``sample_ids`` is an int64 tensor (string keys already mapped, ``training.sample_keys``);
    ``sample_keys`` holds those strings, ``None`` when the ids were integers.
    """

    inputs: Any
    targets: Tensor | None
    sample_ids: Tensor | None
    weights: Tensor | None
    sample_keys: tuple[str, ...] | None = None
    groups: Any = None  # as the batch gave them (training.groups.group_tensor reads them)


_warned_unread: set[int] = set()


def _warn_unread(length: int) -> None:
    if length not in _warned_unread:
        _warned_unread.add(length)
        logger.warning(
            "training batches have %d elements; only (x, y, sample_id) are read by position, the other "
            "%d are ignored (a loss weight and a group are read by name: a dict key or named-tuple field "
            "'weight' or 'group', or training_step's outputs['weight'])",
            length, length - 3,
        )


def _named_fields(batch: Any) -> tuple[str, ...] | None:
    fields = getattr(type(batch), "_fields", None)
    if isinstance(batch, tuple) and isinstance(fields, tuple) and all(isinstance(f, str) for f in fields):
        return fields
    return None


def _check_named(fields: tuple[str, ...]) -> None:
    """A named tuple's fields must not contradict the positions read: ``weight`` (or
    ``sample_id``) at another place than the one it is read from is refused."""
    if WEIGHT_KEY in fields[:3] or GROUP_KEY in fields[:3] or (
        "sample_id" in fields and fields.index("sample_id") != 2
    ):
        raise ValueError(
            f"DynamicsRecorder: a named-tuple batch is read as (x, y, sample_id, ...) with 'weight' by name; "
            f"its fields {fields} put 'sample_id', 'weight' or 'group' elsewhere. Expected {_CONTRACT}"
        )


def _ids(raw: Any, require_ids: bool) -> tuple[Tensor | None, tuple[str, ...] | None]:
    """The ids and keys of ``raw``; without ``require_ids`` (validation batches, where ids
    are optional) something that is not ids gives ``None``."""
    if raw is None:
        return None, None
    try:
        return sample_id_tensor(raw)
    except ValueError:
        if require_ids:
            raise
        return None, None


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
        ids, keys = _ids(batch.get("sample_id"), require_ids)
        return TrainingBatch(inputs, batch[target_key], ids, batch.get(WEIGHT_KEY), keys, batch.get(GROUP_KEY))
    if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) >= (3 if require_ids else 2):
        fields = _named_fields(batch)
        weights = groups = None
        if fields is not None:
            _check_named(fields)
            weights = getattr(batch, WEIGHT_KEY, None)
            groups = getattr(batch, GROUP_KEY, None)
        elif len(batch) > 3 and require_ids:
            _warn_unread(len(batch))
        ids, keys = _ids(batch[2] if len(batch) >= 3 else None, require_ids)
        return TrainingBatch(batch[0], batch[1], ids, weights, keys, groups)
    raise ValueError(
        f"DynamicsRecorder: training batches must be {_CONTRACT}; got "
        f"{type(batch).__name__}{f' of length {len(batch)}' if isinstance(batch, Sequence) else ''}"
    )
