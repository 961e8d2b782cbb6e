"""``ChunkBuffer``: up to ``capacity`` presentations of one rank on the device, copied to the
host in one copy when full (DESIGN.md, "Reduce on the device, stream in chunks").

A classification batch's statistics are computed a group of batches at a time: its logits
are copied into a preallocated *stage* of at most ``stage_bytes`` beside the chunk, and the
stage is reduced (``training.reduce.classification_stats``) into the chunk's columns when
it is full, when the chunk is full, or when the chunk is taken. The values are those of a
per-batch reduction (the reduction works row by row); what changes is the cost on a CPU,
where a dozen small kernels per step cost several times what one reduction over a few
hundred steps' rows does (benchmarks/results/recorder_scale.md). Memory stays bounded:
the stage holds at most ``stage_bytes`` of logits (default 8 MiB) and never more rows than
the chunk. A batch larger than the stage is reduced at once. Sequence outputs (``[B, T,
V]``, whose T may change from batch to batch) and per-sample losses come in as finished
statistics.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from store.schema import PRESENTATIONS
from training.recording_tensors import to_host
from training.reduce import classification_stats

__all__ = ["COLUMN_DTYPES", "STAGE_BYTES", "ChunkBuffer"]

_TORCH_DTYPES = {
    np.dtype(np.int64): torch.int64, np.dtype(np.int32): torch.int32, np.dtype(np.int16): torch.int16,
    np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64, np.dtype(np.bool_): torch.bool,
}

#: The dtype each presentations column travels in: that of ``store.schema.PRESENTATIONS``.
COLUMN_DTYPES: dict[str, torch.dtype] = {
    field.name: _TORCH_DTYPES[np.dtype(field.type.to_pandas_dtype())] for field in PRESENTATIONS
}

#: The most bytes of logits a chunk's stage holds (a few hundred steps of a 10-class model,
#: eight of a 1,000-class model at batch 256).
STAGE_BYTES = 8 << 20

#: What a batch without a column gets in a chunk where other batches have it.
_FILL = {"weight": 1.0, "grand_last": math.nan}

#: The statistics the stage computes from logits and labels.
_STAGED = ("loss", "p_true", "el2n", "correct", "pred", "margin")


class ChunkBuffer:
    """Up to ``capacity`` presentations' statistics of one rank, in one preallocated
    ``[capacity]`` tensor per column on the column's device, and a stage of at most
    ``stage_bytes`` of classification logits not yet reduced (module docstring).

    Each batch's values are copied into the next rows (a small copy kernel per column, no
    host sync), so the recorder neither keeps the step's tensors alive nor allocates per
    step: holding many small tensors between large temporaries fragments the host
    allocator, and the process then grows by about the temporaries' size every step.
    """

    def __init__(self, capacity: int, stage_bytes: int = STAGE_BYTES) -> None:
        self.capacity = capacity
        self.stage_bytes = stage_bytes
        self._columns: dict[str, Tensor] = {}  # allocated at the first value of each column
        self._stage: Tensor | None = None  # [stage rows, C] logits, allocated at the first staged batch
        self._stage_sqnorm: Tensor | None = None  # [stage rows] GraNd feature norms (NaN: none)
        self.clear()

    def clear(self) -> None:
        self._given: set[str] = set()  # columns with a value in some batch of this chunk
        self._steps: list[tuple[int, int]] = []  # (global_step, rows) of each batch (part)
        self.rows = 0
        self._staged_from = 0  # chunk rows [_staged_from, rows) have their logits in the stage
        self._staged_sqnorm = False  # some staged batch has GraNd feature norms

    @property
    def staged_rows(self) -> int:
        """Rows whose logits wait in the stage (at most ``stage_bytes`` of them)."""
        return self.rows - self._staged_from

    def add(
        self,
        step: int,
        columns: dict[str, Tensor | None],
        size: int,
        logits: Tensor | None = None,
        feature_sqnorm: Tensor | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """Copy a batch of ``size`` presentations at ``step`` in (``columns``: name -> ``[size]``
        tensor, or None where the batch has no such value); returns the chunks this filled,
        as host arrays (``take``), usually none. Counting needs no host sync: ``size``
        comes from the shapes.

        With ``logits [size, C]`` (classification) the statistics of ``_STAGED`` (and
        ``grand_last`` from ``feature_sqnorm [size]``, GraNd's ``||h||^2``) are computed
        later, from the stage and ``columns["label"]``; ``columns`` then holds no statistic.
        """
        full = []
        start = 0
        while start < size:
            count = min(size - start, self.capacity - self.rows)
            part = slice(start, start + count)
            if logits is not None and not self._can_stage(logits, count):
                # Larger than the stage: reduce this part now, as its own group.
                self._reduce_stage()
                stats = classification_stats(logits[part], columns["label"][part])
                extra = {name: getattr(stats, name) for name in _STAGED}
                extra["grand_last"] = _grand_last(stats.el2n, None if feature_sqnorm is None else feature_sqnorm[part])
                self._add_part(step, {**columns, **extra}, part, size)
                self._staged_from = self.rows
            elif logits is not None:
                self._add_part(step, columns, part, size)
                whole = count == size
                self._stage_part(
                    logits.detach() if whole else logits.detach()[part],
                    None if feature_sqnorm is None else feature_sqnorm.detach()[part],
                    count,
                )
            else:
                self._reduce_stage()
                self._add_part(step, columns, part, size)
                self._staged_from = self.rows
            start += count
            if self.rows >= self.capacity:
                full.append(self.take())
        return full

    def take(self) -> dict[str, np.ndarray] | None:
        """The chunk's columns as host arrays (``store.recording.messages.RecordPresentations``
        columns; ``step`` included), copied once (``to_host``), after reducing the stage;
        None when empty. The buffer is empty afterwards (its memory is kept for the next chunk)."""
        if not self.rows:
            return None
        self._reduce_stage()
        with torch.no_grad():
            host = to_host({name: self._columns[name][: self.rows] for name in sorted(self._given)})
        steps = self._steps
        host["step"] = np.repeat(
            np.asarray([step for step, _ in steps], dtype=np.int64), [count for _, count in steps]
        )
        self.clear()
        return host

    # -- internals ---------------------------------------------------------------------

    def _add_part(self, step: int, columns: dict[str, Tensor | None], part: slice, size: int) -> None:
        count = part.stop - part.start
        rows = slice(self.rows, self.rows + count)
        whole = count == size
        for name, value in columns.items():
            if value is not None:
                value = value.detach()
                value = value.reshape(-1) if whole else value.reshape(-1)[part]
            self._copy(name, rows, value)
        self._steps.append((step, count))
        self.rows += count

    def _can_stage(self, logits: Tensor, count: int) -> bool:
        """Whether ``count`` rows of ``logits`` fit the stage (allocating or replacing it
        when their shape, dtype or device changed, after reducing what it holds)."""
        stage = self._stage
        row_bytes = logits.shape[1] * logits.element_size()
        rows = min(self.capacity, self.stage_bytes // row_bytes)
        if count > rows:
            return False
        if stage is None or stage.shape != (rows, logits.shape[1]) or stage.dtype != logits.dtype \
                or stage.device != logits.device:
            self._reduce_stage()
            self._stage = torch.empty((rows, logits.shape[1]), dtype=logits.dtype, device=logits.device)
            self._stage_sqnorm = torch.empty(rows, dtype=torch.float32, device=logits.device)
        elif self.staged_rows + count > rows:
            self._reduce_stage()
        return True

    def _stage_part(self, logits: Tensor, feature_sqnorm: Tensor | None, count: int) -> None:
        # _add_part has already counted these rows: they are the chunk's last ``count``.
        used = self.staged_rows - count
        self._stage[used:used + count].copy_(logits)
        if feature_sqnorm is not None:
            if not self._staged_sqnorm and used:
                self._stage_sqnorm[:used] = math.nan  # the staged batches before had none
            self._stage_sqnorm[used:used + count].copy_(feature_sqnorm)
            self._staged_sqnorm = True
        elif self._staged_sqnorm:
            self._stage_sqnorm[used:used + count] = math.nan

    def _reduce_stage(self) -> None:
        """The statistics of the staged rows, into the chunk's columns at their rows."""
        staged = self.staged_rows
        if not staged:
            return
        rows = slice(self._staged_from, self.rows)
        with torch.no_grad():
            # The stage is scratch memory now: its logits are not read again.
            stats = classification_stats(self._stage[:staged], self._columns["label"][rows], overwrite=True)
            for name in _STAGED:
                self._copy(name, rows, getattr(stats, name))
            if self._staged_sqnorm:
                self._copy("grand_last", rows, _grand_last(stats.el2n, self._stage_sqnorm[:staged]))
            else:
                self._copy("grand_last", rows, None)
        self._staged_from = self.rows
        self._staged_sqnorm = False

    def _copy(self, name: str, rows: slice, value: Tensor | None) -> None:
        column = self._columns.get(name)
        if value is None:
            if name in self._given:  # another batch of this chunk has it
                column[rows] = _FILL[name]
            return
        if column is None:
            column = self._columns[name] = torch.empty(self.capacity, dtype=COLUMN_DTYPES[name], device=value.device)
        if name not in self._given:
            if rows.start and name not in _FILL:
                raise ValueError(f"DynamicsRecorder: {name!r} is missing in some batches of a chunk")
            column[:rows.start] = _FILL.get(name, 0)  # the earlier batches of this chunk had none
            self._given.add(name)
        column[rows].copy_(value)


def _grand_last(el2n: Tensor, feature_sqnorm: Tensor | None) -> Tensor | None:
    """The last-layer GraNd approximation (DESIGN.md): EL2N * sqrt(||h||^2 + 1); NaN where
    the feature norm is NaN (a batch without it)."""
    if feature_sqnorm is None:
        return None
    return el2n * (feature_sqnorm.detach().float() + 1.0).sqrt()
