"""The padding draws of a distributed curriculum epoch, left out of the recorded rows.

``DistributedCurriculumSampler`` (like ``torch.utils.data.DistributedSampler``) pads an
epoch to a multiple of the number of ranks by repeating its first draws; those repeats are
trained on, but they are not presentations the curriculum asked for. Without knowing which
rows they are, readers drop every sample two ranks presented in one epoch but one
(``store.run_tables.dedupe_clause``), which also drops the repeats a curriculum does ask for
(``--keep-steps`` and pacing cycle a pool smaller than the epoch, and its draws land on
different ranks). Given the sampler, the recorder knows: the padding is each rank's last
draws of the epoch, so it writes this rank's first ``unpadded_draws()`` rows of the epoch and
no more, and marks the run (``store.run_tables.PADDING_DROPPED``) so that readers keep every
row of its presentations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class PaddingFilter:
    """Counts an epoch's rows on this rank and trims those past the sampler's unpadded draws."""

    def __init__(self) -> None:
        self.source: Callable[[], int | None] | None = None
        self.mark: Callable[[], None] | None = None  # records the run's flag, once per run
        self.marked = False
        self.limit: int | None = None
        self.seen = 0

    def __getstate__(self) -> dict[str, Any]:  # ddp_spawn pickles callbacks: the sampler stays behind
        return {**self.__dict__, "source": None, "mark": None}

    def watch(self, sampler: Any, mark: Callable[[], None]) -> None:
        """Drop ``sampler``'s padding (it has ``unpadded_draws()``: this rank's draws of the
        epoch in progress that are not padding, from where its pass started); ``mark`` is
        called before the first rows are written, once (every epoch watches again)."""
        self.source, self.mark = sampler.unpadded_draws, (None if self.marked else mark)

    def begin_epoch(self) -> None:
        self.limit, self.seen = None, 0

    def trim(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The next rows of this rank's epoch without its padding (all of them without a sampler)."""
        if self.source is None:
            return columns
        if self.mark is not None:
            self.mark()
            self.mark, self.marked = None, True
        if self.limit is None:  # asked at the first chunk: by then the epoch's pass has begun
            self.limit = self.source()
        rows = len(columns["sample_id"])
        keep = rows if self.limit is None else max(0, min(rows, self.limit - self.seen))
        self.seen += rows
        return columns if keep == rows else {name: values[:keep] for name, values in columns.items()}
