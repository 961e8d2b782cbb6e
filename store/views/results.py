"""The typed answers of the dashboard views: a possibly sampled frame, a histogram, an agreement.

Each says how much of the data it holds, so a chart can say when it shows only part.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: Default cap on points sent to the browser by one scatter.
DEFAULT_MAX_POINTS = 20_000


@dataclass(frozen=True)
class Sampled:
    """A frame that may hold only part of the rows: ``shown`` of ``total``."""

    frame: pd.DataFrame
    total: int
    #: how the shown rows were chosen ("all", "random sample", "bucket means", ...)
    method: str

    @property
    def shown(self) -> int:
        return len(self.frame)

    @property
    def is_partial(self) -> bool:
        return self.shown < self.total


@dataclass(frozen=True)
class Histogram:
    """Counts per bin (``bin_start``, ``bin_end``, ``samples``, ``flipped``)."""

    bins: pd.DataFrame
    score: str
    #: samples with no value for the score (not recorded, or never learned)
    missing: int
    total: int


@dataclass(frozen=True)
class Agreement:
    """How two runs agree on one score, sample by sample."""

    score: str
    #: Spearman rank correlation over samples scored in both runs (ties: average ranks)
    spearman: float | None
    common_samples: int
    top_k: int
    #: fraction of the k hardest samples of run A that are among the k hardest of run B
    top_k_overlap: float | None
    points: Sampled
