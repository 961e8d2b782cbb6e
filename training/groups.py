"""Groups (a domain, a skill, a data source) that a training batch gives its samples, as the
``group_id`` column of the presentations and the run's ``groups`` table
(``store.schema.GROUPS``: ``group_id -> group_name``).

A batch carries its groups by name only (``training.batch``): a dict key or named-tuple
field ``group``, holding

* strings (a list or tuple of ``str``, as the default collate makes of them): a group's id
  is derived from its name alone, so every rank, every run and every rerun of the same data
  agree without talking to each other::

      group_id = int.from_bytes(blake2b(name.encode("utf-8"), digest_size=4).digest(), "big") >> 1

  (the first 31 bits of the name's BLAKE2b digest: a non-negative int32); two names with the
  same id are refused when they meet (``GroupNames.add``), never merged;
* or non-negative integers (a tensor, list or NumPy array of them): the integer is the id,
  and its name is the integer written out (``"3"``). Integer groups stay on their device;
  their names are found when a chunk reaches the host (``GroupNames.add_ids``).

A run's groups are all strings or all integers (mixing them is refused: ``"3"`` and ``3``
would be two groups with one name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["GroupNames", "group_id", "group_tensor"]

_INT32_MAX = 2**31 - 1


def group_id(name: str) -> int:
    """The stable id of a group name: the first 31 bits of its UTF-8 BLAKE2b digest."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> 1


def _refuse(detail: str) -> ValueError:
    return ValueError(
        "DynamicsRecorder: a batch's 'group' must hold one group per sample: strings (a list of str, as the "
        f"default collate makes of them) or non-negative integers below 2**31 (a tensor, list or array); got {detail}"
    )


def group_tensor(raw: Any, size: int) -> tuple[Tensor, tuple[str, ...] | None]:
    """The batch's groups as an int32 tensor of ids ``[size]``, and their names when they
    were strings (``None`` for integer groups: the id is the group). Integer tensors keep
    their device and are not read on the host here (no sync)."""
    if isinstance(raw, Tensor):
        if raw.dtype.is_floating_point or raw.dtype.is_complex or raw.dtype == torch.bool:
            raise _refuse(f"a tensor of {raw.dtype}")
        values = raw.reshape(-1)
        if values.numel() != size:
            raise _refuse(f"{values.numel()} groups for a batch of {size} samples")
        return values.to(torch.int32), None
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1).tolist()
    if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
        values = list(raw)
        if len(values) != size:
            raise _refuse(f"{len(values)} groups for a batch of {size} samples")
        if all(isinstance(v, str) for v in values):
            names = tuple(values)
            return torch.tensor([group_id(name) for name in names], dtype=torch.int32), names
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            if any(not 0 <= int(v) <= _INT32_MAX for v in values):
                raise _refuse(f"integers in [{min(values)}, {max(values)}]")
            return torch.tensor([int(v) for v in values], dtype=torch.int32), None
        kinds = sorted({type(v).__name__ for v in values})
        raise _refuse(f"a {type(raw).__name__} of {', '.join(kinds)}")
    raise _refuse(type(raw).__name__)


class GroupNames:
    """The groups a rank has met, and those not yet written to the run's ``groups`` table."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._new: list[int] = []
        self._kind: str | None = None  # "names" or "integers": one kind per run
        self._with_groups = False  # the run's batches give groups (decided at the first batch)

    def batch_ids(self, raw: Any, size: int, *, first: bool) -> Tensor | None:
        """A batch's group ids (``group_tensor``), its names remembered; None when the batch
        gives no groups. A run's batches give groups all the way or not at all: the first
        batch decides, and a batch that differs is refused."""
        if first:
            self._with_groups = raw is not None
        elif (raw is not None) != self._with_groups:
            gave, this = ("gave", "does not") if self._with_groups else ("did not give", "does")
            raise ValueError(f"DynamicsRecorder: the first training batch {gave} a 'group' per sample and this "
                             f"one {this}; give every batch of a run its groups, or none")
        if raw is None:
            return None
        ids, names = group_tensor(raw, size)
        self.add(ids, names)
        return ids

    def add(self, ids: Tensor, names: tuple[str, ...] | None) -> None:
        """A batch's groups by name (strings): a new name is remembered, and one whose id
        another name already has is refused. Integer groups wait for ``add_ids``."""
        self._check_kind("integers" if names is None else "names")
        if names is None:
            return
        for name in dict.fromkeys(names):
            gid = group_id(name)
            known = self._names.get(gid)
            if known is None:
                self._names[gid] = name
                self._new.append(gid)
            elif known != name:
                raise ValueError(
                    f"DynamicsRecorder: the groups {known!r} and {name!r} have the same group id {gid} "
                    "(a 31-bit hash collision); rename one of them"
                )

    def add_ids(self, ids: np.ndarray) -> None:
        """A chunk's ``group_id`` column on the host: integer groups met for the first time
        get their names (the integer written out)."""
        if self._kind != "integers":
            return
        values = ids[ids >= 0] if ids.dtype.kind == "i" else ids
        for gid in np.unique(values).tolist():
            if gid not in self._names:
                if gid < 0:
                    raise _refuse(f"the integer {gid}")
                self._names[gid] = str(gid)
                self._new.append(gid)

    def take_new_columns(self) -> dict[str, np.ndarray] | None:
        """The groups met since the last call, as the columns of a ``groups`` segment, or None."""
        if not self._new:
            return None
        new, self._new = self._new, []
        return {
            "group_id": np.asarray(new, dtype=np.int32),
            "group_name": np.asarray([self._names[gid] for gid in new], dtype=object),
        }

    def _check_kind(self, kind: str) -> None:
        if self._kind is None:
            self._kind = kind
        elif self._kind != kind:
            raise ValueError(
                f"DynamicsRecorder: this run's batches gave groups as {self._kind} and now as {kind}; "
                "give them one way (strings, or non-negative integers) for the whole run"
            )
