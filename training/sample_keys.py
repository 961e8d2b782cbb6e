"""Sample ids from the keys a dataset yields: integer ids as they are, string keys mapped to
stable integer ids.

A dataset may name its samples by integers (a tensor, a list or a NumPy array of them) or by
strings (a file path, a document id; the default collate turns them into a list of
strings). A string key's ``sample_id`` is derived from the key alone, so every rank and every
run of the same data agree without talking to each other::

    sample_id = int.from_bytes(blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") >> 1

the first 63 bits of the key's BLAKE2b digest (a non-negative int64). Two different keys
with the same id (a hash collision) are refused when they meet (``SampleKeys.add``), never
merged silently. The recorder stores each run's mapping in its ``sample_keys`` table
(``store.schema.SAMPLE_KEYS``), so the scores can show the key beside the id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


class SampleKeyCollision(ValueError):
    """Two different sample keys map to the same ``sample_id``."""


def key_id(key: str) -> int:
    """The stable ``sample_id`` of a string key: the first 63 bits of its UTF-8 BLAKE2b digest."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _refuse(detail: str) -> ValueError:
    return ValueError(
        f"DynamicsRecorder: sample ids must be integers (a tensor, list or NumPy array of ints) or "
        f"strings (a list of str, as the default collate makes of them); got {detail}"
    )


def sample_id_tensor(raw: Any) -> tuple[Tensor, tuple[str, ...] | None]:
    """The batch's sample ids as an int64 tensor, and its string keys (``None`` for integer ids).

    Integer tensors keep their device; ids made from strings or Python/NumPy integers are
    on the CPU. Anything else (floats, booleans, mixed or nested values) is refused with
    one line naming what was given.
    """
    if isinstance(raw, Tensor):
        if raw.dtype.is_floating_point or raw.dtype.is_complex or raw.dtype == torch.bool:
            raise _refuse(f"a tensor of {raw.dtype}")
        return raw.reshape(-1).long(), None
    if isinstance(raw, np.ndarray):
        if raw.dtype.kind in "iu":
            return torch.as_tensor(raw.reshape(-1), dtype=torch.long), None
        if raw.dtype.kind in "UO" and all(isinstance(v, str) for v in raw.reshape(-1).tolist()):
            return text_ids(tuple(raw.reshape(-1).tolist()))
        raise _refuse(f"a NumPy array of {raw.dtype}")
    if isinstance(raw, str):
        return text_ids((raw,))
    if isinstance(raw, Sequence) and len(raw) > 0:
        if all(isinstance(v, str) for v in raw):
            return text_ids(tuple(raw))
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in raw):
            return torch.tensor([int(v) for v in raw], dtype=torch.long), None
        kinds = sorted({type(v).__name__ for v in raw})
        raise _refuse(f"a {type(raw).__name__} of {', '.join(kinds)}")
    raise _refuse(f"{type(raw).__name__}")


def text_ids(keys: tuple[str, ...]) -> tuple[Tensor, tuple[str, ...]]:
    """String keys' ids (``key_id`` of each) as an int64 CPU tensor, and the keys."""
    return torch.tensor([key_id(key) for key in keys], dtype=torch.long), keys


class SampleKeys:
    """The string keys a run has met and their ids: refuses collisions, and hands each new
    key to the writer once (``take_new``).

    It remembers every key it has met (one dict entry per distinct sample, the key strings
    shared with the batches), so its memory grows with the number of string-keyed samples;
    integer ids cost nothing here.
    """

    def __init__(self) -> None:
        self._known: dict[int, str] = {}
        self._new: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._known)

    def ids(self, raw: Any) -> Tensor:
        """``raw`` sample ids as an int64 tensor; string keys are mapped and remembered."""
        ids, keys = sample_id_tensor(raw)
        if keys is not None:
            self.add(keys, ids)
        return ids

    def add(self, keys: Sequence[str], ids: Tensor | Sequence[int]) -> None:
        """Remember ``keys`` with their ids (``sample_id_tensor``'s); raises
        ``SampleKeyCollision`` when an id already stands for another key."""
        known, new = self._known, self._new
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        for sample_id, key in zip(values, keys):
            seen = known.get(sample_id)
            if seen is None:
                known[sample_id] = new[sample_id] = key
            elif seen != key:
                raise SampleKeyCollision(
                    f"sample keys {seen!r} and {key!r} both map to sample_id {sample_id} (a 63-bit BLAKE2b "
                    "collision); rename one of them"
                )

    def take_new(self) -> dict[int, str]:
        """The keys met since the previous call (``sample_id -> key``), for the writer."""
        new, self._new = self._new, {}
        return new

    def take_new_columns(self) -> dict[str, np.ndarray] | None:
        """``take_new`` as the columns of a ``sample_keys`` segment (``store.schema.SAMPLE_KEYS``);
        ``None`` when there is no new key."""
        new = self.take_new()
        if not new:
            return None
        return {
            "sample_id": np.fromiter(new, dtype=np.int64, count=len(new)),
            "sample_key": np.asarray(list(new.values()), dtype=object),
        }
