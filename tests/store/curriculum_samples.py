"""The hand-made per-sample summary the curriculum tests build from (not a test module)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from store.curriculum import Curriculum


def make_summary() -> pd.DataFrame:
    """10 samples; loss = sample_id / 10 (sample 0 easiest), AUM falls with the id."""
    ids = np.arange(10)
    return pd.DataFrame({
        "sample_id": ids,
        "label": [0, 0, 0, 0, 0, 0, 1, 1, 1, 2],
        "original_label": [0, 0, 0, 0, 0, 0, 1, 1, 2, 0],
        "label_noisy": [False] * 8 + [True, True],
        "loss": ids / 10.0,
        "el2n": ids / 10.0,
        "aum": 3.0 - ids * 0.5,  # 3.0 ... -1.5; sample 9 lowest (hardest)
        "forgetting_events": [0, 0, 1, 1, 2, 2, 0, 0, 0, 0],
        "never_learned": [False] * 8 + [True, True],
        "confidence": [0.9, 0.9, 0.8, 0.8, 0.6, 0.5, 0.4, 0.3, 0.1, 0.05],
        "variability": [0.05, 0.05, 0.1, 0.1, 0.3, 0.3, 0.25, 0.1, 0.05, 0.05],
    })


def kept(curriculum: Curriculum) -> list[int]:
    table = curriculum.table
    return table.loc[table["weight"] > 0, "sample_id"].tolist()
